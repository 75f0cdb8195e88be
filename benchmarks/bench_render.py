"""Benchmark: views/s of `snakemake render_deepcad` next to a bare render loop over the same meshes, on the same cores.

    python benchmarks/bench_render.py [--count 48] [--shards 4] [--cores 2] [--png-levels 6,1] [--json out.json]

Runs in a temporary copy of the working tree on synthetic DeepCAD models. Figures, side by side, for 1 core and
for ``--cores`` cores:
  snakemake   the whole fan-out: job start-up, parse, CAD code, mesh, render, PNG + mesh writes, merge
  shard jobs  the same run's shard jobs only (Snakemake's per-job ``benchmark:`` wall time, summed, over the cores):
              what a run of many shards approaches, where Snakemake's start, DAG and merge are spent once
  in-process  the same per-model work in one process (one renderer, one llvmpipe thread), no Snakemake
  bare        only ViewRenderer.render over meshes built beforehand: the renderer's ceiling on those cores, the
              best of one process with one llvmpipe thread per core and one single-threaded process per core
The ratio snakemake / bare on the same cores is the issue's figure (goal >= 0.8). Each figure runs pinned to its
cores (``os.sched_setaffinity``, inherited by every process it starts; in-process on one), so "1 core" is one core
for both sides. Each bare or in-process figure runs in its own process so LP_NUM_THREADS (llvmpipe's thread count,
read when the GL context starts) applies.
``--png-levels`` runs the snakemake and in-process figures once per ``render_deepcad.png_compress_level``, one
after the other on the same cores and the same models, so levels compare within one run (runs hours apart on
one machine have differed by more than the effect); the bare loop writes no PNG and runs once per core count.
"""
from __future__ import annotations

import argparse
import contextlib
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))
from tests.helpers.workspace import copy_worktree, run, set_params  # noqa: E402


def child(mode: str, root: str, start: int, step: int, out: str, png_level: int = 6) -> None:
    """One measuring process: ``bare`` renders prebuilt meshes, ``inproc`` runs ModelRenderer; prints seconds."""
    from lib.deepcad.mesh import build_mesh
    from lib.deepcad.normalize import normalize
    from lib.deepcad.parse import load_model
    from lib.deepcad.render_models import ModelRenderer, RenderDeepCADConfig, plan_render
    from lib.render import ViewRenderer

    cfg = RenderDeepCADConfig(out=out, png_compress_level=png_level)
    items = plan_render(root, 1).items[start::step]
    if mode == "bare":
        meshes = [build_mesh(normalize(load_model(Path(root) / it.source))) for it in items]
        with ViewRenderer(size=cfg.image_size, views=tuple(cfg.views)) as r:
            r.render(meshes[0])  # warm-up: first draw compiles shaders
            t = time.perf_counter()
            for mesh in meshes:
                r.render(mesh)
            print(time.perf_counter() - t)
        return
    from lib.quarantine import QuarantineError

    renderer = ModelRenderer(cfg)
    t = time.perf_counter()
    for it in items:
        with contextlib.suppress(QuarantineError):  # a blank render is quarantined by the stage too: same work
            renderer(Path(root), it)
    renderer.close()
    print(time.perf_counter() - t)


def parallel(mode: str, root: Path, procs: int, lp_threads: int, out: Path, png_level: int = 6) -> float:
    """Wall seconds of ``procs`` measuring processes over interleaved slices, started together; each reports
    its own loop time (start-up excluded), and the slowest one is the wall."""
    env = {**os.environ, "LP_NUM_THREADS": str(lp_threads)}
    ps = [subprocess.Popen([sys.executable, __file__, "--child", mode, str(root), str(i), str(procs),
                            str(out / f"{mode}{i}"), str(png_level)],
                           env=env, stdout=subprocess.PIPE, text=True, cwd=REPO)
          for i in range(procs)]
    times = []
    for p in ps:
        stdout, _ = p.communicate()
        if p.returncode != 0:
            raise RuntimeError(f"{mode} child failed ({p.returncode})")
        times.append(float(stdout.strip().splitlines()[-1]))
    return max(times)


def shard_job_seconds(logs: Path, shards: int) -> float:
    """Total wall seconds of the run's shard jobs, from Snakemake's ``benchmark:`` record of each (start-up
    included); raises if a job's record is missing."""
    files = sorted(logs.glob("shard-*.benchmark.tsv"))
    if len(files) != shards:
        raise RuntimeError(f"{logs}: {len(files)} shard benchmark records, expected {shards}")
    total = 0.0
    for f in files:
        header, values = f.read_text().splitlines()[:2]
        total += float(values.split("\t")[header.split("\t").index("s")])
    return total


