"""Run a chain of stages in order without DVC or Snakemake (e.g. on a GPU machine), timing each one.

    python benchmarks/run_stages.py --params F [--jobs N] [--loader-workers W --loader-backend B]
                                    [--timings PATH] STAGE [STAGE ...]

Each stage runs as `python -m stages.<name> --params F --no-progress`; the fan-out stages (ingest_ssv2,
render_deepcad) as `... run --jobs N` (every shard, N processes at a time, then the merge). Output streams
through. The first stage that fails stops the chain, and this exits with its exit code. Stage names must be
modules of stages/. F is usually written by benchmarks/gpu_params.py, e.g.

    python benchmarks/gpu_params.py vae /tmp/vae.yaml
    python benchmarks/run_stages.py --params /tmp/vae.yaml --jobs 8 --loader-workers 8 --loader-backend decord \\
        synth_ssv2 ingest_ssv2 validate_ssv2 train_curriculum eval_vae

--loader-workers W: before the first trainer (train_*), write <bench_loader.out>/stable.json with num_workers W,
prefetch_factor 2, backend B (default decord) and batch_size 8 (trainers never take the batch size from it),
instead of running bench_loader; skipped when bench_loader is in the chain. At the end a table of stage ->
seconds is printed and, with --timings, written as JSON ({"stages": {name: seconds}, "total", "exit_code"}).
"""
from __future__ import annotations

import argparse
import json
import subprocess
import sys
import time
from pathlib import Path

import yaml

ROOT = Path(__file__).resolve().parents[1]
FAN_OUT = {"ingest_ssv2", "render_deepcad"}  # lib.cli.sharded_stage_main: subcommand `run --jobs N`


def stage_command(name: str, params: str, jobs: int) -> list[str]:
    """The command line of one stage."""
    cmd = [sys.executable, "-m", f"stages.{name}", "--params", params, "--no-progress"]
    return cmd + ["run", "--jobs", str(jobs)] if name in FAN_OUT else cmd


def write_stable(params: str, workers: int, backend: str) -> Path:
    """Write ``<bench_loader.out>/stable.json`` (lib.data.video_dataset.STABLE_KEYS) and return its path."""
    with open(params) as fh:
        out = ((yaml.safe_load(fh) or {}).get("bench_loader") or {}).get("out", "data/loader")
    path = ROOT / out / "stable.json"  # stages run in ROOT; an absolute out stays as it is
    path.parent.mkdir(parents=True, exist_ok=True)
    stable = {"batch_size": 8, "num_workers": workers, "prefetch_factor": 2, "backend": backend}
    path.write_text(json.dumps(stable, indent=2) + "\n")
    return path


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("stages", nargs="+", metavar="STAGE", help="stage names, run in this order")
    parser.add_argument("--params", required=True, help="params file every stage reads")
    parser.add_argument("--jobs", type=int, default=1, help="shard processes at a time in fan-out stages")
    parser.add_argument("--loader-workers", type=int, help="write stable.json with this many loader workers")
    parser.add_argument("--loader-backend", default="decord", choices=("decord", "pyav", "torchcodec"),
                        help="decode backend for stable.json (default: %(default)s)")
    parser.add_argument("--timings", help="write the stage -> seconds table here as JSON")
    args = parser.parse_args()
    known = sorted(p.stem for p in (ROOT / "stages").glob("*.py") if not p.stem.startswith("_"))
    unknown = [s for s in args.stages if s not in known]
    if unknown:
        parser.error(f"unknown stage {unknown[0]!r} (stages: {', '.join(known)})")
    if not Path(args.params).is_file():
        parser.error(f"{args.params}: params file not found")
    params = str(Path(args.params).resolve())  # the stages run in the repository root

    stable_due = args.loader_workers is not None and "bench_loader" not in args.stages
    timings: dict[str, float] = {}
    code = 0
    for name in args.stages:
        if stable_due and name.startswith("train_"):
            path = write_stable(params, args.loader_workers, args.loader_backend)
            print(f"== wrote {path}: {json.loads(path.read_text())}", flush=True)
            stable_due = False
        cmd = stage_command(name, params, args.jobs)
        print(f"== {name}: {' '.join(cmd)}", flush=True)
        start = time.perf_counter()
        code = subprocess.run(cmd, cwd=ROOT).returncode
        timings[name] = round(time.perf_counter() - start, 2)
        print(f"== {name}: exit {code} after {timings[name]:.1f} s", flush=True)
        if code != 0:
            break

    total = round(sum(timings.values()), 2)
    width = max(len(s) for s in [*timings, "total"])
    rows = [f"{s:<{width}}  {t:>9.1f} s" for s, t in timings.items()] + [f"{'total':<{width}}  {total:>9.1f} s"]
    print("\n" + "\n".join(rows) + ("" if code == 0 else f"\nstopped: {name} exited {code}"), flush=True)
    if args.timings:
        Path(args.timings).parent.mkdir(parents=True, exist_ok=True)
        Path(args.timings).write_text(json.dumps({"stages": timings, "total": total, "exit_code": code},
                                                 indent=2) + "\n")
    return code if code >= 0 else 128 - code  # killed by signal N: 128 + N, as a shell reports it


if __name__ == "__main__":
    sys.exit(main())
