"""Stage train_audio_vae: train the log-mel audio VAE on an audio folder.

    python -m stages.train_audio_vae [--params params.yaml] [--no-progress]

Trains lib.models.audio_vae.AudioVAE (log-mel [n_mels, frames] <-> Gaussian latent [latent_channels,
frames / time_compression]) with lib.losses.vae.AudioVAELoss (log-mel L1 + beta * KL + multi-resolution
mel term) in the shared loop lib.train.Trainer. Data: random `crop_frames`-frame crops of the train split of
the `audio` folder (section audio: root, sample_rate, split_file, ...; by default the espeak-ng speech of
synth_speech), seeded by (seed, step). Files the scan rejects are quarantined, logged and counted in
<out_dir>/data.json. Every `val_every` steps the loss terms on fixed validation crops are logged as val/*;
early_stopping: {monitor: val/loss, patience, min_delta} ends the run on a plateau. `threads` sets
torch's CPU threads (1 by default: fastest for this small model on a shared CPU). Starts only when
<validate_audio.report_dir>/metrics.json records a passed validate_audio (lib.gates.require_validated).

Params: section train_audio_vae. Trainer knobs are flat (steps, batch_size, lr, checkpoint_every, out_dir, ...:
lib.train.TrainConfig); model / loss / mel / early_stopping are nested mappings. Try a variant with
    dvc exp run -S train_audio_vae.model.latent_channels=16 -S train_audio_vae.loss.beta=0.001

Resume: out_dir/checkpoints is `persist: true` in dvc.yaml; a killed run restarted continues from its latest
checkpoint and ends with the same weights as an uninterrupted run, as long as params, audio files and code
are unchanged (otherwise it starts afresh). Delete out_dir to start over.

Writes under <out_dir>: checkpoints/step-NNNNNN, final/{raw,ema}/vae.safetensors, final/metrics.json,
config.json, data.json (clips, seconds, quarantine counts, file digest); DVCLive metrics and plots under
tracker_dir.
"""
from __future__ import annotations

import logging
from pathlib import Path

import torch

from lib.audio.folder import AudioFolderConfig
from lib.audio.validate import ValidateAudioConfig
from lib.cli import run_stage, stage_parser
from lib.config import load_section, read_params
from lib.gates import require_validated
from lib.io import atomic_write_json
from lib.train.audio_vae import from_section, load_audio_data, make_trainer, to_section

log = logging.getLogger("train_audio_vae")


def main() -> None:
    args = stage_parser("train_audio_vae", __doc__).parse_args()
    cfg = from_section(read_params(args.params).get("train_audio_vae"), f"{args.params}: train_audio_vae")
    folder = load_section(args.params, "audio", AudioFolderConfig)
    require_validated(load_section(args.params, "validate_audio", ValidateAudioConfig).report_dir, "validate_audio")
    log.info("train_audio_vae: %s", to_section(cfg))
    if cfg.threads is not None:
        torch.set_num_threads(cfg.threads)
    data = load_audio_data(cfg, folder, where=str(args.params))
    summary = data.summary()
    log.info("audio %s: clips %s, seconds %s, quarantined %d %s", folder.root, summary["clips"], summary["seconds"],
             summary["quarantined"], summary["quarantine_reasons"])
    out = Path(cfg.train.out_dir)
    atomic_write_json(out / "data.json", summary)
    trainer = make_trainer(cfg, data)
    if trainer.resumed_from is not None:
        log.info("resuming from %s (step %d of %d)", trainer.resumed_from, trainer.step, cfg.train.steps)
    metrics = trainer.run(progress=not args.no_progress)
    log.info("done at step %d (%s): %s", trainer.state.step, trainer.stop_reason,
             ", ".join(f"{k}={metrics[k]:.4g}" for k in ("train/loss", "train/recon", "train/kl", "val/loss",
                                                         "val/recon") if k in metrics))
    log.info("weights in %s, checkpoints in %s", out / "final", out / "checkpoints")


if __name__ == "__main__":
    run_stage(main)
