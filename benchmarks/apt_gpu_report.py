"""Record APT's GPU training run and its loss ablation into the GPU report: the `"run"` and `"ablation"` keys of
reports/benchmarks/apt_gpu.json and reports/benchmarks/apt_gpu_run.md (tables and eval_apt's strips).

    python benchmarks/apt_gpu_report.py [--run RUN_DIR [--timings T.json ...]] [--ablation ABLATION_DIR]
        --device NAME --command CMD --date YYYY-MM-DD [--notes TEXT] [--report-dir reports/benchmarks]

RUN_DIR is benchmarks/gpu_runs.sh's OUT_DIR (or an unpacked copy): apt.yaml (the run's params),
apt_train_apt.json (run_stages timings; `minutes` is train_apt's wall time summed over the --timings files when the
run was split over several calls), train_apt_final_metrics.json and eval_apt/ (metrics.json, strip.png). `"run"`
gets `{"minutes", "psnr_bicubic", "psnr_g", "psnr_g_ema", "ssim_*", "temporal_error_*", "steps", ...}` and
`beats_bicubic_by_1db`: whether G or EMA-G beats bicubic by >= 1 dB PSNR on the held-out clips (the issue's goal).
ABLATION_DIR is benchmarks/apt_ablation.py's OUT_DIR: its ablation.json becomes `"ablation"` (a list of rows
`{"name", "psnr", "ssim", "temporal_error", ...}` in SeedVR2's Table 3 order).
"""
from __future__ import annotations

import argparse
import json
import shutil
import sys
from pathlib import Path
from typing import Any

import yaml

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from lib.io import atomic_write_json, atomic_write_text  # noqa: E402

STAGE = "train_apt"


def run_record(run_dir: Path, timings: list[Path]) -> dict[str, Any]:
    """Return the `"run"` record of the gpu_runs.sh APT run in ``run_dir`` (see the module docstring)."""
    params = yaml.safe_load((run_dir / "apt.yaml").read_text())
    final = json.loads((run_dir / f"{STAGE}_final_metrics.json").read_text())
    metrics = json.loads((run_dir / "eval_apt" / "metrics.json").read_text())
    seconds = sum(json.loads(p.read_text())["stages"].get(STAGE, 0.0) for p in timings)
    train = params[STAGE]
    record: dict[str, Any] = {"minutes": round(seconds / 60, 2)}
    for key, name in (("bicubic", "bicubic"), ("g", "G"), ("g_ema", "G_ema")):
        for metric in ("psnr", "ssim", "temporal_error"):
            record[f"{metric}_{key}"] = round(float(metrics[name][metric]), 5)
    gain = max(record["psnr_g"], record["psnr_g_ema"]) - record["psnr_bicubic"]
    record.update({
        "gain_db": round(gain, 3),
        "beats_bicubic_by_1db": gain >= 1.0,
        "flicker_ratio": {k: metrics[n]["flicker"]["ratio"] for k, n in (("bicubic", "bicubic"), ("g", "G"),
                                                                         ("g_ema", "G_ema"))},
        "steps": int(final["step"]),
        "stop_reason": final.get("stop_reason"),
        "batch_size": int(train["batch_size"]),
        "clips": int(params["synth_ssv2"]["count"]),
        "eval_clips": int(metrics["clips"]),
        "eval_frames": int(metrics["frames"]),
        "crop": int(metrics["crop"]),
        "loss": train["loss"],
        "degrade": train["degrade"]["kind"],
    })
    return record


def ablation_rows(ablation_dir: Path) -> list[dict[str, Any]]:
    """The rows of ``ablation_dir``/ablation.json (benchmarks/apt_ablation.py), in the order written there."""
    return json.loads((ablation_dir / "ablation.json").read_text())["rows"]


def _num(value: float | None, fmt: str) -> str:
    return "—" if value is None else format(value, fmt)


def _meta(meta: dict[str, Any]) -> str:
    return f"Device: {meta['device']}. Date: {meta['date']}. Command: `{meta['command']}`."


