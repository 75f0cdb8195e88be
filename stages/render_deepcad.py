"""Stage render_deepcad: DeepCAD JSON -> CAD code, watertight mesh and multi-view 512x512 PNGs.

Usually run through Snakemake, which fans shards out over cores or a cluster:

    snakemake --cores 8 render_deepcad                    # what `dvc repro render_deepcad` runs
    snakemake --profile profiles/slurm render_deepcad     # on a SLURM cluster (see profiles/slurm)

Each shard parses, normalises, writes the CAD code, builds the mesh (trimesh + manifold3d booleans)
and renders the views with pyrender offscreen through EGL (Mesa on the CPU, NVIDIA on a GPU), one
renderer per shard. Malformed models and blank renders are quarantined with their reason.

Subcommands (what the Snakemake rules call):
    plan         print the plan: models per shard and split-level quarantine (writes nothing)
    shard -i N   render the models of shard N -> <out>/shards/shard-0000N.parquet
    merge        join the shards -> <out>/models.parquet, quarantine.json, summary.json
    run          all shards then merge in this process (no Snakemake)

Reads deepcad.root (synthetic data by default; point it at a real download) and section render_deepcad.
"""
from __future__ import annotations

import json
import logging
from collections import Counter

from lib.cli import run_stage, stage_parser
from lib.config import load_section
from lib.deepcad.render_models import DeepCADSource, RenderDeepCADConfig, merge_shards, plan_render, run_shard

log = logging.getLogger("render_deepcad")


def main() -> None:
    parser = stage_parser("render_deepcad", __doc__)
    sub = parser.add_subparsers(dest="command", required=True)
    sub.add_parser("plan", help="show the plan without writing anything")
    shard = sub.add_parser("shard", help="render one shard")
    shard.add_argument("-i", "--index", type=int, required=True, help="shard index, 0 <= N < render_deepcad.shards")
    sub.add_parser("merge", help="merge shard outputs")
    sub.add_parser("run", help="every shard, then merge, in this process")
    args = parser.parse_args()

    source = load_section(args.params, "deepcad", DeepCADSource)
    cfg = load_section(args.params, "render_deepcad", RenderDeepCADConfig)
    progress = not args.no_progress
    if args.command == "plan":
        plan = plan_render(source.root, cfg.shards)
        print(json.dumps({"models": len(plan.items),
                          "per_shard": dict(sorted(Counter(m.shard for m in plan.items).items())),
                          "quarantine": dict(Counter(q.reason for q in plan.quarantine))}, indent=1))
    elif args.command == "shard":
        if not 0 <= args.index < cfg.shards:
            parser.error(f"--index {args.index} outside 0..{cfg.shards - 1} (render_deepcad.shards)")
        log.info("wrote %s", run_shard(source.root, cfg, args.index, progress=progress))
    elif args.command == "merge":
        log.info("summary: %s", merge_shards(source.root, cfg))
    else:
        for i in range(cfg.shards):
            run_shard(source.root, cfg, i, progress=progress)
        log.info("summary: %s", merge_shards(source.root, cfg))


if __name__ == "__main__":
    run_stage(main)
