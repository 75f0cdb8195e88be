"""Benchmark: how the data stages' fixed costs grow with the dataset, up to real SSv2 and DeepCAD sizes.

    python benchmarks/bench_scale.py [--sizes 1000,10000,100000,real] [--datasets ssv2,deepcad] [--shards 512]
                                     [--work-n 10000] [--json reports/benchmarks/scale.json]

Runs in a temporary copy of the working tree (a user's project, with its own DVC repo). For each dataset and N it
builds a root beside the clone (outside the repo, where the README puts real downloads) in the real layout
cheaply: label/split files of N entries and N hard links to a few videos or model JSONs the project's
synthesisers wrote (``real`` = 220,847 videos, 178,238 models). Then, at the README's shard count, it measures:
  plan_s        the plan alone (label/split files, directory listing, a stat per item, shard digests), in a child
  peak_mib      that child's peak RSS
  slices_s      writing every shard's items once (what Snakemake's main process does at the start of a run)
  plan_job_s    ``python -m stages.<stage> plan`` (interpreter, imports, plan): what every shard job paid before
                its first item when each job planned for itself (and still pays without Snakemake)
  startup_s     a shard job's fixed cost now: interpreter, imports, reading and checking its slice
  dag_s         ``snakemake -n <stage>``: parse, plan, DAG of every shard job
  merge_s       ``python -m stages.<stage> merge`` over the plan's shard files (rows copied from one real row)
  manifest_mib  the merged table's size
  listing_s     ``python -m stages.list_source <dataset>``: the root's listing, which every ``dvc repro`` rewrites
  commit_s      ``dvc commit`` of the stage with its outputs in place (first hashing of N inputs and outputs)
  noop_status_s ``dvc status <stage>`` and noop_repro_s ``dvc repro <stage>`` with nothing changed (the listing
                stage runs, always_changed, and the fan-out stage must be skipped)
At ``--work-n`` it also runs one real shard job and reports the per-item work (probe + training copy, or parse +
mesh + render + writes). Each cost's growth exponent is the slope of a log-log least-squares fit over the sizes.
"""
from __future__ import annotations

import argparse
import datetime as dt
import json
import math
import os
import platform
import resource
import shutil
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))
from tests.helpers.workspace import copy_worktree, run, set_params  # noqa: E402

REAL = {"ssv2": 220_847, "deepcad": 178_238}
# Roots live beside the clone, not in it, as the README asks of real downloads: DVC walks the whole repo for
# dvc.yaml/.dvc files on every command, which at 220k files under data/ cost 1.7 s of each no-op.
STAGE = {"ssv2": ("ingest_ssv2", "ssv2", "ssv2_scale", "data/interim/ssv2_scale"),
         "deepcad": ("render_deepcad", "deepcad", "deepcad_scale", "data/processed/deepcad_scale")}
SLICE_NOTE = ".bench_scale_slice.json"
COSTS = ("plan_s", "plan_job_s", "slices_s", "startup_s", "dag_s", "merge_s", "listing_s", "commit_s",
         "noop_status_s", "noop_repro_s", "peak_mib")


def fanout(dataset: str):
    if dataset == "ssv2":
        from lib.ssv2.ingest import FANOUT
    else:
        from lib.deepcad.render_models import FANOUT
    return FANOUT


def child(mode: str, dataset: str, params: str = "params.yaml") -> None:
    """A measuring process in the clone, on the clone's code. ``plan``: plan + shard digests, then the slices the
    main Snakemake process writes for every shard; prints seconds and peak RSS as JSON. ``startup``: what a shard
    job does before its first item (import the stage, read and check its slice)."""
    sys.path.insert(0, os.getcwd())
    import importlib

    from lib.config import load_section

    fan = fanout(dataset)
    importlib.import_module(fan.entry)
    root = load_section(params, fan.source[0], fan.source[1]).root
    cfg = load_section(params, fan.config[0], fan.config[1])
    if mode == "startup":
        index, expected = 0, json.loads(Path(SLICE_NOTE).read_text())["shard0"]
        if fan.read_slice(root, cfg, index, expected) is None:
            raise SystemExit(f"no valid slice for shard 0 ({expected})")
        return
    t = time.perf_counter()
    plan, ident = fan.identity(root, cfg)
    plan_s = time.perf_counter() - t
    t = time.perf_counter()
    fan.write_slices(cfg, plan, ident, range(cfg.shards))
    slices_s = time.perf_counter() - t
    Path(SLICE_NOTE).write_text(json.dumps({"shard0": ident.shards[0]}))
    print(json.dumps({"plan_s": plan_s, "slices_s": slices_s, "items": len(plan.items),
                      "quarantined": len(plan.quarantine),
                      "peak_mib": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024}))


