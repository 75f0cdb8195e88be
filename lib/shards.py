"""The fan-out skeleton every sharded stage shares: plan, shard identity, the shard loop, the verified merge.

A stage describes itself with a :class:`FanOut` (its plan, per-item worker, columns and final files); this
module does the rest. Each shard file is named by its digest, ``shards/shard-00003-<digest>.parquet``, and
carries it in its parquet metadata: the digest of the shard's slice of the plan, of the settings that change
its rows and of the code that computes them (the import closure of the stage module). A missing name is
exactly a shard to compute, and the merge refuses any shard that is not the current plan's, so correctness
never depends on Snakemake's ``.snakemake/`` metadata. The merge's own inputs are named by the whole plan's
digest (``shards/plan-<digest>.json``), so a change of plan-level quarantine alone reruns it.
"""
from __future__ import annotations

import dataclasses
import hashlib
import json
import logging
import shutil
import zlib
from collections import Counter
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import Any, Generic, TypeVar

import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq
from tqdm import tqdm

from lib.archive import pack
from lib.config import to_dict
from lib.identity import code_digest
from lib.io import DataError, atomic_path, atomic_write_json, atomic_write_parquet, remove_stale_temps, remove_unlisted
from lib.quarantine import QuarantineEntry, QuarantineError

Item = TypeVar("Item")
log = logging.getLogger(__name__)

SHARD_DIR = "shards"
SLICE_DIR = ".slices"  # under SHARD_DIR: <shard digest>.json, each shard's items, written once per workflow run
ARCHIVE_DIR = "archives"  # <out>/archives/shard-00003-<digest>.zip: a shard's output files (lib.archive)
STAGING_DIR = ".staging"  # <out>/.staging/<shard digest>/: where a shard's worker writes them before packing
ARCHIVE_COLUMN = "archive"  # a row's archive relative to <out> (None: the row's files are not archived)
QUARANTINE = "quarantine.json"
SUMMARY = "summary.json"
DIGEST_KEY = b"shard_digest"  # parquet schema metadata of a shard file
NOT_SETTINGS = ("cores", "shards")  # config fields that change no row (shards is in each item's ``shard``)


@dataclass
class ShardPlan(Generic[Item]):
    """What a fan-out stage will process (dataclass items with a ``shard`` field) and what it set aside
    before processing anything."""

    items: list[Item]
    quarantine: list[QuarantineEntry] = field(default_factory=list)

    def shard_items(self, index: int) -> list[Item]:
        """Return the items of shard ``index``."""
        return [it for it in self.items if it.shard == index]

    def fingerprints(self, shards: int) -> list[str]:
        """Return one digest per shard of everything in the data that shard's output depends on."""
        return self.digests(shards)[0]

    def digest(self) -> str:
        """Return a digest of the whole plan, quarantine included (what the merge depends on)."""
        return self.digests(1 + max((it.shard for it in self.items), default=0))[1]

    def digests(self, shards: int) -> tuple[list[str], str]:
        """Return :meth:`fingerprints` and :meth:`digest` in one pass over the items (a real plan has 220k;
        items are flat dataclasses, so a shallow field dict encodes as ``asdict`` would)."""
        per_shard = [hashlib.sha256() for _ in range(shards)]
        whole = hashlib.sha256()
        for it in self.items:
            encoded = _encode(_record(it))
            per_shard[it.shard].update(encoded)
            whole.update(encoded)
        for q in self.quarantine:
            whole.update(_encode(q.to_dict()))
        return [h.hexdigest()[:16] for h in per_shard], whole.hexdigest()[:16]


def shard_of(key: str, shards: int) -> int:
    """Return the shard of ``key``: a stable hash, so adding items moves no existing one."""
    return zlib.crc32(key.encode()) % shards


def shard_name(index: int, shard_digest: str) -> str:
    """Return the file name of shard ``index`` with digest ``shard_digest`` (index zero-padded so listings sort)."""
    return f"shard-{index:05d}-{shard_digest}.parquet"


