"""Stage eval_apt: PSNR / SSIM / temporal error / chunk-border flicker (and LPIPS / DISTS when their weights are
given) of the APT generator vs bicubic on held-out clips.

    python -m stages.eval_apt [--params params.yaml] [--no-progress]

Reads <train_apt.out_dir>/final/{raw,ema}/G.safetensors (safetensors only), the validation split of
<ingest_ssv2.out>/manifest.parquet and sections train_apt (model, crop, clip_frames, clip_stride,
degrade, val_clips) and eval_apt (report_dir, seed, strip_clips, batch_size, flicker_clip_frames,
flicker_chunk_frames, flicker_overlap, lpips_weights, dists_weights, vgg16_weights). The first `val_clips`
validation clips are time-centred, centre-cropped and degraded with validation_generator(seed), so
every run scores the same LQ inputs. Candidates: bicubic upsampling of the LQ (the trivial
baseline), G (raw weights) and G_ema (EMA weights); see lib/eval/apt.py for the metric definitions.
Border flicker restores the same clips taken `flicker_clip_frames` long (null: train_apt.clip_frames) in
temporal chunks. LPIPS / DISTS are computed only from weight files named in params (nothing is downloaded);
when a path is null the report and metrics.json say so and how to give it; a path that does not exist stops
the stage with the key and the fix.

Writes:
    <report_dir>/metrics.json   {clips, frames, crop, scale, seed, flicker_frames,
                                 bicubic: {psnr, ssim, temporal_error, flicker: {chunk_frames, overlap, border,
                                           inside, ratio, border_transitions, inside_transitions}[, lpips, dists]},
                                 G: {... psnr_gain_db, ssim_gain}, G_ema: {...}[, not_computed: {lpips: why, ...}]}
    <report_dir>/report.md      the table and the strip
    <report_dir>/strip.png      LQ (nearest) | bicubic | G | G_ema | HQ, middle frame of a few clips
"""
from __future__ import annotations

import dataclasses
import logging
from pathlib import Path

import torch

from lib.bench.loader_bench import stable_loader
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
from lib.eval.perceptual import perceptual_metrics
from lib.io import atomic_write_json, atomic_write_text
from lib.ssv2.ingest import IngestSSv2Config
from lib.train.apt import clip_texts, from_section, stack_texts, to_section

log = logging.getLogger("eval_apt")


def main() -> None:
    args = stage_parser("eval_apt", __doc__).parse_args()
    train = from_section(read_params(args.params).get("train_apt"), f"{args.params}: train_apt")
    cfg = load_section(args.params, "eval_apt", EvalAPTConfig)
    ingest = load_section(args.params, "ingest_ssv2", IngestSSv2Config)
    flicker_frames = cfg.flicker_clip_frames or train.clip_frames
    cfg.check_flicker_frames(flicker_frames)
    # a named weights file that is missing fails here, before any work
    perceptual, not_computed = perceptual_metrics(cfg.lpips_weights, cfg.dists_weights, cfg.vgg16_weights)
    for note in not_computed.values():
        log.warning("%s", note)
    final = Path(train.train.out_dir) / "final"
    # on the accelerator when there is one: the GPU preset's generator on CPU cores took minutes a clip set
    device = "cuda" if torch.cuda.is_available() else "cpu"
    generators = {"G": load_generator(final / "raw" / "G.safetensors", train.model).to(device),
                  "G_ema": load_generator(final / "ema" / "G.safetensors", train.model).to(device)}
    log.info("generators on %s", device)
    manifest = Path(ingest.out) / "manifest.parquet"
    backend = stable_loader(args.params)[0].get("backend", "decord")  # the loader benchmark's pick
    hq, lq = validation_clips(train, manifest, cfg.seed, backend)
    text = None
    if train.text_condition:  # the same cached label vectors the generator was trained with
        cache_dir = load_section(args.params, "embed_text", EmbedConfig).cache_dir
        text = stack_texts(clip_texts(train, manifest, cache_dir, ("validation",)), validation_ids(train, manifest))
    flicker_clips = None
    if flicker_frames != train.clip_frames:  # the same clips, taken longer
        flicker_clips = validation_clips(dataclasses.replace(train, clip_frames=flicker_frames), manifest, cfg.seed,
                                         backend)
    metrics, outputs = evaluate(generators, hq, lq, train.model.scale, cfg.batch_size, text,
                                flicker_chunk_frames=cfg.flicker_chunk_frames, flicker_overlap=cfg.flicker_overlap,
                                flicker_clips=flicker_clips, perceptual=perceptual)
    metrics = {**metrics, "frames": int(hq.shape[0] * hq.shape[2]), "crop": train.crop,
               "scale": train.model.scale, "seed": cfg.seed, "flicker_frames": flicker_frames}
    if not_computed:
        metrics["not_computed"] = not_computed

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
    log.info("border flicker ratio (chunks of %d) bicubic %s | G %s | G_ema %s", cfg.flicker_chunk_frames,
             *(metrics[name]["flicker"]["ratio"] for name in ("bicubic", "G", "G_ema")))


if __name__ == "__main__":
    run_stage(main)
