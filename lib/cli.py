"""Shared command-line plumbing for stages: --params, logging set-up, clean error exits."""
from __future__ import annotations

import argparse
import logging
import sys
from collections.abc import Callable

from lib.config import ConfigError
from lib.io import DataError, UnsafePathError


def stage_parser(name: str, description: str) -> argparse.ArgumentParser:
    """Return an argparse parser for ``python -m stages.<name>`` with the shared ``--params`` flag."""
    parser = argparse.ArgumentParser(prog=f"python -m stages.{name}", description=description,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--params", default="params.yaml", help="params file to read (default: %(default)s)")
    parser.add_argument("--no-progress", action="store_true", help="hide progress bars (e.g. in logs)")
    return parser


def run_stage(main: Callable[[], int | None]) -> None:
    """Run a stage's main: log to stderr; a bad param, a missing or malformed input, or a failed check exits 1
    with its message (no traceback). Anything else is a bug and keeps its traceback."""
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(levelname)s %(message)s")
    logging.getLogger("accelerate").setLevel(logging.WARNING)  # one INFO line per file of every checkpoint
    try:
        code = main()
    except (ConfigError, DataError, UnsafePathError, FileNotFoundError, StageCheckFailed) as err:
        logging.getLogger("stage").error("%s", err)
        sys.exit(1)
    sys.exit(code or 0)


class StageCheckFailed(RuntimeError):
    """A stage's own check (e.g. a validation threshold) failed after it wrote its report."""


def sharded_stage_main(name: str, doc: str, *, source: tuple[str, type], config: tuple[str, type],
                       plan: Callable, run_shard: Callable, merge: Callable) -> None:
    """Main of a Snakemake fan-out stage: subcommands ``plan``, ``shard -i N``, ``merge`` and ``run``.

    ``source`` and ``config`` are (params section, dataclass) of the dataset root and of the stage;
    ``plan(root, shards)`` returns a :class:`lib.shards.ShardPlan`, ``run_shard(root, cfg, i, progress=)``
    and ``merge(root, cfg)`` do the work. ``cfg`` must have ``shards``.
    """
    import json
    from collections import Counter

    from lib.config import load_section

    log = logging.getLogger(name)
    parser = stage_parser(name, doc)
    sub = parser.add_subparsers(dest="command", required=True)
    sub.add_parser("plan", help="show the plan without writing anything")
    shard = sub.add_parser("shard", help="process one shard")
    shard.add_argument("-i", "--index", type=int, required=True, help=f"shard index, 0 <= N < {config[0]}.shards")
    sub.add_parser("merge", help="merge shard outputs")
    sub.add_parser("run", help="every shard, then merge, in this process (no Snakemake)")
    args = parser.parse_args()

    root = load_section(args.params, source[0], source[1]).root
    cfg = load_section(args.params, config[0], config[1])
    progress = not args.no_progress
    if args.command == "plan":
        p = plan(root, cfg.shards)
        print(json.dumps({"items": len(p.items),
                          "per_shard": dict(sorted(Counter(it.shard for it in p.items).items())),
                          "quarantine": dict(Counter(q.reason for q in p.quarantine))}, indent=1))
    elif args.command == "shard":
        if not 0 <= args.index < cfg.shards:
            parser.error(f"--index {args.index} outside 0..{cfg.shards - 1} ({config[0]}.shards)")
        log.info("wrote %s", run_shard(root, cfg, args.index, progress=progress))
    elif args.command == "merge":
        log.info("summary: %s", merge(root, cfg))
    else:
        for i in range(cfg.shards):
            run_shard(root, cfg, i, progress=progress)
        log.info("summary: %s", merge(root, cfg))
