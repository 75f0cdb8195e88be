"""SeedVR2's loss ablation (paper Table 3) for train_apt: four loss recipes on the same data, steps and seed, each
trained and evaluated through the stages, then one table of PSNR / SSIM / temporal error.

    python benchmarks/apt_ablation.py OUT_DIR --params BASE.yaml [--steps N] [--max-minutes M] [--parallel K]
        [--loader-workers W] [--rows NAME,...] [--dry-run] [section.key=value ...]

BASE.yaml is a params file whose data stages (synth_ssv2, ingest_ssv2, validate_ssv2) already ran, e.g. the apt.yaml
benchmarks/gpu_runs.sh writes (GPU preset, realesrgan_video degradations). Each row is BASE with train_apt.loss
changed, in the paper's order:

  ns_r1        non-saturating GAN + exact R1 (lazy, weight 1), no L1, no feature matching
  rpgan_r1r2   RpGAN + approximate R1 and R2 (weights 1000), no L1, no feature matching
  rpgan_l1     + L1 (recon) 0.1
  rpgan_l1_fm  + L1 0.1 + feature matching 0.1 (SeedVR2's final loss)

plus, for every row, train_apt.steps=N (default: BASE's), train_apt.max_minutes=M (a cap; a row it stops is marked),
tracker none, and paths of its own under OUT_DIR/<row>/: params.yaml, model/ (train_apt.out_dir), eval_apt/
(eval_apt.report_dir), loader/stable.json (W loader workers, PyAV), run.log and timings.json. Trailing
section.key=value pairs (benchmarks/gpu_params.py's syntax) apply to every row, before the row's own loss keys.
Rows run `benchmarks/run_stages.py train_apt eval_apt`, K at a time (on one GPU each gets a share of it: compare
rows by steps, not by wall time). Rerunning with the same OUT_DIR resumes: train_apt picks up each row's checkpoint.

With DVC (a workstation), the same grid as queued experiments instead, one per row, in this workspace:

    python benchmarks/apt_ablation.py --dvc [--steps N] [--max-minutes M] [--rows ...] [-S-style key=value ...]
    dvc queue start -j 1 && dvc exp show --drop '.*' --keep '^(Experiment|summary\\.apt\\..*)$'

queues `dvc exp run --queue --name apt-<row> -S train_apt.loss.<key>=<value> ... eval_apt` (the trailing pairs go in
as -S, e.g. `train_apt=gpu_h200 train_apt.degrade.kind=realesrgan_video`); --dry-run prints the commands.

Writes OUT_DIR/ablation.json: {"steps", "max_minutes", "rows": [{name, label, loss, psnr, ssim, temporal_error (G,
the raw weights), g_ema: {psnr, ssim, temporal_error}, bicubic: {...}, flicker_ratio, steps, stop_reason, minutes,
collapse: {fake_std, real_std, d_real_logit, d_fake_logit}}]}; a row that failed has `error` instead of metrics.
benchmarks/apt_gpu_report.py puts it into reports/benchmarks/apt_gpu.json.
"""
from __future__ import annotations

import argparse
import json
import subprocess
import sys
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import yaml

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from gpu_params import override, parse_override  # noqa: E402  (benchmarks/ is on sys.path when run as a script)

from lib.io import atomic_write_json  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]

# (name, label, train_apt.loss keys); every row sets all the keys that differ between rows, so none inherits them
ROWS: list[tuple[str, str, dict[str, Any]]] = [
    ("ns_r1", "NS + R1", {"kind": "ns_r1", "r1": 1.0, "r2": 0.0, "recon": 0.0, "fm": 0.0}),
    ("rpgan_r1r2", "RpGAN + R1 + R2", {"kind": "rpgan_r1r2", "r1": 1000.0, "r2": 1000.0, "recon": 0.0, "fm": 0.0}),
    ("rpgan_l1", "+ L1", {"kind": "rpgan_r1r2", "r1": 1000.0, "r2": 1000.0, "recon": 0.1, "fm": 0.0}),
    ("rpgan_l1_fm", "+ L1 + FM", {"kind": "rpgan_r1r2", "r1": 1000.0, "r2": 1000.0, "recon": 0.1, "fm": 0.1}),
]
ROW_NAMES = [name for name, _, _ in ROWS]


