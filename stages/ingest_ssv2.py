"""Stage ingest_ssv2: probe every SSv2 video, write its training copy, quarantine bad input, one manifest.

Usually run through Snakemake, which fans shards out over cores or a cluster:

    snakemake --cores 8 ingest_ssv2        # what `dvc repro ingest_ssv2` runs

The subcommands are what the Snakemake rules (rules/fanout.smk) call:
    plan         print the plan: items per shard, label-level quarantine, shard files (writes nothing)
    record       write the plan record <out>/shards/plan-<digest>.json (what the merge rule waits for)
    shard -i N   probe + copy the videos of shard N -> <out>/shards/shard-0000N-<digest>.parquet
    merge        check the plan's shards, join them -> <out>/manifest.parquet, quarantine.json, summary.json
    run          all shards then merge in this process (no Snakemake; handy for small data)

Reads ssv2.root (synthetic data by default; point it at a real download) and section ingest_ssv2.
"""
from __future__ import annotations

from lib.cli import run_stage, sharded_stage_main
from lib.ssv2.ingest import FANOUT


def main() -> None:
    sharded_stage_main(FANOUT, __doc__)


if __name__ == "__main__":
    run_stage(main)
