"""Stage train_apt: adversarial post-training (APT) of the one-step video super-resolution generator.

    python -m stages.train_apt [--params params.yaml] [--no-progress]

Trains G (lib.models.video_sr.VideoSRGenerator, LQ -> x`scale` HQ video in one pass) against a video
discriminator D (patch: 3D PatchGAN, or video: whole-clip) with lib.losses.gan.APTLoss (non-saturating
adversarial + feature matching + optional L1, lazy R1 on D), in the shared loop lib.train.Trainer.
With text_condition: true, G also gets each clip's label embedding from the embed_text cache
(<embed_text.cache_dir>, FiLM; model.text_dim must be its size, 384).
Data: random `crop`x`crop` windows of train-split SSv2 clips (<ingest_ssv2.out>/manifest.parquet),
degraded on the fly (lib.video.degrade, seeded by (seed, micro-batch)); loader workers/backend from
<bench_loader.out>/stable.json when it exists.

Params: section train_apt. Trainer knobs are flat (steps, batch_size, grad_accum, lr, checkpoint_every,
out_dir, ...: lib.train.TrainConfig); model / loss / degrade are nested mappings. Try a variant with
    dvc exp run -S train_apt.steps=600 -S train_apt.model.channels=64 -S train_apt.loss.recon=1.0

Resume: out_dir is `persist: true` in dvc.yaml; a killed run restarted (dvc repro or this command)
continues from its latest complete checkpoint (weights, optimisers, EMA, RNG, data position) and
ends with the same weights as an uninterrupted run. Delete out_dir to start over.

Writes under <out_dir>: checkpoints/step-NNNNNN, final/{raw,ema}/G.safetensors (+ raw/D), final/metrics.json,
config.json, dvclive/metrics.json and dvclive/plots/metrics/*.tsv.
"""
from __future__ import annotations

import logging
from pathlib import Path

from lib.bench.loader_bench import stable_loader
from lib.cli import run_stage, stage_parser
from lib.config import load_section, read_params
from lib.embed import EmbedConfig
from lib.gates import require_validated
from lib.ssv2.ingest import IngestSSv2Config
from lib.ssv2.validate import ValidateSSv2Config
from lib.train.apt import clip_texts, from_section, loader_config, make_trainer, to_section

log = logging.getLogger("train_apt")


def main() -> None:
    args = stage_parser("train_apt", __doc__).parse_args()
    cfg = from_section(read_params(args.params).get("train_apt"), f"{args.params}: train_apt")
    ingest = load_section(args.params, "ingest_ssv2", IngestSSv2Config)
    require_validated(load_section(args.params, "validate_ssv2", ValidateSSv2Config).report_dir, "validate_ssv2")
    stable, stable_path = stable_loader(args.params)
    loader = loader_config(cfg, str(Path(ingest.out) / "manifest.parquet"), stable)
    log.info("train_apt: %s", to_section(cfg))
    log.info("loader: workers %d, backend %s (%s)", loader.num_workers, loader.backend,
             stable_path if stable else "defaults: no stable.json")
    texts = None
    if cfg.text_condition:
        cache_dir = load_section(args.params, "embed_text", EmbedConfig).cache_dir
        texts = clip_texts(cfg, loader.manifest, cache_dir, ("train",))
        log.info("text conditioning: %d train clips' %s vectors from %s", len(texts), cfg.text_source, cache_dir)
    trainer = make_trainer(cfg, loader, texts=texts)
    if trainer.resumed_from is not None:
        log.info("resuming from %s (step %d of %d)", trainer.resumed_from, trainer.step, cfg.train.steps)
    metrics = trainer.run(progress=not args.no_progress)
    out = Path(cfg.train.out_dir)
    log.info("done at step %d: %s", cfg.train.steps,
             ", ".join(f"{k}={metrics[k]:.4g}" for k in ("g/loss", "d/loss", "D/accuracy") if k in metrics))
    log.info("weights in %s, checkpoints in %s, metrics in %s", out / "final", out / "checkpoints",
             out / "dvclive" / "metrics.json")


if __name__ == "__main__":
    run_stage(main)
