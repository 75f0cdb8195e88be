"""Write cad_vlm_gpu.json and cad_vlm_gpu.md from a finished image -> CAD-code run (benchmarks/gpu_cad_run.sh).

    python benchmarks/cad_vlm_gpu_report.py --params OUT/cad.yaml --timings OUT/cad_timings.json --out OUT

Reads eval_cad_vlm's metrics.json (its report_dir in the params file), render_deepcad's summary.json and the
chain's timings; writes ``<out>/cad_vlm_gpu.json`` with issue 14's keys, ``{"models", "minutes", "model",
"nn_retrieval", "nn_encoder", ...}`` (each method with the harness's ``acc_cmd, acc_param, median_cd,
invalid_rate, mean_iou, median_iou``), and ``<out>/cad_vlm_gpu.md``: the table, and whether the model beats both
retrieval baselines on mean IoU with invalid <= 5%, said as a loss with the numbers when it does not.
"""
from __future__ import annotations

import argparse
import datetime as dt
import json
import sys
from pathlib import Path

import yaml

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from benchmarks.device_name import gpu_name  # noqa: E402
from lib.io import read_json  # noqa: E402

KEYS = ("acc_cmd", "acc_param", "median_cd", "invalid_rate", "mean_iou", "median_iou")
METHODS = ("model", "nn_retrieval", "nn_encoder", "most_frequent", "quantised_truth")
MAX_INVALID = 0.05


def build(params: dict, timings: dict) -> dict:
    metrics = read_json(Path(params["eval_cad_vlm"]["report_dir"]) / "metrics.json")
    render = read_json(Path(params["render_deepcad"]["out"]) / "summary.json")
    missing = [m for m in METHODS if m not in metrics]
    if missing:
        raise SystemExit(f"eval_cad_vlm metrics lack {', '.join(missing)}: run eval_cad_vlm to the end first")
    report = {"device": gpu_name() or "CPU", "date": dt.date.today().isoformat(),
              "command": "bash benchmarks/gpu_cad_run.sh " + " ".join(timings.get("argv", [])),
              "models": render["models"], "test_images": metrics.get("n"),
              "minutes": timings["stages"].get("train_cad_vlm", 0.0) / 60,
              "stage_seconds": timings["stages"],
              **{m: {k: metrics[m].get(k) for k in KEYS} for m in METHODS}}
    best = report["best_retrieval"] = max(("nn_retrieval", "nn_encoder"), key=lambda m: report[m]["mean_iou"])
    model = report["model"]
    report["beats_retrieval"] = bool(model["mean_iou"] > report[best]["mean_iou"]
                                     and model["invalid_rate"] <= MAX_INVALID)
    return report


def markdown(r: dict) -> str:
    rows = [f"| {m} | " + " | ".join("–" if r[m][k] is None else f"{r[m][k]:.4g}" for k in KEYS) + " |"
            for m in METHODS]
    best = r["best_retrieval"]
    verdict = (f"The model **beats both retrieval baselines**: mean IoU {r['model']['mean_iou']:.4f} against "
               f"{r[best]['mean_iou']:.4f} ({best}), invalid {r['model']['invalid_rate']:.1%}."
               if r["beats_retrieval"] else
               f"The model **does not beat retrieval** (a loss): mean IoU {r['model']['mean_iou']:.4f} against "
               f"{r[best]['mean_iou']:.4f} ({best}), invalid {r['model']['invalid_rate']:.1%} (goal: above both, "
               f"invalid <= {MAX_INVALID:.0%}).")
    return "\n".join([
        "# Image -> CAD code on a GPU: the trained model against retrieval", "",
        f"{r['date']}, {r['device']}, `{r['command']}`: {r['models']} synthetic DeepCAD models rendered, "
        f"{r['test_images']} held-out test images, {r['minutes']:.1f} minutes of train_cad_vlm "
        f"(stage seconds: {', '.join(f'{k} {v:.0f}' for k, v in r['stage_seconds'].items())}).", "",
        "| method | " + " | ".join(KEYS) + " |", "|---|" + "---:|" * len(KEYS), *rows, "",
        verdict, "",
        "median_cd is Chamfer distance x10^3 on 2,000 points after DeepCAD's normalisation; acc_param counts a value "
        "within the tolerance of eval_cad_vlm.param_tolerance levels (lib/eval). quantised_truth is the ground "
        "truth through the tokenizer: the ceiling of the representation.", ""])


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--params", type=Path, required=True)
    ap.add_argument("--timings", type=Path, required=True, help="benchmarks/run_stages.py --timings output")
    ap.add_argument("--out", type=Path, required=True, help="folder of cad_vlm_gpu.json / .md")
    ap.add_argument("--argv", nargs="*", default=[], help="the run's arguments, for the command line in the report")
    args = ap.parse_args()
    params = yaml.safe_load(args.params.read_text())
    timings = {**read_json(args.timings), "argv": args.argv}
    report = build(params, timings)
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / "cad_vlm_gpu.json").write_text(json.dumps(report, indent=1) + "\n")
    (args.out / "cad_vlm_gpu.md").write_text(markdown(report))
    print(markdown(report))


if __name__ == "__main__":
    main()
