"""Benchmark: views/s of the render_deepcad stage on this machine's EGL (NVIDIA's on a GPU node, Mesa's llvmpipe on
a CPU), without Snakemake, next to the bare renderer on the same models.

    python benchmarks/bench_render_stage.py OUT [--count 96] [--jobs 8] [--json OUT/render_stage.json]

For machines without DVC or Snakemake (the GPU lease): synthesises ``--count`` DeepCAD models under OUT, runs
``python -m stages.render_deepcad run --jobs J`` (J shards in J processes: parse, CAD code, mesh, render, PNG and
mesh writes, merge), then the bare loop (``ViewRenderer.render`` over prebuilt meshes, start-up excluded) in one
process and in J processes. Run it on the GPU node and on a CPU machine for the GPU/llvmpipe comparison.
"""
from __future__ import annotations

import argparse
import json
import os
import platform
import subprocess
import sys
import time
from pathlib import Path

import yaml

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))
from benchmarks.bench_render import parallel  # noqa: E402
from benchmarks.device_name import gpu_name  # noqa: E402


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("out", type=Path)
    ap.add_argument("--count", type=int, default=96, help="synthetic models")
    ap.add_argument("--jobs", type=int, default=8, help="shards, each in its own process")
    ap.add_argument("--json", type=Path)
    args = ap.parse_args()
    out = args.out.resolve()
    out.mkdir(parents=True, exist_ok=True)
    params = yaml.safe_load((REPO / "params.yaml").read_text())
    params["synth_deepcad"].update(out=str(out / "raw"), count=args.count)
    params["deepcad"]["root"] = str(out / "raw")
    params["render_deepcad"].update(out=str(out / "render"), shards=args.jobs)
    (out / "params.yaml").write_text(yaml.safe_dump(params, sort_keys=False))
    env = {**os.environ, "PYTHONPATH": f"{REPO}{os.pathsep}{os.environ.get('PYTHONPATH', '')}"}

    def stage(module: str, *extra: str) -> float:
        t = time.perf_counter()
        subprocess.run([sys.executable, "-m", module, "--params", str(out / "params.yaml"), "--no-progress", *extra],
                       cwd=REPO, env=env, check=True)
        return time.perf_counter() - t

    stage("stages.synth_deepcad")
    views = len(params["render_deepcad"]["views"]) * args.count
    stage_s = stage("stages.render_deepcad", "run", "--jobs", str(args.jobs))
    summary = json.loads((out / "render" / "summary.json").read_text())
    bare_one = parallel("bare", out / "raw", 1, os.cpu_count() or 1, out)
    bare_many = parallel("bare", out / "raw", args.jobs, 1, out)
    inproc = parallel("inproc", out / "raw", 1, 1, out)
    result = {"device": _device(), "command": "python benchmarks/bench_render_stage.py " + " ".join(sys.argv[1:]),
              "date": time.strftime("%Y-%m-%d"), "models": args.count, "views": views, "jobs": args.jobs,
              "image_size": params["render_deepcad"]["image_size"], "rendered_images": summary["images"],
              "stage_views_per_s": views / stage_s, "inprocess_views_per_s": views / inproc,
              "bare_one_process_views_per_s": views / bare_one, "bare_per_job_views_per_s": views / bare_many,
              "ratio": min(bare_one, bare_many) / stage_s}
    print(json.dumps(result, indent=1))
    if args.json:
        args.json.write_text(json.dumps(result, indent=1) + "\n")


def _device() -> str:
    gpu, cpu = gpu_name(), f"{os.cpu_count()} CPU cores ({platform.machine()})"
    return f"{gpu} (NVIDIA EGL), {cpu}" if gpu else f"{cpu}, Mesa llvmpipe"


if __name__ == "__main__":
    main()
