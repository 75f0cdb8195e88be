"""Benchmark: views/s of `snakemake render_deepcad` next to a bare in-process render loop over the same meshes.

    python benchmarks/bench_render.py [--count 48] [--shards 4] [--cores 2]

Runs in a temporary copy of the working tree on synthetic DeepCAD models. Three figures, side by side:
  snakemake   the whole fan-out: job start-up, parse, CAD code, mesh, render, PNG + mesh writes, merge
  in-process  the same per-model work in one process (one renderer), no Snakemake, no job start-up
  bare        only ViewRenderer.render over meshes built beforehand (the renderer's ceiling)
The ratio bare / (snakemake --cores 1) is the pipeline's overhead factor on one core.
"""
from __future__ import annotations

import argparse
import shutil
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from tests.helpers.workspace import copy_worktree, run, set_params  # noqa: E402


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--count", type=int, default=48, help="synthetic models")
    ap.add_argument("--shards", type=int, default=4)
    ap.add_argument("--cores", type=int, default=2)
    args = ap.parse_args()

    from lib.deepcad.mesh import build_mesh
    from lib.deepcad.normalize import normalize
    from lib.deepcad.parse import load_model
    from lib.deepcad.render_models import ModelRenderer, PlannedModel, RenderDeepCADConfig, plan_render
    from lib.render import ViewRenderer

    with tempfile.TemporaryDirectory() as tmp:
        clone = copy_worktree(Path(tmp) / "clone")
        set_params(clone, {"synth_deepcad": {"count": args.count}, "render_deepcad": {"shards": args.shards}})
        run(["python", "-m", "stages.synth_deepcad", "--no-progress"], clone)
        root = clone / "data/raw/deepcad_synth"
        cfg = RenderDeepCADConfig(out=str(Path(tmp) / "inproc"), shards=args.shards)
        items: list[PlannedModel] = plan_render(root, cfg.shards).items
        views = len(cfg.views)

        snake = {}
        for cores in sorted({1, args.cores}):
            shutil.rmtree(clone / "data/processed", ignore_errors=True)
            shutil.rmtree(clone / ".snakemake", ignore_errors=True)
            t = time.perf_counter()
            run(["snakemake", "render_deepcad", "--cores", str(cores), "--nolock", "--quiet", "all"], clone)
            snake[cores] = time.perf_counter() - t

        renderer = ModelRenderer(cfg)
        t = time.perf_counter()
        for item in items:
            renderer(root, item)
        inproc = time.perf_counter() - t
        renderer.close()

        meshes = [build_mesh(normalize(load_model(root / item.source))) for item in items]
        with ViewRenderer(size=cfg.image_size, views=tuple(cfg.views)) as r:
            r.render(meshes[0])  # warm-up: first draw compiles shaders
            t = time.perf_counter()
            for mesh in meshes:
                r.render(mesh)
            bare = time.perf_counter() - t

    n = len(items) * views
    print(f"{len(items)} models x {views} views = {n} views, {cfg.image_size}x{cfg.image_size}")
    print(f"{'what':58} {'wall s':>8} {'views/s':>9}")
    rows = [(f"snakemake render_deepcad --cores {c}, {args.shards} shards", wall) for c, wall in snake.items()]
    rows += [("in-process: parse + code + mesh + render + write, 1 core", inproc),
             ("bare ViewRenderer.render loop over prebuilt meshes, 1 core", bare)]
    for what, wall in rows:
        print(f"{what:58} {wall:8.2f} {n / wall:9.1f}")
    print(f"pipeline overhead on one core (bare views/s / snakemake --cores 1 views/s): {snake[1] / bare:.2f}x")


if __name__ == "__main__":
    main()
