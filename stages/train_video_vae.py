"""Stage train_video_vae: the causal video VAE (lib.models.video_vae) at one resolution.

    python -m stages.train_video_vae [--params params.yaml] [--no-progress]

Trains VideoVAE with lib.losses.vae.VideoVAELoss (L1/L2 reconstruction + beta * KL with warm-up, optional VGG
perceptual term) in the shared loop lib.train.Trainer. Data: train-split SSv2 clips
(<ingest_ssv2.out>/manifest.parquet) of `clip_frames` frames every `clip_stride`; each clip is a random square
spanning the frame's short side, resized to `resolution` px (= resize the short side, then a random square
crop), seeded by (seed, micro-batch). Loader workers/backend from <bench_loader.out>/stable.json when it exists.
Validation every `val_every` steps on the first `val_clips` validation clips (val/loss, val/recon, val/kl,
val/psnr); `early_stopping: {monitor: val/loss, patience, min_delta}` ends a plateaued run (patience 0: off).

Params: section train_video_vae. Trainer knobs are flat (steps, batch_size, grad_accum, lr, out_dir, ...:
lib.train.TrainConfig); model (lib.models.video_vae.VideoVAEConfig) and loss
(lib.losses.vae.VideoVAELossWeights) are nested. The perceptual term (loss.perceptual > 0) needs VGG16 weights
(loss.perceptual_weights: a torchvision vgg16 state dict; null = the torch hub cache); it is 0 by default so
the pipeline runs offline. Try a variant with
    dvc exp run -S train_video_vae.steps=800 -S train_video_vae.model.latent_channels=8

Resume: checkpoints persist; a killed run restarted continues from its latest checkpoint and ends with the same
weights as an uninterrupted run, unless params, data or code changed (then it starts fresh).

Writes under <out_dir>: checkpoints/step-NNNNNN, final/raw/vae.safetensors, final/metrics.json, config.json;
DVCLive metrics and plots under <tracker_dir>.
"""
from __future__ import annotations

import logging
from pathlib import Path

from lib.bench.loader_bench import stable_loader
from lib.cli import run_stage, stage_parser
from lib.config import load_section, read_params
from lib.gates import require_validated
from lib.ssv2.ingest import IngestSSv2Config
from lib.ssv2.validate import ValidateSSv2Config
from lib.train.video_vae import describe, from_section, make_trainer, to_section


def train(name: str, doc: str) -> None:
    """Main of a video VAE trainer stage whose params section is ``name`` (train_video_vae, train_curriculum)."""
    log = logging.getLogger(name)
    args = stage_parser(name, doc).parse_args()
    cfg = from_section(read_params(args.params).get(name), f"{args.params}: {name}")
    manifest = Path(load_section(args.params, "ingest_ssv2", IngestSSv2Config).out) / "manifest.parquet"
    if not manifest.is_file():
        raise FileNotFoundError(f"{manifest}: no SSv2 manifest; run `dvc repro ingest_ssv2` (or check ingest_ssv2.out)")
    require_validated(load_section(args.params, "validate_ssv2", ValidateSSv2Config).report_dir, "validate_ssv2")
    stable, stable_path = stable_loader(args.params)
    log.info("%s: %s", name, to_section(cfg))
    log.info("%s", describe(cfg))
    trainer = make_trainer(cfg, manifest, stable=stable)
    if trainer.resumed_from is not None:
        log.info("resuming from %s (step %d)", trainer.resumed_from, trainer.step)
    metrics = trainer.run(progress=not args.no_progress)
    out = Path(cfg.train.out_dir)
    shown = ", ".join(f"{k}={metrics[k]:.4g}" for k in ("train/loss", "val/loss", "val/psnr") if k in metrics)
    log.info("done at step %d (%s): %s", trainer.state.step, trainer.stop_reason, shown)
    log.info("weights in %s, checkpoints in %s", out / "final" / "raw", out / "checkpoints")


def main() -> None:
    train("train_video_vae", __doc__)


if __name__ == "__main__":
    run_stage(main)
