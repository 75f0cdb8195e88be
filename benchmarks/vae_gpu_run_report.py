"""Record a video VAE GPU run (benchmarks/gpu_runs.sh RUNS=vae) into the GPU report: the `"run"` key of
reports/benchmarks/vae_gpu.json and reports/benchmarks/vae_gpu_run.md with eval_vae's table and strips.

    python benchmarks/vae_gpu_run_report.py RUN_DIR [--report-dir reports/benchmarks] [--device NAME]
        [--command CMD] [--date YYYY-MM-DD]

RUN_DIR is gpu_runs.sh's OUT_DIR (or an unpacked copy of it): vae.yaml (the params the run used),
vae_train_curriculum.json (run_stages timings; `minutes` is train_curriculum's wall time, summed over the
timings files given with --timings when the run was split over several calls), train_curriculum_final_metrics.json
(steps, stop reason) and eval_vae/ (metrics.json, strips). `"run"` gets
`{"steps", "minutes", "clips", "eval_clips", "psnr": {"<resolution>": {"vae", "baseline"}}, ...}` where the
baseline is eval_vae's equal-values bicubic; `beats_baseline_by_1db` says whether the issue's goal was met.
"""
from __future__ import annotations

import argparse
import json
import shutil
import sys
from pathlib import Path

import yaml

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from lib.io import atomic_write_json, atomic_write_text  # noqa: E402

STAGE = "train_curriculum"


def run_record(run_dir: Path, timings: list[Path]) -> dict:
    """Return the `"run"` record of the run in ``run_dir`` (see the module docstring)."""
    params = yaml.safe_load((run_dir / "vae.yaml").read_text())
    final = json.loads((run_dir / f"{STAGE}_final_metrics.json").read_text())
    video = json.loads((run_dir / "eval_vae" / "metrics.json").read_text())["video"]
    seconds = sum(json.loads(p.read_text())["stages"].get(STAGE, 0.0) for p in timings)
    phases = params[STAGE]["curriculum"]["phases"]
    psnr, gains = {}, {}
    for point in video["points"]:
        row, base = video[STAGE][point], video[STAGE][point]["bicubic_values"]
        resolution = point.split("px")[0]  # eval_vae's "<res>px_<T>f"
        psnr[resolution] = {"vae": round(row["vae"]["psnr"], 3), "baseline": round(base["psnr"], 3),
                            "frames": int(point.split("_")[1].rstrip("f")),
                            "ssim_vae": round(row["vae"]["ssim"], 4), "ssim_baseline": round(base["ssim"], 4)}
        gains[resolution] = row["vae"]["psnr"] - base["psnr"]
    return {
        "steps": int(final["step"]),
        "stop_reason": final.get("stop_reason"),
        "phase_steps": {p["name"]: p["steps"] for p in phases},
        "phase_reached": int(final.get("curriculum/phase", len(phases) - 1)),
        "minutes": round(seconds / 60, 2),
        "clips": int(params["synth_ssv2"]["count"]),
        "clip_height": int(params["synth_ssv2"]["height"]),
        "eval_clips": int(video["clips"]),
        "psnr": psnr,
        "beats_baseline_by_1db": all(g >= 1.0 for g in gains.values()),
        "val_psnr_final": final.get("val/psnr"),
    }


def markdown(run: dict, meta: dict, strips: list[str]) -> str:
    lines = ["# Video VAE GPU training run through the stages (issue 12)", "",
             f"Device: {meta['device']}. Date: {meta['date']}. Command: `{meta['command']}`.", "",
             f"{run['clips']} SSv2-format clips rendered {run['clip_height']} px high by synth_ssv2; the GPU preset's "
             f"curriculum with phase steps {run['phase_steps']} (stopped by `{run['stop_reason']}` at step "
             f"{run['steps']}, last phase reached: {run['phase_reached']}), {run['minutes']} minutes of training; "
             f"eval_vae on {run['eval_clips']} held-out clips at each phase's resolution.", "",
             "| resolution | frames | VAE PSNR (dB) | bicubic, equal values (dB) | gain (dB) | VAE SSIM "
             "| bicubic SSIM |", "|---|---|---|---|---|---|---|"]
    for res, row in run["psnr"].items():
        gain = row["vae"] - row["baseline"]
        lines.append(f"| {res} px | {row['frames']} | {row['vae']:.2f} | {row['baseline']:.2f} | {gain:+.2f} "
                     f"| {row['ssim_vae']:.3f} | {row['ssim_baseline']:.3f} |")
    if run["beats_baseline_by_1db"]:
        verdict = "The VAE beats the bicubic baseline by at least 1 dB at every resolution."
    else:
        verdict = ("**A loss against the goal**: the VAE does not beat the equal-values bicubic baseline by 1 dB "
                   "at every resolution (see the gains above).")
    lines += ["", verdict, ""]
    lines += [f"![{s}](vae_gpu_run/{s})" for s in strips]
    return "\n".join(lines) + "\n"


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("run_dir", type=Path)
    ap.add_argument("--report-dir", type=Path, default=Path("reports/benchmarks"))
    ap.add_argument("--timings", type=Path, nargs="*", help="run_stages timings files (default RUN_DIR's)")
    ap.add_argument("--device", required=True)
    ap.add_argument("--command", required=True)
    ap.add_argument("--date", required=True)
    ap.add_argument("--notes", default=None, help="what limits the run, in a sentence or two")
    args = ap.parse_args()
    timings = args.timings or [args.run_dir / f"vae_{STAGE}.json"]
    run = run_record(args.run_dir, timings)
    run.update({"device": args.device, "command": args.command, "date": args.date})
    if args.notes:
        run["notes"] = args.notes
    strip_dir = args.report_dir / "vae_gpu_run"
    strip_dir.mkdir(parents=True, exist_ok=True)
    strips = sorted(p.name for p in (args.run_dir / "eval_vae").glob(f"strip_{STAGE}_*.png"))
    for name in strips:
        shutil.copy2(args.run_dir / "eval_vae" / name, strip_dir / name)
    report_json = args.report_dir / "vae_gpu.json"
    data = json.loads(report_json.read_text()) if report_json.exists() else {}
    data["run"] = run
    atomic_write_json(report_json, data)
    md = markdown(run, run, strips) + ("" if not args.notes else f"\n{args.notes}\n")
    atomic_write_text(args.report_dir / "vae_gpu_run.md", md)
    print(md)


if __name__ == "__main__":
    main()