def archive_name(index: int, shard_digest: str) -> str:
    """Return the file name of the output archive of shard ``index`` (the shard file's name, ``.zip``)."""
    return f"shard-{index:05d}-{shard_digest}.zip"


def plan_record_name(plan_digest: str) -> str:
    """Return the file name of the plan record of a plan with digest ``plan_digest``."""
    return f"plan-{plan_digest}.json"


def digest(records: Iterable[dict]) -> str:
    """Return a short sha256 of JSON-serialisable records, in order."""
    h = hashlib.sha256()
    for r in records:
        h.update(_encode(r))
    return h.hexdigest()[:16]


def _encode(record: dict) -> bytes:
    return json.dumps(record, sort_keys=True, default=str).encode()


def _record(item: Any) -> dict[str, Any]:
    """A plan item (a flat dataclass) as the dict its digest and its slice file hold."""
    return {f.name: getattr(item, f.name) for f in fields(item)}


def shard_digest(data: str, settings: dict[str, Any], code: str) -> str:
    """Return a shard's identity: the digest of its slice of the plan (``data``), the settings that change its
    rows and the code digest of the stage."""
    return digest([{"data": data, "settings": settings, "code": code}])


@dataclass(frozen=True)
class PlanIdentity:
    """The digests of one plan under one config and code: one per shard (its file name) and the whole plan's."""

    shards: tuple[str, ...]
    digest: str
    settings: dict[str, Any]
    code: str

    def shard_file(self, index: int) -> str:
        """Return the file name shard ``index`` must have."""
        return shard_name(index, self.shards[index])

    def archive_file(self, index: int) -> str:
        """Return the file name the output archive of shard ``index`` must have."""
        return archive_name(index, self.shards[index])

    def record_file(self) -> str:
        """Return the file name of the plan record."""
        return plan_record_name(self.digest)


def write_shard(path: str | Path, frame: pd.DataFrame, shard_digest: str) -> Path:
    """Write a shard's rows to parquet atomically with ``shard_digest`` in the schema metadata; return ``path``."""
    table = pa.Table.from_pandas(frame, preserve_index=False)
    table = table.replace_schema_metadata({**(table.schema.metadata or {}), DIGEST_KEY: shard_digest.encode()})
    with atomic_path(path) as tmp:
        pq.write_table(table, tmp)
    return Path(path)


