"""Benchmark: SSv2 ingestion throughput with 1 and 2 Snakemake cores, and the default pipeline's wall time.

    python benchmarks/bench_ingest.py [--count 96] [--shards 8] [--skip-pipeline]

Everything runs in a temporary clone of the working tree, on synthetic data made with the
repository's own params (count overridable), so the numbers are side by side in one run.
Prints a table and writes nothing into the checkout.
"""
from __future__ import annotations

import argparse
import os
import shutil
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from tests.helpers.workspace import copy_worktree, run, set_params  # noqa: E402


def timed(cmd: list[str], cwd: Path) -> float:
    """Run ``cmd`` in ``cwd`` with the venv on PATH; return its wall time in seconds."""
    t = time.perf_counter()
    run(cmd, cwd)
    return time.perf_counter() - t


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--count", type=int, default=None, help="synthetic videos (default: params.yaml)")
    ap.add_argument("--shards", type=int, default=8)
    ap.add_argument("--skip-pipeline", action="store_true", help="skip the default `dvc repro` timing")
    args = ap.parse_args()
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        if not args.skip_pipeline:
            clone = copy_worktree(Path(tmp) / "pipeline")
            wall = timed(["dvc", "repro"], clone)
            n = len(list((clone / "data/raw/ssv2_synth/20bn-something-something-v2").glob("*.webm")))
            rows.append(("default pipeline: dvc repro (synth + ingest + validate)", n, wall))
        clone = copy_worktree(Path(tmp) / "ingest")
        if args.count:
            set_params(clone, {"synth_ssv2": {"count": args.count}})
        set_params(clone, {"ingest_ssv2": {"shards": args.shards}})
        timed(["python", "-m", "stages.synth_ssv2", "--no-progress"], clone)
        n = len(list((clone / "data/raw/ssv2_synth/20bn-something-something-v2").glob("*.webm")))
        for cores in (1, 2):
            shutil.rmtree(clone / "data/interim", ignore_errors=True)
            shutil.rmtree(clone / ".snakemake", ignore_errors=True)
            wall = timed(["snakemake", "ingest_ssv2", "--cores", str(cores), "--nolock", "--quiet", "all"], clone)
            rows.append((f"ingest_ssv2, snakemake --cores {cores}, {args.shards} shards", n, wall))
    print(f"{'what':58} {'videos':>7} {'wall s':>8} {'videos/s':>9}")
    for what, n, wall in rows:
        print(f"{what:58} {n:7d} {wall:8.1f} {n / wall:9.2f}")
    ingest = [r for r in rows if r[0].startswith("ingest")]
    if len(ingest) == 2:
        print(f"speed-up 2 cores vs 1: {ingest[0][2] / ingest[1][2]:.2f}x (cpu count {os.cpu_count()})")


if __name__ == "__main__":
    main()
