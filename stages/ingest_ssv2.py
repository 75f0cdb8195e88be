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

from lib.cli import run_stage, sharded_stage_main
from lib.ssv2.ingest import IngestSSv2Config, SSv2Source, merge_shards, plan_ingest, run_shard


def main() -> None:
    sharded_stage_main("ingest_ssv2", __doc__, source=("ssv2", SSv2Source), config=("ingest_ssv2", IngestSSv2Config),
                       plan=plan_ingest, run_shard=run_shard, merge=merge_shards)


if __name__ == "__main__":
    run_stage(main)