def row_params(base: dict[str, Any], name: str, out_dir: Path, *, steps: int | None, max_minutes: float | None,
               overrides: list[tuple[str, Any]]) -> dict[str, Any]:
    """BASE params for row ``name``: the shared overrides, then the row's loss keys and its own paths."""
    params = json.loads(json.dumps(base))  # a deep copy that also rejects what YAML could not have held
    for key, value in overrides:
        override(params, key, value)
    loss = dict(ROWS[ROW_NAMES.index(name)][2])
    row_dir = out_dir / name
    sets: list[tuple[str, Any]] = [(f"train_apt.loss.{k}", v) for k, v in loss.items()]
    sets += [("train_apt.out_dir", str(row_dir / "model")), ("train_apt.tracker", "none"),
             ("eval_apt.report_dir", str(row_dir / "eval_apt")), ("bench_loader.out", str(row_dir / "loader"))]
    if steps is not None:
        sets.append(("train_apt.steps", steps))
    if max_minutes is not None:
        sets.append(("train_apt.max_minutes", max_minutes))
    for key, value in sets:
        if key.split(".")[0] not in params:
            params[key.split(".")[0]] = {}
        override(params, key, value)
    return params


def run_row(name: str, out_dir: Path, loader_workers: int) -> int:
    """Train and evaluate one row through run_stages.py; its output goes to OUT_DIR/<row>/run.log."""
    row_dir = out_dir / name
    cmd = [sys.executable, str(ROOT / "benchmarks" / "run_stages.py"), "--params", str(row_dir / "params.yaml"),
           "--loader-workers", str(loader_workers), "--loader-backend", "pyav",
           "--timings", str(row_dir / "timings.json"), "train_apt", "eval_apt"]
    with open(row_dir / "run.log", "a") as log:
        log.write(f"== {' '.join(cmd)}\n")
        log.flush()
        code = subprocess.run(cmd, cwd=ROOT, stdout=log, stderr=subprocess.STDOUT).returncode
    print(f"== {name}: exit {code} ({row_dir / 'run.log'})", flush=True)
    return code


def _scores(block: dict[str, Any]) -> dict[str, float]:
    return {k: round(float(block[k]), 5) for k in ("psnr", "ssim", "temporal_error")}


def row_record(out_dir: Path, name: str) -> dict[str, Any]:
    """One row of ablation.json from OUT_DIR/<row>/: its eval_apt metrics and train_apt's final metrics."""
    label, loss = ROWS[ROW_NAMES.index(name)][1:]
    row_dir = out_dir / name
    record: dict[str, Any] = {"name": name, "label": label, "loss": loss}
    metrics_path, final_path = row_dir / "eval_apt" / "metrics.json", row_dir / "model" / "final" / "metrics.json"
    if not metrics_path.is_file() or not final_path.is_file():
        missing = final_path if not final_path.is_file() else metrics_path
        record["error"] = f"{missing} missing: the row did not finish; see {row_dir / 'run.log'}"
        return record
    metrics = json.loads(metrics_path.read_text())
    final = json.loads(final_path.read_text())
    record.update(_scores(metrics["G"]))
    record["g_ema"] = _scores(metrics["G_ema"])
    record["bicubic"] = _scores(metrics["bicubic"])
    ratio = metrics["G"].get("flicker", {}).get("ratio")
    record["flicker_ratio"] = None if ratio is None else round(float(ratio), 4)
    record["steps"] = int(final["step"])
    record["stop_reason"] = final.get("stop_reason")
    timings = row_dir / "timings.json"
    if timings.is_file():
        record["minutes"] = round(json.loads(timings.read_text())["stages"].get("train_apt", 0.0) / 60, 2)
    record["collapse"] = {k: (None if final.get(src) is None else round(float(final[src]), 5)) for k, src in (
        ("fake_std", "G/fake_std"), ("real_std", "G/real_std"),
        ("d_real_logit", "d/real_logit"), ("d_fake_logit", "d/fake_logit"))}
    return record


def collect(out_dir: Path, names: list[str], steps: int | None, max_minutes: float | None) -> dict[str, Any]:
    """ablation.json's content for rows ``names`` (in the paper's order)."""
    ordered = [n for n in ROW_NAMES if n in names]
    return {"steps": steps, "max_minutes": max_minutes, "rows": [row_record(out_dir, n) for n in ordered]}


