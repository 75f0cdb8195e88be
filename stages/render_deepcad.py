"""Stage render_deepcad: DeepCAD JSON -> CAD code, watertight mesh and multi-view 512x512 PNGs.

Usually run through Snakemake, which fans shards out over cores or a cluster:

    snakemake --cores 8 render_deepcad                    # what `dvc repro render_deepcad` runs
    snakemake --profile profiles/slurm render_deepcad     # on a SLURM cluster (see profiles/slurm)

Each shard parses, normalises, writes the CAD code, builds the mesh (trimesh + manifold3d booleans)
and renders the views with pyrender offscreen through EGL (Mesa on the CPU, NVIDIA on a GPU), one
renderer per shard. Malformed models and blank renders are quarantined with their reason.

Subcommands (what the Snakemake rules, rules/fanout.smk, call):
    plan         print the plan: models per shard, split-level quarantine, shard files (writes nothing)
    record       write the plan record <out>/shards/plan-<digest>.json (what the merge rule waits for)
    shard -i N   render the models of shard N -> <out>/shards/shard-0000N-<digest>.parquet
    merge        check the plan's shards, join them -> <out>/models.parquet, quarantine.json, summary.json
    run          all shards then merge in this process (no Snakemake)

Reads deepcad.root (synthetic data by default; point it at a real download) and section render_deepcad.
"""
from __future__ import annotations

from lib.cli import run_stage, sharded_stage_main
from lib.deepcad.render_models import FANOUT


def main() -> None:
    sharded_stage_main(FANOUT, __doc__)


if __name__ == "__main__":
    run_stage(main)
