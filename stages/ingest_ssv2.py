"""Stage ingest_ssv2: probe every SSv2 video, write its training copy, quarantine bad input, one manifest.

Usually run through Snakemake, which fans shards out over cores or a cluster:

    snakemake --cores 8 ingest_ssv2        # what `dvc repro ingest_ssv2` runs

The subcommands are what the Snakemake rules call:
    plan         print the plan: items per shard and label-level quarantine (a dry look, writes nothing)
    shard -i N   probe + copy the videos of shard N -> <out>/shards/shard-0000N.parquet
    merge        join the shards -> <out>/manifest.parquet, quarantine.json, summary.json
    run          all shards then merge in this process (no Snakemake; handy for small data)

Reads ssv2.root (synthetic data by default; point it at a real download) and section ingest_ssv2.
"""
from __future__ import annotations

import json
import logging
from collections import Counter

from lib.cli import run_stage, stage_parser
from lib.config import load_section
from lib.ssv2.ingest import IngestSSv2Config, SSv2Source, merge_shards, plan_ingest, run_shard

log = logging.getLogger("ingest_ssv2")


def main() -> None:
    parser = stage_parser("ingest_ssv2", __doc__)
    sub = parser.add_subparsers(dest="command", required=True)
    sub.add_parser("plan", help="show the plan without writing anything")
    shard = sub.add_parser("shard", help="ingest one shard")
    shard.add_argument("-i", "--index", type=int, required=True, help="shard index, 0 <= N < ingest_ssv2.shards")
    sub.add_parser("merge", help="merge shard outputs into the manifest")
    sub.add_parser("run", help="every shard, then merge, in this process")
    args = parser.parse_args()

    source = load_section(args.params, "ssv2", SSv2Source)
    cfg = load_section(args.params, "ingest_ssv2", IngestSSv2Config)
    progress = not args.no_progress
    if args.command == "plan":
        plan = plan_ingest(source.root, cfg.shards)
        print(json.dumps({"items": len(plan.items),
                          "per_shard": dict(sorted(Counter(i.shard for i in plan.items).items())),
                          "quarantine": dict(Counter(q.reason for q in plan.quarantine))}, indent=1))
    elif args.command == "shard":
        if not 0 <= args.index < cfg.shards:
            parser.error(f"--index {args.index} outside 0..{cfg.shards - 1} (ingest_ssv2.shards)")
        log.info("wrote %s", run_shard(source.root, cfg, args.index, progress=progress))
    elif args.command == "merge":
        log.info("summary: %s", merge_shards(source.root, cfg))
    else:
        for i in range(cfg.shards):
            run_shard(source.root, cfg, i, progress=progress)
        log.info("summary: %s", merge_shards(source.root, cfg))


if __name__ == "__main__":
    run_stage(main)
