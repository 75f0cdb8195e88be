"""Stage validate_deepcad: check renders and conversations, write a report with plots, fail on thresholds.

Reads <render_deepcad.out>/models.parquet, quarantine.json and images/, and
<build_cad_conversations.out>/{train,val,test}.json and summary.json. Opens every referenced image
(exists, decodes, size, colour mode, PNG bytes, foreground fraction per view), measures prompt and
answer lengths, the estimated in-memory size, and lists quarantined models with their reasons.

Writes <validate_deepcad.report_dir>/report.md, metrics.json and counts/png_sizes/lengths/foreground/
samples PNGs, then exits 1 naming each failed threshold (validate_deepcad.*).
"""
from __future__ import annotations

import logging
from pathlib import Path

from lib.cli import StageCheckFailed, run_stage, stage_parser
from lib.config import load_section
from lib.deepcad.conversations import OUTPUT_FILES, CADConversationsConfig
from lib.deepcad.render_models import QUARANTINE, DeepCADSource, RenderDeepCADConfig, read_models
from lib.deepcad.validate import (
    ValidateDeepCADConfig,
    check_thresholds,
    compute_metrics,
    dvc_metrics,
    failures,
    image_stats,
    render_report,
    write_plots,
)
from lib.io import atomic_write_json, atomic_write_text, read_json

log = logging.getLogger("validate_deepcad")


def main() -> None:
    args = stage_parser("validate_deepcad", __doc__).parse_args()
    cfg = load_section(args.params, "validate_deepcad", ValidateDeepCADConfig)
    render = load_section(args.params, "render_deepcad", RenderDeepCADConfig)
    conv = load_section(args.params, "build_cad_conversations", CADConversationsConfig)
    source = load_section(args.params, "deepcad", DeepCADSource)
    models = read_models(render.out)
    image_dir = Path(render.out)  # image paths run through the shard archives (read_models)
    names = [n for v in render.views for n in models[f"image_{v}"]]
    images = image_stats(image_dir, names)
    conversations = {s: read_json(Path(conv.out) / OUTPUT_FILES[s]) for s in conv.splits}
    conv_summary = read_json(Path(conv.out) / "summary.json")
    quarantine = read_json(Path(render.out) / QUARANTINE)

    metrics = compute_metrics(models, render.views, images, quarantine, conversations, conv_summary, cfg)
    results = check_thresholds(metrics, cfg)
    out = Path(cfg.report_dir)
    plots = write_plots(models, render.views, images, conversations, metrics, image_dir, out, cfg)
    failed = failures(results)
    atomic_write_json(out / "metrics.json", {**dvc_metrics(metrics), "thresholds_failed": len(failed)})
    src = {"root": source.root, "render_out": render.out, "conversations_out": conv.out}
    atomic_write_text(out / "report.md", render_report(metrics, results, plots, models, render.views, src, cfg))
    log.info("%d models, %d images, %d conversations; report in %s", metrics["models"], metrics["images"],
             metrics["conversations"], out / "report.md")
    if failed:
        raise StageCheckFailed("validate_deepcad: threshold check(s) failed (see report):\n  " + "\n  ".join(failed))


if __name__ == "__main__":
    run_stage(main)
