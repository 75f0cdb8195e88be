"""What the one Snakemake rule template (``rules/fanout.smk``) asks of a fan-out: its config, file names, locks.

The functions live here rather than in the ``.smk`` file (``snakemake --lint``), and the rules made in the
template's loop use bound methods, never lambdas over the loop variable. The plan is computed only when a rule
of this fan-out is in the DAG (input functions are lazy), so ``snakemake render_deepcad`` never lists SSv2.
"""
from __future__ import annotations

import contextlib
import functools
from collections.abc import Iterable
from typing import Any

from lib.config import from_dict
from lib.locks import exclusive
from lib.shards import ARCHIVE_DIR, QUARANTINE, SHARD_DIR, SUMMARY, FanOut, PlanIdentity, ShardPlan


class FanOutRules:
    """The rule names, file patterns and input functions of one :class:`lib.shards.FanOut` under ``config``
    (Snakemake's parsed params file), checked by ``lib.config`` when the workflow is parsed."""

    def __init__(self, fanout: FanOut, config: dict[str, Any], params_file: str):
        self.fanout = fanout
        (src_section, src_cls), (section, cls) = fanout.source, fanout.config
        self.root = from_dict(src_cls, config.get(src_section) or {}, f"{params_file}: {src_section}").root
        self.cfg = from_dict(cls, config.get(section) or {}, f"{params_file}: {section}")
        self.target = fanout.name
        self.shard_rule, self.plan_rule, self.merge_rule = (f"{fanout.rule_prefix}_{k}"
                                                            for k in ("shard", "plan", "merge"))
        out, logs = self.cfg.out, f"logs/{fanout.name}"
        self.outputs = [f"{out}/{fanout.table}", f"{out}/{QUARANTINE}", f"{out}/{SUMMARY}"]
        # lib.shards.shard_name and plan_record_name, with wildcards
        self.shard_output = [f"{out}/{SHARD_DIR}/shard-{{index}}-{{digest}}.parquet"]
        if fanout.archived(self.cfg):  # lib.shards.archive_name: the shard's output files, packed
            self.shard_output.append(f"{out}/{ARCHIVE_DIR}/shard-{{index}}-{{digest}}.zip")
        self.shard_log = f"{logs}/shard-{{index}}-{{digest}}.log"
        # Snakemake's `benchmark:` record of each shard job: wall s, max RSS, CPU time (what a job costs at scale)
        self.shard_benchmark = f"{logs}/shard-{{index}}-{{digest}}.benchmark.tsv"
        self.plan_output, self.plan_log = f"{out}/{SHARD_DIR}/plan-{{digest}}.json", f"{logs}/plan-{{digest}}.log"
        self.merge_log = f"{logs}/merge.log"

    @functools.cached_property
    def planned(self) -> tuple[ShardPlan, PlanIdentity]:
        """The plan and its digests, computed once per Snakemake process and only if asked for."""
        return self.fanout.identity(self.root, self.cfg)

    @property
    def identity(self) -> PlanIdentity:
        """The plan's digests (see :attr:`planned`)."""
        return self.planned[1]

    def write_slices(self, jobs: Iterable[Any]) -> int:
        """Hand each shard job among ``jobs`` its items (``lib.shards.FanOut.write_slices``), so the plan runs
        once per workflow run, in the main process, not once per job; return how many slices were written."""
        indices = sorted({int(job.wildcards.index) for job in jobs if job.rule.name == self.shard_rule})
        return self.fanout.write_slices(self.cfg, *self.planned, indices) if indices else 0

    def merge_inputs(self, wildcards: Any = None) -> list[str]:
        """Input function of the merge rule: the plan's shard files (and their output archives) and its plan
        record, named by their digests."""
        shards, archives = f"{self.cfg.out}/{SHARD_DIR}", f"{self.cfg.out}/{ARCHIVE_DIR}"
        packed = [f"{archives}/{self.identity.archive_file(i)}" for i in range(self.cfg.shards)] \
            if self.fanout.archived(self.cfg) else []
        return [*(f"{shards}/{self.identity.shard_file(i)}" for i in range(self.cfg.shards)), *packed,
                f"{shards}/{self.identity.record_file()}"]

    def target_inputs(self, wildcards: Any = None) -> list[str]:
        """Input function of the target rule: the merged outputs and, by name, every file the merge reads.

        Snakemake does not make a missing input of a job whose outputs exist (it could be a deleted ``temp``), so
        the target asks for the plan's files itself; a new one is then "updated by another job" and reruns the merge.
        """
        return [*self.outputs, *self.merge_inputs()]


class RunLocks:
    """The fan-out roots a Snakemake run writes, locked (``lib.locks``) in the main Snakemake process from its
    ``onstart`` hook until it ends. Jobs never lock: cluster jobs re-parse the workflow, and Snakemake runs
    them with ``--no-hooks``."""

    def __init__(self) -> None:
        self._held = contextlib.ExitStack()

    def hold(self, fanouts: Iterable[FanOutRules], jobs: Iterable[Any]) -> None:
        """Lock the root of every fan-out with a job among ``jobs``; raise ``LockedError`` naming the holder."""
        rules = {job.rule.name for job in jobs}
        for fan in fanouts:
            if rules & {fan.shard_rule, fan.plan_rule, fan.merge_rule}:
                self._held.enter_context(exclusive(fan.cfg.out, f"{fan.target} fan-out root"))

    def release(self) -> None:
        """Release every lock held (the OS does it anyway when the process ends)."""
        self._held.close()