# --------------------------------------------------------------------------------------------------------------
# roots in the real layouts


def build_ssv2(clone: Path, root: Path, n: int) -> None:
    """Write an SSv2 root of ``n`` videos: hard links to 8 synthesised videos, label files of ``n`` entries."""
    from lib.ssv2.layout import LABEL_DIR, SPLIT_FILES, VIDEO_DIR, VIDEO_SUFFIX

    seed_root = clone / "data/raw/ssv2_seed"
    if not (seed_root / LABEL_DIR / "labels.json").is_file():
        templates = ["Pushing something from left to right", "Moving something up"]
        set_params(clone, {"synth_ssv2": {"out": "data/raw/ssv2_seed", "count": 8, "min_per_class": 0,
                                          "templates": templates}})
        run(["python", "-m", "stages.synth_ssv2", "--no-progress"], clone)
    labels = {s: json.loads((seed_root / LABEL_DIR / f).read_text()) for s, f in SPLIT_FILES.items()}
    seeds = [e for s in ("train", "validation") for e in labels[s]]
    videos = seed_root / VIDEO_DIR
    (root / VIDEO_DIR).mkdir(parents=True)
    (root / LABEL_DIR).mkdir()
    shutil.copy(seed_root / LABEL_DIR / "labels.json", root / LABEL_DIR / "labels.json")
    # Real SSv2 proportions: 168,913 train, 24,777 validation, 27,157 test.
    bounds = [("train", 0.7649), ("validation", 0.8771), ("test", 1.0)]
    out: dict[str, list] = {s: [] for s in SPLIT_FILES}
    for k in range(1, n + 1):
        split = next(s for s, b in bounds if k <= b * n)
        src = seeds[k % len(seeds)]
        out[split].append({"id": str(k)} if split == "test" else {**src, "id": str(k)})
        os.link(videos / f"{src['id']}{VIDEO_SUFFIX}", root / VIDEO_DIR / f"{k}{VIDEO_SUFFIX}")
    for split, name in SPLIT_FILES.items():
        (root / LABEL_DIR / name).write_text(json.dumps(out[split]))


def build_deepcad(clone: Path, root: Path, n: int) -> None:
    """Write a DeepCAD root of ``n`` models (the release's folder/id scheme): hard links to 8 synthesised JSONs."""
    from lib.deepcad.layout import CAD_JSON_DIR, SPLIT_FILE
    from lib.deepcad.synth import SynthDeepCADConfig, make_model, plan

    seeds = []
    for i, (_, family, _) in enumerate(plan(SynthDeepCADConfig(count=8))):
        path = root.parent / f"seed-{root.name}-{i}.json"
        path.write_text(json.dumps(make_model(0, i, family), indent=1))
        seeds.append(path)
    items = plan(SynthDeepCADConfig(count=n))
    for folder in sorted({mid.split("/")[0] for mid, _, _ in items}):
        (root / CAD_JSON_DIR / folder).mkdir(parents=True)
    for i, (mid, _, _) in enumerate(items):
        os.link(seeds[i % len(seeds)], root / CAD_JSON_DIR / f"{mid}.json")
    split = {s: [mid for mid, _, sp in items if sp == s] for s in ("train", "validation", "test")}
    (root / SPLIT_FILE).write_text(json.dumps(split))


# --------------------------------------------------------------------------------------------------------------
# outputs as the stage leaves them


