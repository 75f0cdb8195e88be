"""Shared command-line plumbing for stages: --params, logging set-up, clean error exits."""
from __future__ import annotations

import argparse
import logging
import sys
from collections.abc import Callable
from typing import Any

from lib.config import ConfigError
from lib.io import DataError, UnsafePathError
from lib.locks import LockedError, exclusive


def stage_parser(name: str, description: str) -> argparse.ArgumentParser:
    """Return an argparse parser for ``python -m stages.<name>`` with the shared ``--params`` flag."""
    parser = argparse.ArgumentParser(prog=f"python -m stages.{name}", description=description,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--params", default="params.yaml", help="params file to read (default: %(default)s)")
    parser.add_argument("--no-progress", action="store_true", help="hide progress bars (e.g. in logs)")
    return parser


def run_stage(main: Callable[[], int | None]) -> None:
    """Run a stage's main: log to stderr; a bad param, a missing or malformed input, a failed check or a lock
    held by another process exits 1 with its message (no traceback). Anything else is a bug and keeps its traceback."""
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(levelname)s %(message)s")
    logging.getLogger("accelerate").setLevel(logging.WARNING)  # one INFO line per file of every checkpoint
    try:
        code = main()
    except (ConfigError, DataError, UnsafePathError, FileNotFoundError, StageCheckFailed, LockedError) as err:
        logging.getLogger("stage").error("%s", err)
        sys.exit(1)
    sys.exit(code or 0)


class StageCheckFailed(RuntimeError):
    """A stage's own check (e.g. a validation threshold) failed after it wrote its report."""


def sharded_stage_main(fanout: Any, doc: str) -> None:
    """Main of a Snakemake fan-out stage: subcommands ``plan``, ``record``, ``shard -i N``, ``merge`` and ``run``,
    all done by ``fanout`` (a :class:`lib.shards.FanOut`) on the sections it names in the params file."""
    import json
    from collections import Counter

    from lib.config import load_section

    name, section = fanout.name, fanout.config[0]
    log = logging.getLogger(name)
    parser = stage_parser(name, doc)
    sub = parser.add_subparsers(dest="command", required=True)
    sub.add_parser("plan", help="show the plan and its shard files without writing anything")
    record = sub.add_parser("record", help="write the plan record <out>/shards/plan-<digest>.json")
    shard = sub.add_parser("shard", help="process one shard")
    shard.add_argument("-i", "--index", type=int, required=True, help=f"shard index, 0 <= N < {section}.shards")
    for p in (record, shard):
        p.add_argument("--digest", help="the digest the caller planned with (Snakemake passes the one in the file "
                                        "name); refuse to write anything when the digest now differs")
    sub.add_parser("merge", help="verify and merge the plan's shards")
    run = sub.add_parser("run", help="every shard, then merge, without Snakemake (machines that lack it)")
    run.add_argument("-j", "--jobs", type=int, default=1,
                     help="shards at a time, each in its own process (default 1: all in this process)")
    args = parser.parse_args()

    root = load_section(args.params, fanout.source[0], fanout.source[1]).root
    cfg = load_section(args.params, section, fanout.config[1])
    progress = not args.no_progress
    if args.command == "plan":
        p, ident = fanout.identity(root, cfg)
        print(json.dumps({"items": len(p.items),
                          "per_shard": dict(sorted(Counter(it.shard for it in p.items).items())),
                          "quarantine": dict(Counter(q.reason for q in p.quarantine)),
                          "digest": ident.digest,
                          "shard_files": [ident.shard_file(i) for i in range(cfg.shards)]}, indent=1))
    elif args.command == "record":
        log.info("wrote %s", fanout.write_plan_record(root, cfg, expected=args.digest))
    elif args.command == "shard":
        if not 0 <= args.index < cfg.shards:
            parser.error(f"--index {args.index} outside 0..{cfg.shards - 1} ({section}.shards)")
        log.info("wrote %s", fanout.run_shard(root, cfg, args.index, progress=progress, expected=args.digest))
    elif args.command == "merge":
        log.info("summary: %s", fanout.merge(root, cfg))
    else:
        with exclusive(cfg.out, f"{name} fan-out root"):
            # plan once, as Snakemake's onstart does: no shard plans the whole root again (shards x items of
            # planning: at 512 shards of the real SSv2 that is 512 plans of 220k videos)
            plan, ident = fanout.identity(root, cfg)
            if args.jobs > 1:  # shard processes read their slice of it
                fanout.write_slices(cfg, plan, ident, range(cfg.shards))
                _run_shard_processes(fanout.entry, args.params, ident.shards, args.jobs)
            else:
                for i in range(cfg.shards):
                    fanout.run_shard(root, cfg, i, progress=progress, planned=(plan, ident))
            log.info("summary: %s", fanout.merge(root, cfg))


def _run_shard_processes(entry: str, params: str, digests: tuple[str, ...], jobs: int) -> None:
    """Run ``python -m <entry> shard -i N --digest D`` for every shard, ``jobs`` at a time; raise naming the failed
    ones."""
    import os
    import subprocess
    import sys
    from concurrent.futures import ThreadPoolExecutor

    # as the Snakemake rule does: Mesa's llvmpipe otherwise starts a render thread per core in every job
    env = {**os.environ, "LP_NUM_THREADS": os.environ.get("LP_NUM_THREADS",
                                                          str(max(1, (os.cpu_count() or 1) // jobs)))}

    def one(index: int) -> tuple[int, subprocess.CompletedProcess]:
        cmd = [sys.executable, "-m", entry, "--params", params, "--no-progress", "shard", "--index", str(index),
               "--digest", digests[index]]
        proc = subprocess.run(cmd, capture_output=True, text=True, env=env)
        sys.stderr.write(proc.stderr)  # the job's log and warnings, whole, as it ends
        return index, proc

    with ThreadPoolExecutor(jobs) as pool:
        failed = [(i, proc) for i, proc in pool.map(one, range(len(digests))) if proc.returncode != 0]
    if failed:
        tails = "; ".join(f"shard {i}: {(proc.stderr.strip().splitlines() or ['?'])[-1]}" for i, proc in failed)
        raise RuntimeError(f"{len(failed)} of {len(digests)} shards failed ({tails}); fix it and run again")