def markdown(data: dict[str, Any], strips: list[str]) -> str:
    """apt_gpu_run.md from apt_gpu.json's `"run"` and `"ablation"` (either may be missing)."""
    run, rows = data.get("run"), data.get("ablation")
    lines = ["# APT on the GPU: the training run and SeedVR2's loss ablation (issue 13)", ""]
    if run is not None:
        weights = ", ".join(f"{k} {v}" for k, v in run["loss"].items() if k != "kind")
        lines += ["## The run", "", _meta(run), "",
                  f"{run['clips']} SSv2-format clips (synth_ssv2), `{run['degrade']}` degradations, loss "
                  f"`{run['loss'].get('kind')}` (weights {weights}), "
                  f"batch {run['batch_size']}: {run['steps']} steps in {run['minutes']} minutes of training "
                  f"(stopped by `{run['stop_reason']}`); eval_apt on {run['eval_clips']} held-out clips "
                  f"({run['eval_frames']} frames, {run['crop']} px).", "",
                  "| | PSNR (dB) | SSIM | temporal error | chunk-border flicker ratio |", "|---|---:|---:|---:|---:|"]
        for key, label in (("bicubic", "bicubic (baseline)"), ("g", "G"), ("g_ema", "EMA-G")):
            lines.append(f"| {label} | {run[f'psnr_{key}']:.3f} | {run[f'ssim_{key}']:.4f} | "
                         f"{run[f'temporal_error_{key}']:.5f} | {_num(run['flicker_ratio'][key], '.3f')} |")
        verdict = (f"G (or EMA-G) beats bicubic by {run['gain_db']:+.2f} dB: the goal (>= 1 dB) is met."
                   if run["beats_bicubic_by_1db"] else
                   f"**A loss against the goal**: the best of G and EMA-G is {run['gain_db']:+.2f} dB against "
                   "bicubic, short of +1 dB.")
        lines += ["", verdict, ""] + ([run["notes"], ""] if run.get("notes") else [])
    if rows is not None:
        meta = data.get("ablation_meta") or {}
        lines += ["## Loss ablation (SeedVR2 Table 3 order)", "", _meta(meta), "",
                  "Same data, seed and steps per row; G's raw weights (EMA-G beside). Bicubic is the same for every "
                  "row (same held-out clips and degradations).", "",
                  "| row | loss | steps | PSNR G | PSNR EMA-G | SSIM G | temporal error G | G/real std | "
                  "Δ PSNR vs bicubic |", "|---|---|---:|---:|---:|---:|---:|---:|---:|"]
        for row in rows:
            loss = ", ".join(f"{k} {v}" for k, v in row["loss"].items())
            if "error" in row:
                lines.append(f"| {row['label']} | {loss} | failed: {row['error']} | | | | | | |")
                continue
            c = row["collapse"]
            std = None if not c.get("fake_std") or not c.get("real_std") else c["fake_std"] / c["real_std"]
            lines.append(f"| {row['label']} | {loss} | {row['steps']} ({row['stop_reason']}) | {row['psnr']:.3f} | "
                         f"{row['g_ema']['psnr']:.3f} | {row['ssim']:.4f} | {row['temporal_error']:.5f} | "
                         f"{_num(std, '.3f')} | {row['psnr'] - row['bicubic']['psnr']:+.3f} |")
        base = next((r["bicubic"] for r in rows if "bicubic" in r), None)
        if base is not None:
            lines += ["", f"Bicubic: PSNR {base['psnr']:.3f} dB, SSIM {base['ssim']:.4f}, temporal error "
                          f"{base['temporal_error']:.5f}. G/real std: the std of G's output over the std of the "
                          "HQ frames in the last logged step (far from 1: flat or blown-up outputs).", ""]
        lines += [meta["notes"], ""] if meta.get("notes") else []
    lines += [f"![{s}](apt_gpu_run/{s})" for s in strips]
    return "\n".join(lines) + "\n"


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--run", type=Path, help="gpu_runs.sh's OUT_DIR of the APT run")
    ap.add_argument("--timings", type=Path, nargs="*", help="run_stages timings files (default RUN_DIR's)")
    ap.add_argument("--ablation", type=Path, help="apt_ablation.py's OUT_DIR")
    ap.add_argument("--report-dir", type=Path, default=Path("reports/benchmarks"))
    ap.add_argument("--device", required=True)
    ap.add_argument("--command", required=True)
    ap.add_argument("--date", required=True)
    ap.add_argument("--notes", default=None, help="what limits the results, in a sentence or two")
    args = ap.parse_args()
    if args.run is None and args.ablation is None:
        ap.error("give --run, --ablation or both")
    meta = {"device": args.device, "command": args.command, "date": args.date,
            **({"notes": args.notes} if args.notes else {})}
    report_json = args.report_dir / "apt_gpu.json"
    data = json.loads(report_json.read_text()) if report_json.exists() else {}
    notes = data.setdefault("notes", {})
    strip_dir = args.report_dir / "apt_gpu_run"
    copies: dict[str, Path] = {}
    if args.run is not None:
        data["run"] = {**run_record(args.run, args.timings or [args.run / f"apt_{STAGE}.json"]), **meta}
        notes.pop("run", None)
        copies["run_strip.png"] = args.run / "eval_apt" / "strip.png"
    if args.ablation is not None:
        data["ablation"] = ablation_rows(args.ablation)
        data["ablation_meta"] = meta
        notes.pop("ablation", None)
        copies.update({f"ablation_{r['name']}_strip.png": args.ablation / r["name"] / "eval_apt" / "strip.png"
                       for r in data["ablation"]})
    for name, src in copies.items():
        if src.is_file():
            strip_dir.mkdir(parents=True, exist_ok=True)
            shutil.copy2(src, strip_dir / name)
    atomic_write_json(report_json, data)
    strips = sorted(p.name for p in strip_dir.glob("*.png")) if strip_dir.is_dir() else []
    md = markdown(data, strips)
    atomic_write_text(args.report_dir / "apt_gpu_run.md", md)
    print(md)


if __name__ == "__main__":
    main()