def read_shard(path: str | Path, expected: str, *, rerun_hint: str) -> pd.DataFrame:
    """Return the rows of the shard file ``path``; raise naming the file and ``rerun_hint`` when it is missing
    or its embedded digest is not ``expected`` (a renamed or copied file, not the plan's shard)."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"{path}: shard missing; run `{rerun_hint}` to finish")
    table = pq.read_table(path)
    embedded = (table.schema.metadata or {}).get(DIGEST_KEY, b"").decode() or "none"
    if embedded != expected:
        raise DataError(f"{path}: shard digest {embedded} is not the plan's {expected} (a renamed or copied file?); "
                        f"delete it and run `{rerun_hint}`")
    return table.to_pandas()


def natural_key(item_id: str) -> tuple:
    """Sort key putting numeric ids in numeric order ("2" before "10"), path parts compared piecewise."""
    return tuple((0, int(p), "") if p.isdigit() else (1, 0, p) for p in item_id.split("/"))


def split_results(rows: pd.DataFrame, plan: ShardPlan,
                  int_columns: Iterable[str] = ()) -> tuple[pd.DataFrame, list[dict]]:
    """Split joined shard rows (with ``id, split, source_path, reason, detail``) into the good rows, sorted
    by id without ``reason``/``detail``, and every quarantine entry (the plan's and the rows'), sorted by
    reason then id."""
    bad = rows[rows["reason"].notna()]
    good = rows[rows["reason"].isna()].drop(columns=["reason", "detail"])
    good = good.assign(_k=good["id"].map(natural_key)).sort_values("_k").drop(columns="_k").reset_index(drop=True)
    for col in int_columns:
        good[col] = good[col].astype("int64")
    quarantine = [q.to_dict() for q in plan.quarantine]
    quarantine += [QuarantineEntry(r.id, r.source_path, r.reason, r.detail or "", r.split).to_dict()
                   for r in bad.itertuples()]
    quarantine.sort(key=lambda q: (q["reason"], natural_key(q["id"])))
    return good, quarantine


def result_counts(good: pd.DataFrame, quarantine: list[dict]) -> dict[str, Any]:
    """Return the summary counts every fan-out stage reports: quarantined, good rows per split, per reason."""
    return {
        "quarantined": len(quarantine),
        "by_split": {s: int(n) for s, n in good["split"].value_counts().sort_index().items()},
        "quarantine_by_reason": dict(sorted(Counter(q["reason"] for q in quarantine).items())),
    }


@dataclass(frozen=True)
class FanOut:
    """One sharded stage, described by its dataset-specific parts; the methods are the shared skeleton.

    ``worker(cfg)`` returns a callable ``(root, item) -> row`` (raising :class:`QuarantineError` for a bad item),
    made once per non-empty shard; when it has a ``close()`` (e.g. a GL renderer), it is called at the end.
    ``quarantine_row(item)`` gives the fields a quarantined item keeps. ``finish(root, cfg, good, quarantine)``
    removes outputs no good row points at and returns the summary; the skeleton then writes ``table``,
    ``quarantine.json`` and ``summary.json`` atomically.

    ``archive(cfg)`` true: the worker is made with ``cfg.out`` set to the shard's staging folder, and every file
    it writes there is packed into ``<out>/archives/<shard>.zip`` (``lib.archive``) before the shard file is
    written; each good row's ``archive`` column names that archive, and its paths are relative to the archive
    as they were to ``out``. DVC then tracks one file per shard instead of one per output file.
    """

    name: str  # the stage, and the Snakemake target rule users type
    rule_prefix: str  # Snakemake rules <prefix>_shard, <prefix>_plan, <prefix>_merge
    entry: str  # the module the jobs run; its import closure is the shards' code identity
    source: tuple[str, type]  # (params section, dataclass) of the dataset root
    config: tuple[str, type]  # (params section, dataclass) of the stage; has out, shards, cores
    plan: Callable[[Path, int], ShardPlan]
    worker: Callable[[Any], Callable[[Path, Any], dict]]
    quarantine_row: Callable[[Any], dict]
    columns: Callable[[Any], list[str]]
    table: str  # the merged rows' file name in <out>
    finish: Callable[[Path, Any, pd.DataFrame, list[dict]], dict]
    int_columns: tuple[str, ...] = ()
    item: type | None = None  # the plan's item dataclass: a shard job can then read its slice instead of planning
    unit: str = "item"  # progress bar unit
    mem_mb: int = 1000  # Snakemake resources of one shard job
    archive: Callable[[Any], bool] | None = None  # whether, under cfg, each shard packs its files (see above)

    def archived(self, cfg: Any) -> bool:
        """Whether shards under ``cfg`` pack their output files into per-shard archives."""
        return self.archive is not None and bool(self.archive(cfg))

    def all_columns(self, cfg: Any) -> list[str]:
        """The shard files' columns: the stage's, and ``archive`` for a fan-out that can archive."""
        return self.columns(cfg) + ([ARCHIVE_COLUMN] if self.archive is not None else [])

    @property
    def rerun_hint(self) -> str:
        """Return the command that brings the shards up to date."""
        return f"snakemake --cores N {self.name}"

    def settings(self, root: str | Path, cfg: Any) -> dict[str, Any]:
        """Return what, besides the items and the code, changes a shard's rows: the root and the stage config
        without ``cores``/``shards``."""
        return {"root": Path(root).as_posix(),
                **{k: v for k, v in to_dict(cfg).items() if k not in NOT_SETTINGS}}

    def identity(self, root: str | Path, cfg: Any, plan: ShardPlan | None = None) -> tuple[ShardPlan, PlanIdentity]:
        """Return the plan (computed unless given) and its :class:`PlanIdentity` under ``cfg`` and today's code."""
        plan = self.plan(Path(root), cfg.shards) if plan is None else plan
        settings = self.settings(root, cfg)
        code = code_digest(self.entry)
        fingerprints, plan_digest = plan.digests(cfg.shards)
        shards = tuple(shard_digest(fp, settings, code) for fp in fingerprints)
        return plan, PlanIdentity(shards, digest([{"plan": plan_digest, "shards": shards}]), settings, code)

    def run_shard(self, root: str | Path, cfg: Any, index: int, *, progress: bool = True,
                  expected: str | None = None, planned: tuple[ShardPlan, PlanIdentity] | None = None) -> Path:
        """Process every item of shard ``index`` and write its file atomically; return its path.

        ``expected`` is the digest the caller planned with (Snakemake's, from the file name it asked for); a
        different digest now means the data, params or code changed while the workflow ran, and nothing is written.
        ``planned``: the plan and identity this process already made (``run`` in one process), used as they are.
        """
        root, shard_dir = Path(root), Path(cfg.out) / SHARD_DIR
        if planned is not None:
            plan, ident = planned
            own, items = ident.shards[index], plan.shard_items(index)
            log.info("shard %d: %d item(s) from the run's plan", index, len(items))
        elif (items := self.read_slice(root, cfg, index, expected) if expected is not None else None) is not None:
            own = expected
            log.info("shard %d: %d item(s) from the run's plan (%s/%s)", index, len(items), SLICE_DIR, expected)
        else:  # no slice (a run without Snakemake, or a stale one): plan, and check the plan still names this shard
            plan, ident = self.identity(root, cfg)
            own = ident.shards[index]
            if expected is not None and expected != own:
                raise DataError(f"{shard_dir / shard_name(index, expected)}: planned with digest {expected}, but "
                                f"the items, params or code of shard {index} now give {own} (changed while the "
                                f"workflow ran); run `{self.rerun_hint}` again")
            items = plan.shard_items(index)
        rows = []
        staging = Path(cfg.out) / STAGING_DIR / own
        if self.archived(cfg):
            shutil.rmtree(staging, ignore_errors=True)  # a killed run's half of this shard: start it again
        worker = self.worker(dataclasses.replace(cfg, out=str(staging)) if self.archived(cfg) else cfg) \
            if items else None
        try:
            for item in tqdm(items, desc=f"{self.name} shard {index}", unit=self.unit, disable=not progress):
                try:
                    row = {**worker(root, item), "reason": None, "detail": None}
                except QuarantineError as err:
                    row = {**self.quarantine_row(item), "reason": err.reason, "detail": err.detail}
                rows.append(row)
        finally:
            close = getattr(worker, "close", None)
            if close is not None:
                close()
        if self.archived(cfg):  # the archive first: the shard file is what says the shard is done
            archive = f"{ARCHIVE_DIR}/{archive_name(index, own)}"
            pack(staging, Path(cfg.out) / archive)
            shutil.rmtree(staging, ignore_errors=True)
            rows = [{**r, ARCHIVE_COLUMN: archive if r["reason"] is None else None} for r in rows]
        return write_shard(shard_dir / shard_name(index, own), pd.DataFrame(rows, columns=self.all_columns(cfg)),
                           own)

    def write_slices(self, cfg: Any, plan: ShardPlan, ident: PlanIdentity, indices: Iterable[int]) -> int:
        """Write ``<out>/shards/.slices/<shard digest>.json``, the items of each shard in ``indices``, so its job
        reads them instead of planning again (at 220k videos a plan is seconds, times 512 jobs); return how many.
        The merge deletes them with every other file of no plan."""
        if self.item is None:
            return 0
        by_shard: dict[int, list[dict]] = {i: [] for i in indices}
        for it in plan.items:
            if it.shard in by_shard:
                by_shard[it.shard].append(_record(it))
        folder = Path(cfg.out) / SHARD_DIR / SLICE_DIR
        for index, rows in by_shard.items():
            atomic_write_json(folder / f"{ident.shards[index]}.json", rows, indent=None)
        return len(by_shard)

    def read_slice(self, root: str | Path, cfg: Any, index: int, expected: str) -> list | None:
        """Return the items of shard ``index`` from its slice file when they, with today's settings and code, still
        give the shard digest ``expected``; None when there is no such slice (then the job plans)."""
        path = Path(cfg.out) / SHARD_DIR / SLICE_DIR / f"{expected}.json"
        if self.item is None or not path.is_file():
            return None
        try:
            items = [self.item(**{k: tuple(v) if isinstance(v, list) else v for k, v in row.items()})
                     for row in json.loads(path.read_text())]
        except (ValueError, TypeError) as err:  # a damaged or foreign file: plan instead
            log.warning("%s: unreadable slice (%s); planning instead", path, err)
            return None
        if any(it.shard != index for it in items):
            return None
        fingerprint = ShardPlan(items).digests(cfg.shards)[0][index]
        own = shard_digest(fingerprint, self.settings(root, cfg), code_digest(self.entry))
        return items if own == expected else None

    def write_plan_record(self, root: str | Path, cfg: Any, *, expected: str | None = None,
                          plan: ShardPlan | None = None) -> Path:
        """Write ``<out>/shards/plan-<digest>.json`` (the plan's shard files and digests) and return its path;
        ``expected`` as in :meth:`run_shard`, for the plan digest."""
        plan, ident = self.identity(root, cfg, plan)
        path = Path(cfg.out) / SHARD_DIR / ident.record_file()
        if expected is not None and expected != ident.digest:
            raise DataError(f"{path.with_name(plan_record_name(expected))}: planned with digest {expected}, but the "
                            f"data, params or code now give {ident.digest} (changed while the workflow ran); "
                            f"run `{self.rerun_hint}` again")
        counts = Counter(it.shard for it in plan.items)
        atomic_write_json(path, {
            "stage": self.name, "digest": ident.digest, "code": ident.code, "settings": ident.settings,
            "items": len(plan.items), "plan_quarantine": len(plan.quarantine),
            "shards": [{"file": ident.shard_file(i), "digest": d, "items": counts[i]}
                       for i, d in enumerate(ident.shards)]})
        return path

    def merge(self, root: str | Path, cfg: Any) -> dict:
        """Join the plan's shard files (refusing a missing one or one whose digest is not the plan's) into
        ``table``, ``quarantine.json`` and ``summary.json``; delete shard files of other plans; return the summary."""
        root, out = Path(root), Path(cfg.out)
        shard_dir = out / SHARD_DIR
        plan, ident = self.identity(root, cfg)
        remove_stale_temps(shard_dir)
        remove_stale_temps(out / ARCHIVE_DIR)
        rows = pd.concat([read_shard(shard_dir / ident.shard_file(i), d, rerun_hint=self.rerun_hint)
                          for i, d in enumerate(ident.shards)], ignore_index=True)
        archives = {ident.archive_file(i) for i in range(cfg.shards)} if self.archived(cfg) else set()
        for name in sorted(archives):
            if not (out / ARCHIVE_DIR / name).is_file():
                raise FileNotFoundError(f"{out / ARCHIVE_DIR / name}: the output archive of a finished shard is "
                                        f"missing; delete {shard_dir / name[:-4]}.parquet and run "
                                        f"`{self.rerun_hint}`")
        good, quarantine = split_results(rows, plan, self.int_columns)
        summary = self.finish(root, cfg, good, quarantine)
        if not (shard_dir / ident.record_file()).is_file():  # run without Snakemake: leave what it would
            self.write_plan_record(root, cfg, plan=plan)
        atomic_write_parquet(out / self.table, good)
        atomic_write_json(out / QUARANTINE, quarantine)
        atomic_write_json(out / SUMMARY, summary)
        stale = remove_unlisted(shard_dir, {ident.record_file(), *map(ident.shard_file, range(cfg.shards))})
        stale += remove_unlisted(out / ARCHIVE_DIR, archives)
        shutil.rmtree(out / STAGING_DIR, ignore_errors=True)  # killed shards' leftovers; no shard runs now
        if stale:
            log.info("removed %d shard file(s) and archive(s) of other plans from %s", stale, out)
        return summary