@contextlib.contextmanager
def pinned(cores: int):
    """Run the block, and every process it starts, on ``cores`` CPUs only: without it a "1 core" figure lets the
    stage's PNG-writer thread (it encodes while the render waits in GL calls, which drop the GIL) use an idle
    second core that the bare loop, which writes nothing, has no use for."""
    before = os.sched_getaffinity(0)
    if len(before) < cores:
        raise SystemExit(f"--cores {cores}: this process may use only {len(before)} CPU(s)")
    os.sched_setaffinity(0, sorted(before)[:cores])
    try:
        yield
    finally:
        os.sched_setaffinity(0, before)


def main() -> None:
    if len(sys.argv) > 1 and sys.argv[1] == "--child":
        mode, root, start, step, out, level = sys.argv[2:8]
        return child(mode, root, int(start), int(step), out, int(level))
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--count", type=int, default=48, help="synthetic models")
    ap.add_argument("--shards", type=int, default=4)
    ap.add_argument("--cores", type=int, default=2)
    ap.add_argument("--png-levels", default="6", help="comma-separated render_deepcad.png_compress_level values")
    ap.add_argument("--json", help="also write the figures here")
    args = ap.parse_args()
    levels = [int(v) for v in args.png_levels.split(",")]
    if not levels or any(not 0 <= v <= 9 for v in levels):
        ap.error(f"--png-levels: zlib levels 0-9, comma-separated; got {args.png_levels!r}")

    from lib.deepcad.render_models import RenderDeepCADConfig

    views = len(RenderDeepCADConfig().views)
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        clone = copy_worktree(tmp / "clone")
        set_params(clone, {"synth_deepcad": {"count": args.count}, "render_deepcad": {"shards": args.shards}})
        run(["python", "-m", "stages.synth_deepcad", "--no-progress"], clone)
        root = clone / "data/raw/deepcad_synth"
        n = args.count * views

        rows = []
        for cores in sorted({1, args.cores}):
            with pinned(cores):
                bare_one = parallel("bare", root, 1, cores, tmp)  # one process, llvmpipe on every core
                bare_many = parallel("bare", root, cores, 1, tmp) if cores > 1 else bare_one
            bare = min(bare_one, bare_many)
            for level in levels:
                set_params(clone, {"render_deepcad": {"png_compress_level": level}})
                shutil.rmtree(clone / "data/processed", ignore_errors=True)
                shutil.rmtree(clone / ".snakemake", ignore_errors=True)
                shutil.rmtree(clone / "logs/render_deepcad", ignore_errors=True)
                with pinned(cores):
                    t = time.perf_counter()
                    run(["snakemake", "render_deepcad", "--cores", str(cores), "--nolock", "--quiet", "all"], clone)
                    snake = time.perf_counter() - t
                jobs_s = shard_job_seconds(clone / "logs/render_deepcad", args.shards)
                with pinned(1):
                    inproc = parallel("inproc", root, 1, 1, tmp, level)
                print(f"cores {cores}, PNG level {level}: snakemake {n / snake:.1f}, in-process {n / inproc:.1f}, "
                      f"bare {n / bare:.1f} views/s", flush=True)
                rows.append({"cores": cores, "png_level": level, "snakemake_views_per_s": n / snake,
                             "shard_jobs_s": jobs_s, "shard_jobs_views_per_s": n * cores / jobs_s,
                             "shard_jobs_ratio": bare * cores / jobs_s,
                             "inprocess_views_per_s": n / inproc, "bare_one_process_views_per_s": n / bare_one,
                             "bare_process_per_core_views_per_s": n / bare_many, "bare_views_per_s": n / bare,
                             "ratio": bare / snake})

    print(f"{args.count} models x {views} views = {n} views, 512x512, {args.shards} shards")
    print(f"{'cores':>5} {'png':>4} {'snakemake':>10} {'shard jobs':>11} {'in-process':>11} {'bare 1 proc':>12} "
          f"{'bare/core':>10} {'ratio':>6} {'jobs ratio':>11}")
    for r in rows:
        print(f"{r['cores']:>5} {r['png_level']:>4} {r['snakemake_views_per_s']:10.1f} "
              f"{r['shard_jobs_views_per_s']:11.1f} {r['inprocess_views_per_s']:11.1f} "
              f"{r['bare_one_process_views_per_s']:12.1f} {r['bare_process_per_core_views_per_s']:10.1f} "
              f"{r['ratio']:6.2f} {r['shard_jobs_ratio']:11.2f}")
    print("views/s; ratio = snakemake / the best bare figure on the same cores; shard jobs: views over the jobs' "
          "summed wall time / cores; in-process: one core")
    if args.json:
        Path(args.json).write_text(json.dumps({"models": args.count, "views": n, "shards": args.shards,
                                               "png_levels": levels, "rows": rows}, indent=2) + "\n")


if __name__ == "__main__":
    main()
