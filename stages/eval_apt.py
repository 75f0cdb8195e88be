"""Stage eval_apt: PSNR / SSIM / temporal error of the APT generator vs bicubic on held-out clips.

    python -m stages.eval_apt [--params params.yaml] [--no-progress]

Reads <train_apt.out_dir>/final/{raw,ema}/G.safetensors (safetensors only), the validation split of
<ingest_ssv2.out>/manifest.parquet and sections train_apt (model, crop, clip_frames, clip_stride,
degrade, val_clips) and eval_apt (report_dir, seed, strip_clips, batch_size). The first `val_clips`
validation clips are time-centred, centre-cropped and degraded with validation_generator(seed), so
every run scores the same LQ inputs. Candidates: bicubic upsampling of the LQ (the trivial
baseline), G (raw weights) and G_ema (EMA weights); see lib/eval/apt.py for the metric definitions.

Writes:
    <report_dir>/metrics.json   {clips, frames, crop, scale, seed, bicubic: {psnr, ssim, temporal_error},
                                 G: {... psnr_gain_db, ssim_gain}, G_ema: {...}}
    <report_dir>/report.md      the table and the strip
    <report_dir>/strip.png      LQ (nearest) | bicubic | G | G_ema | HQ, middle frame of a few clips
"""
from __future__ import annotations

import logging
from pathlib import Path

from lib.cli import run_stage, stage_parser
from lib.config import load_section, read_params
from lib.embed import EmbedConfig
from lib.eval.apt import (
    EvalAPTConfig,
    evaluate,
    load_generator,
    render_report,
    strip_png,
    validation_clips,
    validation_ids,
)
from lib.io import atomic_write_json, atomic_write_text
from lib.ssv2.ingest import IngestSSv2Config
from lib.train.apt import clip_texts, from_section, stack_texts, to_section

log = logging.getLogger("eval_apt")


def main() -> None:
    args = stage_parser("eval_apt", __doc__).parse_args()
    train = from_section(read_params(args.params).get("train_apt"), f"{args.params}: train_apt")
    cfg = load_section(args.params, "eval_apt", EvalAPTConfig)
    ingest = load_section(args.params, "ingest_ssv2", IngestSSv2Config)
    final = Path(train.train.out_dir) / "final"
    generators = {"G": load_generator(final / "raw" / "G.safetensors", train.model),
                  "G_ema": load_generator(final / "ema" / "G.safetensors", train.model)}
    manifest = Path(ingest.out) / "manifest.parquet"
    hq, lq = validation_clips(train, manifest, cfg.seed)
    text = None
    if train.text_condition:  # the same cached label vectors the generator was trained with
        cache_dir = load_section(args.params, "embed_text", EmbedConfig).cache_dir
        text = stack_texts(clip_texts(train, manifest, cache_dir, ("validation",)), validation_ids(train, manifest))
    metrics, outputs = evaluate(generators, hq, lq, train.model.scale, cfg.batch_size, text)
    metrics = {**metrics, "frames": int(hq.shape[0] * hq.shape[2]), "crop": train.crop,
               "scale": train.model.scale, "seed": cfg.seed}

    out = Path(cfg.report_dir)
    nearest = lq.repeat_interleave(train.model.scale, -1).repeat_interleave(train.model.scale, -2)
    columns = {"LQ (nearest)": nearest, "bicubic": outputs["bicubic"], "G": outputs["G"],
               "G_ema": outputs["G_ema"], "HQ": hq}
    strip_png(out / "strip.png", columns, cfg.strip_clips)
    atomic_write_json(out / "metrics.json", metrics)
    atomic_write_text(out / "report.md", render_report(metrics, to_section(train), "strip.png", list(columns)))
    log.info("PSNR bicubic %.3f | G %.3f | G_ema %.3f dB; SSIM bicubic %.4f | G %.4f | G_ema %.4f; report in %s",
             metrics["bicubic"]["psnr"], metrics["G"]["psnr"], metrics["G_ema"]["psnr"],
             metrics["bicubic"]["ssim"], metrics["G"]["ssim"], metrics["G_ema"]["ssim"], out / "report.md")


if __name__ == "__main__":
    run_stage(main)