def fabricate_outputs(dataset: str, clone: Path) -> None:
    """Write every shard file the plan names that is missing, with one real row (the stage's worker on the first
    item) copied per item, and one small distinct file per output the rows point at, packed into the shard's
    archive as the stage packs them (what DVC then tracks: one archive per shard, not one file per output)."""
    import pandas as pd

    from lib.archive import pack
    from lib.config import load_section
    from lib.shards import ARCHIVE_COLUMN, ARCHIVE_DIR, SHARD_DIR, STAGING_DIR, write_shard

    os.chdir(clone)
    fan = fanout(dataset)
    params = "params.yaml"
    root = Path(load_section(params, fan.source[0], fan.source[1]).root)
    cfg = load_section(params, fan.config[0], fan.config[1])
    plan, ident = fan.identity(root, cfg)
    worker = fan.worker(cfg)
    try:
        template = worker(root, plan.items[0])
    finally:
        getattr(worker, "close", lambda: None)()
    out = Path(cfg.out)
    by_shard: list[list] = [[] for _ in range(cfg.shards)]
    for it in plan.items:
        by_shard[it.shard].append(it)
    archived = fan.archived(cfg)
    for index, items in enumerate(by_shard):
        path = out / SHARD_DIR / ident.shard_file(index)
        packed = out / ARCHIVE_DIR / ident.archive_file(index)
        if path.is_file() and (packed.is_file() or not archived):
            continue
        base = out / STAGING_DIR / ident.shards[index] if archived else out
        rows = []
        for it in items:
            row = {**template, **fan.quarantine_row(it), "reason": None, "detail": None}
            files = _output_files(dataset, cfg, it.id, row)
            for rel in files:
                dst = base / rel
                dst.parent.mkdir(parents=True, exist_ok=True)
                dst.write_text(f"{rel}\n")
            if archived:
                row[ARCHIVE_COLUMN] = f"{ARCHIVE_DIR}/{packed.name}"
            rows.append(row)
        if archived:
            pack(base, packed)
            shutil.rmtree(base, ignore_errors=True)  # an empty shard wrote nothing
        write_shard(path, pd.DataFrame(rows, columns=fan.all_columns(cfg)), ident.shards[index])


def _output_files(dataset: str, cfg, item_id: str, row: dict) -> list[str]:
    """Point ``row`` at item ``item_id``'s own outputs; return their paths relative to ``cfg.out``."""
    if dataset == "ssv2":
        from lib.ssv2.ingest import COPY_DIR

        row["path"] = f"{COPY_DIR}/{item_id}{cfg.suffix}"
        return [row["path"]]
    from lib.deepcad.render_models import IMAGE_DIR, MESH_DIR, image_name

    files = []
    for v in cfg.views:
        row[f"image_{v}"] = image_name(item_id, v)
        files.append(f"{IMAGE_DIR}/{row[f'image_{v}']}")
    if cfg.save_meshes:
        row["mesh"] = f"{item_id}.ply"
        files.append(f"{MESH_DIR}/{row['mesh']}")
    return files


# --------------------------------------------------------------------------------------------------------------
# one size


def timed(cmd: list[str], cwd: Path) -> tuple[float, str]:
    t = time.perf_counter()
    proc = run(cmd, cwd)
    return time.perf_counter() - t, proc.stdout