def dvc_commands(names: list[str], *, steps: int | None, max_minutes: float | None,
                 sets: list[str]) -> list[list[str]]:
    """`dvc exp run --queue` argv of each row: the shared -S pairs first, then the row's loss keys."""
    common = [f"train_apt.steps={steps}"] * (steps is not None) + [f"train_apt.max_minutes={max_minutes}"] * (
        max_minutes is not None) + sets
    cmds = []
    for name in [n for n in ROW_NAMES if n in names]:
        loss = [f"train_apt.loss.{k}={v}" for k, v in ROWS[ROW_NAMES.index(name)][2].items()]
        cmd = ["dvc", "exp", "run", "--queue", "--name", f"apt-{name.replace('_', '-')}"]
        for pair in common + loss:
            cmd += ["-S", pair]
        cmds.append(cmd + ["eval_apt"])
    return cmds


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("out_dir", type=Path, nargs="?", help="where the rows run (not with --dvc)")
    ap.add_argument("overrides", nargs="*", metavar="section.key=yaml_value", help="applied to every row")
    ap.add_argument("--params", help="the base params file (its data stages already ran)")
    ap.add_argument("--dvc", action="store_true", help="queue the rows as DVC experiments in this workspace")
    ap.add_argument("--steps", type=int, help="train_apt.steps of every row (default: the base's)")
    ap.add_argument("--max-minutes", type=float, help="train_apt.max_minutes of every row: a cap, marked if hit")
    ap.add_argument("--parallel", type=int, default=1, help="rows at a time (default: %(default)s)")
    ap.add_argument("--loader-workers", type=int, default=2, help="loader workers of each row (default: %(default)s)")
    ap.add_argument("--rows", default=",".join(ROW_NAMES), help="comma-separated rows (default: all four)")
    ap.add_argument("--dry-run", action="store_true", help="write the rows' params files and stop")
    args = ap.parse_intermixed_args()
    names = [n for n in args.rows.split(",") if n]
    unknown = [n for n in names if n not in ROW_NAMES]
    if unknown:
        ap.error(f"unknown row {unknown[0]!r} (rows: {', '.join(ROW_NAMES)})")
    if args.parallel < 1 or args.loader_workers < 0:
        ap.error("--parallel must be >= 1 and --loader-workers >= 0")
    if args.dvc:
        # the positionals are all -S pairs here; argparse gives the first one to out_dir
        sets = ([str(args.out_dir)] if args.out_dir is not None else []) + args.overrides
        for cmd in dvc_commands(names, steps=args.steps, max_minutes=args.max_minutes, sets=sets):
            print(" ".join(cmd), flush=True)
            if not args.dry_run:
                code = subprocess.run(cmd, cwd=ROOT).returncode
                if code:
                    return code
        if not args.dry_run:
            print("== queued; run them with `dvc queue start -j 1`, compare with `dvc exp show --drop '.*' "
                  "--keep '^(Experiment|summary\\.apt\\..*)$'`")
        return 0
    if args.out_dir is None or args.params is None:
        ap.error("give OUT_DIR and --params (or --dvc)")
    if not Path(args.params).is_file():
        ap.error(f"{args.params}: params file not found")
    base = yaml.safe_load(Path(args.params).read_text())
    out_dir = args.out_dir.resolve()
    try:
        overrides = [parse_override(pair) for pair in args.overrides]
        for name in names:
            params = row_params(base, name, out_dir, steps=args.steps, max_minutes=args.max_minutes,
                                overrides=overrides)
            (out_dir / name).mkdir(parents=True, exist_ok=True)
            (out_dir / name / "params.yaml").write_text(yaml.safe_dump(params, sort_keys=False))
    except (ValueError, yaml.YAMLError) as err:
        ap.error(str(err))
    print(f"== rows {', '.join(names)}: params under {out_dir}", flush=True)
    if args.dry_run:
        return 0
    start = time.perf_counter()
    with ThreadPoolExecutor(max_workers=args.parallel) as pool:
        codes = list(pool.map(lambda n: run_row(n, out_dir, args.loader_workers), names))
    result = collect(out_dir, names, args.steps, args.max_minutes)
    result["wall_minutes"] = round((time.perf_counter() - start) / 60, 2)
    result["parallel"] = args.parallel
    atomic_write_json(out_dir / "ablation.json", result)
    for row in result["rows"]:
        if "error" in row:
            print(f"{row['label']:<16} {row['error']}")
        else:
            print(f"{row['label']:<16} PSNR {row['psnr']:.3f} (bicubic {row['bicubic']['psnr']:.3f}, EMA "
                  f"{row['g_ema']['psnr']:.3f})  SSIM {row['ssim']:.4f}  temporal {row['temporal_error']:.5f}  "
                  f"steps {row['steps']} ({row['stop_reason']})")
    return max(codes, default=0)


if __name__ == "__main__":
    sys.exit(main())
