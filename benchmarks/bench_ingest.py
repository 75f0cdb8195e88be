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
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import yaml

REPO = Path(__file__).resolve().parents[1]


def sh(cmd: list[str], cwd: Path) -> float:
    """Run ``cmd`` in ``cwd`` with the venv on PATH; return its wall time in seconds."""
    env = dict(os.environ, PATH=f"{Path(sys.executable).parent}{os.pathsep}{os.environ['PATH']}", PYTHONPATH="")
    t = time.perf_counter()
    proc = subprocess.run(cmd, cwd=cwd, env=env, capture_output=True, text=True)
    if proc.returncode:
        sys.exit(f"{' '.join(cmd)} failed:\n{proc.stdout[-2000:]}\n{proc.stderr[-2000:]}")
    return time.perf_counter() - t


def make_clone(dest: Path) -> Path:
    """Copy the tracked and untracked (not ignored) files of the checkout into ``dest`` as a git repo."""
    files = subprocess.run(["git", "ls-files", "-co", "--exclude-standard", "-z"], cwd=REPO, capture_output=True,
                           text=True, check=True).stdout.split("\0")
    for rel in filter(None, files):
        if (REPO / rel).is_file():
            (dest / rel).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(REPO / rel, dest / rel)
    for cmd in (["git", "init", "-q"], ["git", "add", "-A"],
                ["git", "-c", "user.email=b@b", "-c", "user.name=b", "commit", "-qm", "bench"]):
        subprocess.run(cmd, cwd=dest, check=True, capture_output=True)
    return dest


def set_params(clone: Path, section: str, **keys) -> None:
    path = clone / "params.yaml"
    params = yaml.safe_load(path.read_text())
    params[section].update(keys)
    path.write_text(yaml.safe_dump(params, sort_keys=False))


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--count", type=int, default=None, help="synthetic videos (default: params.yaml)")
    ap.add_argument("--shards", type=int, default=8)
    ap.add_argument("--skip-pipeline", action="store_true", help="skip the default `dvc repro` timing")
    args = ap.parse_args()
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        if not args.skip_pipeline:
            clone = make_clone(Path(tmp) / "pipeline")
            wall = sh(["dvc", "repro"], clone)
            n = len(list((clone / "data/raw/ssv2_synth/20bn-something-something-v2").glob("*.webm")))
            rows.append(("default pipeline: dvc repro (synth + ingest + validate)", n, wall))
        clone = make_clone(Path(tmp) / "ingest")
        if args.count:
            set_params(clone, "synth_ssv2", count=args.count)
        set_params(clone, "ingest_ssv2", shards=args.shards)
        sh(["python", "-m", "stages.synth_ssv2", "--no-progress"], clone)
        n = len(list((clone / "data/raw/ssv2_synth/20bn-something-something-v2").glob("*.webm")))
        for cores in (1, 2):
            shutil.rmtree(clone / "data/interim", ignore_errors=True)
            shutil.rmtree(clone / ".snakemake", ignore_errors=True)
            wall = sh(["snakemake", "ingest_ssv2", "--cores", str(cores), "--nolock", "--quiet", "all"], clone)
            rows.append((f"ingest_ssv2, snakemake --cores {cores}, {args.shards} shards", n, wall))
    print(f"{'what':58} {'videos':>7} {'wall s':>8} {'videos/s':>9}")
    for what, n, wall in rows:
        print(f"{what:58} {n:7d} {wall:8.1f} {n / wall:9.2f}")
    ingest = [r for r in rows if r[0].startswith("ingest")]
    if len(ingest) == 2:
        print(f"speed-up 2 cores vs 1: {ingest[0][2] / ingest[1][2]:.2f}x (cpu count {os.cpu_count()})")


if __name__ == "__main__":
    main()