def measure(dataset: str, clone: Path, n: int, shards: int, work: bool) -> dict:
    stage, section, root_name, out_rel = STAGE[dataset]
    root, out = clone.parent / "roots" / root_name, clone / out_rel
    root.parent.mkdir(parents=True, exist_ok=True)
    for p in (root, out):
        shutil.rmtree(p, ignore_errors=True)
    for p in root.parent.glob(f"seed-{root.name}-*.json"):
        p.unlink()
    t = time.perf_counter()
    (build_ssv2 if dataset == "ssv2" else build_deepcad)(clone, root, n)
    row: dict = {"n": n, "shards": shards, "build_s": round(time.perf_counter() - t, 2)}
    set_params(clone, {section: {"root": str(root)}, stage: {"out": out_rel, "shards": shards}})

    row["dag_s"], _ = timed(["snakemake", stage, "-n", "--quiet", "all"], clone)
    row["plan_job_s"], stdout = timed(["python", "-m", f"stages.{stage}", "--no-progress", "plan"], clone)
    shard_files = json.loads(stdout)["shard_files"]
    plan = run([sys.executable, __file__, "--child", "plan", dataset], clone).stdout.strip().splitlines()[-1]
    plan = json.loads(plan)
    row.update(plan_s=plan["plan_s"], slices_s=plan["slices_s"], peak_mib=plan["peak_mib"], items=plan["items"])
    row["startup_s"], _ = timed([sys.executable, __file__, "--child", "startup", dataset], clone)
    if work:  # one real shard job on its slice; per item = (job - start-up) / items
        digest = shard_files[0].rsplit("-", 1)[1].removesuffix(".parquet")
        job_s, _ = timed(["python", "-m", f"stages.{stage}", "--no-progress", "shard", "--index", "0",
                          "--digest", digest], clone)
        items = json.loads(stdout)["per_shard"].get("0", 0)
        row.update(work_items=items, work_job_s=round(job_s, 2),
                   work_per_item_s=round((job_s - row["startup_s"]) / max(items, 1), 4))
    t = time.perf_counter()
    run([sys.executable, __file__, "--fabricate", dataset], clone)
    row["fabricate_s"] = round(time.perf_counter() - t, 2)
    row["merge_s"], _ = timed(["python", "-m", f"stages.{stage}", "--no-progress", "merge"], clone)
    table = out / fanout(dataset).table
    row["manifest_mib"] = table.stat().st_size / 2**20
    # the root's listing (list_<dataset>, always_changed): the stage's DVC dependency in place of the root
    row["listing_s"], _ = timed(["python", "-m", "stages.list_source", section, "--no-progress"], clone)
    row["files_tracked"] = sum(len(f) for _, _, f in os.walk(out)) + 1  # the outputs and the listing
    row["files_under_root"] = sum(len(f) for _, _, f in os.walk(root))
    row["commit_s"], _ = timed(["dvc", "commit", "-f", "-q", f"list_{section}", stage], clone)
    row["noop_status_s"], status = timed(["dvc", "status", stage], clone)
    row["noop_repro_s"], repro = timed(["dvc", "repro", stage], clone)
    if f"Stage '{stage}' didn't change" not in repro:
        raise AssertionError(f"dvc repro {stage} was not a no-op:\n{repro[-2000:]}")
    row["status_output"] = status.strip().splitlines()[-1] if status.strip() else ""
    return {k: (round(v, 3) if isinstance(v, float) else v) for k, v in row.items()}


def exponent(rows: list[dict], key: str) -> float | None:
    """Slope of log(cost) on log(n), least squares; None with fewer than two positive points."""
    pts = [(math.log(r["n"]), math.log(r[key])) for r in rows if r.get(key, 0) > 0]
    if len(pts) < 2:
        return None
    mx = sum(x for x, _ in pts) / len(pts)
    my = sum(y for _, y in pts) / len(pts)
    sxx = sum((x - mx) ** 2 for x, _ in pts)
    return round(sum((x - mx) * (y - my) for x, y in pts) / sxx, 3) if sxx else None


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--sizes", default="1000,10000,100000,real", help="comma list of N; 'real' = the real size")
    ap.add_argument("--datasets", default="ssv2,deepcad")
    ap.add_argument("--shards", type=int, default=512, help="shard count (the README's for the real datasets)")
    ap.add_argument("--work-n", type=int, default=10000, help="size at which one real shard job runs (0: never)")
    ap.add_argument("--json", type=Path, help="write results here (updated after every size)")
    ap.add_argument("--child", nargs=2, help=argparse.SUPPRESS)
    ap.add_argument("--fabricate", help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.child:
        return child(*args.child)
    if args.fabricate:
        sys.path.insert(0, os.getcwd())  # the clone's code: its digests name the shard files
        return fabricate_outputs(args.fabricate, Path.cwd())

    result: dict = {"device": f"{platform.processor() or platform.machine()}, {os.cpu_count()} cores (CPU)",
                    "command": "python benchmarks/bench_scale.py " + " ".join(sys.argv[1:]),
                    "date": dt.date.today().isoformat(), "shards": args.shards}
    with tempfile.TemporaryDirectory(prefix="bench-scale-") as tmp:
        clone = copy_worktree(Path(tmp) / "clone")
        for dataset in args.datasets.split(","):
            rows = result.setdefault(dataset, [])
            for size in args.sizes.split(","):
                n = REAL[dataset] if size == "real" else int(size)
                row = measure(dataset, clone, n, args.shards, work=n == args.work_n)
                rows.append(row)
                print(json.dumps({"dataset": dataset, **row}), flush=True)
                result.setdefault("exponents", {})[dataset] = {k: exponent(rows, k) for k in COSTS}
                if args.json:
                    args.json.parent.mkdir(parents=True, exist_ok=True)
                    args.json.write_text(json.dumps(result, indent=1) + "\n")
    print(json.dumps(result["exponents"], indent=1))


if __name__ == "__main__":
    main()
