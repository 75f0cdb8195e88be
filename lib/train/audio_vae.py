"""Audio VAE training on an audio folder's log-mels: config, data, step and validation functions.

Everything here plugs into the one loop (:class:`lib.train.loop.Trainer`), like :mod:`lib.train.apt`:

- :class:`AudioVAETrainConfig` is the ``train_audio_vae`` section of ``params.yaml``: *flat* for the trainer's
  knobs (every :class:`TrainConfig` field: ``steps``, ``batch_size``, ``lr``, ``out_dir``, ...) and *nested*
  for the rest (``model: AudioVAEConfig``, ``loss: AudioVAELossWeights``, ``mel: MelConfig``,
  ``early_stopping: {monitor, patience, min_delta}``). :func:`from_section` splits it and rejects unknown
  keys, naming the closest one.
- :func:`load_audio_data` scans the ``audio`` folder (:func:`lib.audio.folder.scan_audio_folder`; bad files are
  quarantined with a reason, logged and counted) and decodes its train and validation splits.
- :func:`make_data_fn`: micro-batch ``i`` is :func:`lib.audio.dataset.iterate_audio_steps` batch ``i`` of the
  train split (``crop_frames`` log-mel frames per clip at a seeded offset): a pure function of ``(seed, i)``,
  so a resumed run sees exactly the batches of an uninterrupted one.
- :func:`make_step_fn`: ``AudioVAE(mel)`` with a sampled latent, :class:`AudioVAELoss`, one optimiser step;
  logs ``train/loss``, ``train/recon``, ``train/kl`` (mean per latent element), ``train/spectral``
  (the multi-resolution mel term, computed for logging even when its weight is 0) and ``train/kl_weight``.
- :func:`make_validate_fn`: the same terms on fixed validation crops (centre crop of the first ``val_clips``
  validation clips, posterior mean decoded, KL at its full weight ``beta`` so values are comparable across
  steps), logged as ``val/*`` every ``val_every`` steps; ``early_stopping`` can watch any of them.
- :func:`make_trainer` wires the model (name ``"vae"``), the optional EMA (``ema: true``), validation,
  early stopping and the :func:`run_fingerprint` that decides whether a checkpoint may be resumed.

Data parallel (``accelerate launch``): every rank builds the global batch of ``batch_size * world`` crops of
step ``i`` and keeps its own slice, so P ranks see what one process with ``batch_size * P`` would.
"""
from __future__ import annotations

import difflib
import hashlib
import logging
from collections import Counter
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Annotated, Any

import pandas as pd
import torch
from annotated_types import Doc, Ge
from torch import nn

from lib.audio.dataset import AudioCropDataset, iterate_audio_steps
from lib.audio.features import MelConfig
from lib.audio.folder import AudioFolderConfig, scan_audio_folder
from lib.config import Checked, ConfigError
from lib.losses.vae import AudioVAELoss, AudioVAELossWeights, multi_resolution_mel_loss
from lib.models.audio_vae import AudioVAE, AudioVAEConfig
from lib.quarantine import QuarantineEntry
from lib.train.checkpoint import load_trained
from lib.train.config import TrainConfig, flatten_section, split_section
from lib.train.curriculum import EarlyStopping, MinDelta, Mode, Patience
from lib.train.fingerprint import run_fingerprint as fingerprint_of
from lib.train.loop import DataFn, StepFn, Trainer, ValidateFn, process_state

log = logging.getLogger(__name__)

MODEL = "vae"  # the model's name in the Trainer, checkpoints and final/{raw,ema}/vae.safetensors
TERMS = ("loss", "recon", "kl", "spectral")  # logged as train/<term> and val/<term>
METRICS = tuple(f"{kind}/{term}" for kind in ("train", "val") for term in TERMS)


@dataclass(frozen=True)
class EarlyStoppingConfig(Checked):
    """``early_stopping``: end the run once ``monitor`` (one of :data:`METRICS`) has not improved by more than
    ``min_delta`` for ``patience`` consecutive observations (validations for ``val/*``, logs for ``train/*``)."""

    monitor: str = "val/loss"
    patience: Patience = 5
    min_delta: MinDelta = 0.0
    mode: Mode = "min"

    def __post_init__(self) -> None:
        super().__post_init__()
        if self.monitor not in METRICS:
            close = difflib.get_close_matches(self.monitor, METRICS, n=1)
            hint = f"; did you mean '{close[0]}'?" if close else ""
            raise ValueError(f"monitor: {self.monitor!r} is not a logged metric{hint} "
                             f"(choose from {', '.join(METRICS)})")

    def build(self) -> EarlyStopping:
        """Return a fresh :class:`EarlyStopping` (its counters are checkpointed by the Trainer)."""
        return EarlyStopping(self.monitor, self.patience, self.min_delta, self.mode)


@dataclass(frozen=True)
class AudioVAETrainConfig(Checked):
    """The ``train_audio_vae`` section: trainer knobs (``train``, flat in the file) plus the audio-VAE ones.

    ``crop_frames`` is the training crop in log-mel frames (``crop_frames * mel.hop_length`` samples; a
    multiple of ``model.time_compression`` so the latent covers it exactly). ``val_clips`` validation clips
    (centre crops of ``crop_frames``) are scored every ``val_every`` steps. ``early_stopping: null`` trains
    for ``steps``. ``ema: true`` keeps an EMA of the VAE (``final/ema/vae.safetensors``). ``threads``: torch's
    intra-op CPU threads; this model is small, and on a shared 2-core CPU one thread measured 0.037 s per
    step (batch 16 x 64 frames) against 0.31 s with two (threads spinning against other processes).
    """

    train: TrainConfig = field(default_factory=TrainConfig)
    model: AudioVAEConfig = field(default_factory=AudioVAEConfig)
    loss: AudioVAELossWeights = field(default_factory=AudioVAELossWeights)
    mel: MelConfig = field(default_factory=MelConfig)
    crop_frames: Annotated[int, Ge(1)] = 64
    val_clips: Annotated[int, Ge(1)] = 8
    val_every: Annotated[int, Ge(1)] = 50
    early_stopping: EarlyStoppingConfig | None = None
    ema: bool = True
    # torch CPU threads (torch.set_num_threads) of the stage
    threads: Annotated[int, Ge(1), Doc("null: torch's default")] | None = 1

    def __post_init__(self) -> None:
        super().__post_init__()
        tc = self.model.time_compression
        if self.crop_frames % tc:
            lower, upper = max(tc, self.crop_frames // tc * tc), (self.crop_frames // tc + 1) * tc
            raise ValueError(f"crop_frames: {self.crop_frames} is not divisible by model.time_compression={tc}; "
                             f"pick a multiple of it (e.g. {lower} or {upper})")
        if self.model.n_mels != self.mel.n_mels:
            raise ValueError(f"model.n_mels ({self.model.n_mels}) and mel.n_mels ({self.mel.n_mels}) differ; "
                             f"the VAE reads the mel features, so set both to the same number of bands")

    @property
    def latent_floats_per_second(self) -> float:
        """Latent numbers per second of audio: ``latent_channels * sample_rate / (hop_length * tc)``."""
        return self.model.latent_channels * self.mel.sample_rate / (self.mel.hop_length * self.model.time_compression)

    @property
    def mel_floats_per_second(self) -> float:
        """Log-mel numbers per second of audio: ``n_mels * sample_rate / hop_length``."""
        return self.mel.n_mels * self.mel.sample_rate / self.mel.hop_length


def from_section(section: Mapping[str, Any] | None, where: str = "train_audio_vae") -> AudioVAETrainConfig:
    """Return the :class:`AudioVAETrainConfig` of a flat ``train_audio_vae`` mapping; ConfigError on unknown keys.

    Keys that are :class:`TrainConfig` fields fill ``.train``; the others fill AudioVAETrainConfig
    (``model``, ``loss``, ``mel`` and ``early_stopping`` are nested mappings).
    """
    return split_section(section, AudioVAETrainConfig, where, "audio VAE")


def to_section(cfg: AudioVAETrainConfig) -> dict[str, Any]:
    """Inverse of :func:`from_section`: the flat mapping (for logs and reports)."""
    return flatten_section(cfg)


# ----------------------------------------------------------------------------- data


@dataclass
class AudioData:
    """A scanned audio folder: its good files, what was quarantined, and the decoded train/validation splits."""

    folder: AudioFolderConfig
    files: pd.DataFrame  # scan_audio_folder's rows (id, split, path, seconds, ..., abs_path)
    quarantine: list[QuarantineEntry]
    train: AudioCropDataset
    validation: AudioCropDataset

    @property
    def quarantine_counts(self) -> dict[str, int]:
        """Quarantined files per reason."""
        return dict(sorted(Counter(q.reason for q in self.quarantine).items()))

    def summary(self) -> dict[str, Any]:
        """Clips and seconds per split, quarantine counts and the file digest (for logs and ``data.json``)."""
        per_split = self.files.groupby("split")["seconds"].agg(["count", "sum"])
        return {"root": self.folder.root,
                "clips": {s: int(r["count"]) for s, r in per_split.iterrows()},
                "seconds": {s: round(float(r["sum"]), 2) for s, r in per_split.iterrows()},
                "quarantined": len(self.quarantine), "quarantine_reasons": self.quarantine_counts,
                "digest": files_digest(self.files)}


def check_sample_rate(cfg: AudioVAETrainConfig, folder: AudioFolderConfig, where: str = "params.yaml") -> None:
    """Raise ConfigError when ``audio.sample_rate`` and ``train_audio_vae.mel.sample_rate`` differ."""
    if folder.sample_rate != cfg.mel.sample_rate:
        raise ConfigError(f"{where}: audio.sample_rate ({folder.sample_rate}) and train_audio_vae.mel.sample_rate "
                          f"({cfg.mel.sample_rate}) differ; clips are loaded at the mel rate, so set both the same")


def load_audio_data(cfg: AudioVAETrainConfig, folder: AudioFolderConfig, *, where: str = "params.yaml") -> AudioData:
    """Scan ``folder`` and decode its ``train`` and ``validation`` splits for ``cfg``'s crops and mel features.

    Quarantined files are logged (count per reason, first few ids) and kept in the result. A sample-rate
    mismatch between ``audio.sample_rate`` and ``train_audio_vae.mel.sample_rate`` raises ConfigError.
    """
    check_sample_rate(cfg, folder, where)
    scan = scan_audio_folder(folder)
    if scan.quarantine:
        counts = Counter(q.reason for q in scan.quarantine)
        examples = ", ".join(f"{q.id} ({q.reason})" for q in scan.quarantine[:5])
        log.warning("%s: %d file(s) quarantined (%s), e.g. %s", folder.root, len(scan.quarantine),
                    ", ".join(f"{r}: {n}" for r, n in sorted(counts.items())), examples)
    train = AudioCropDataset(scan.files, "train", mel=cfg.mel, crop_frames=cfg.crop_frames, seed=cfg.train.seed)
    validation = AudioCropDataset(scan.files, "validation", mel=cfg.mel, crop_frames=cfg.crop_frames,
                                  seed=cfg.train.seed)
    return AudioData(folder, scan.files, scan.quarantine, train, validation)


def files_digest(files: pd.DataFrame) -> str:
    """Return a digest of the file list: id, split, relative path and the bytes of every file, in id order."""
    h = hashlib.sha256()
    for row in files.itertuples(index=False):
        h.update(f"{row.id}\0{row.split}\0{row.path}\0".encode())
        with open(row.abs_path, "rb") as f:
            for block in iter(lambda: f.read(1 << 20), b""):
                h.update(block)
    return h.hexdigest()[:16]


def make_data_fn(cfg: AudioVAETrainConfig, dataset: AudioCropDataset) -> DataFn:
    """Return ``data(start_step)`` for the Trainer: ``{"mel": [batch_size, n_mels, crop_frames]}`` micro-batches
    from optimiser step ``start_step`` on, a pure function of the micro-batch index (exact resume)."""
    state = process_state()
    rank, world = state.process_index, state.num_processes
    batch, accum = cfg.train.batch_size, cfg.train.grad_accum

    def data(start_step: int) -> Iterator[dict[str, torch.Tensor]]:
        for item in iterate_audio_steps(dataset, batch_size=batch * world, total_steps=cfg.train.steps * accum,
                                        start_step=start_step * accum, seed=cfg.train.seed):
            yield {"mel": item["mel"][rank * batch:(rank + 1) * batch]}

    return data


def validation_batch(cfg: AudioVAETrainConfig, dataset: AudioCropDataset) -> torch.Tensor:
    """Return the fixed validation log-mels ``[min(val_clips, N), n_mels, crop_frames]``: centre crops of the
    first validation clips (id order)."""
    return torch.stack([dataset[i]["mel"] for i in range(min(cfg.val_clips, len(dataset)))])


# ----------------------------------------------------------------------------- model, step, validation


def build_model(cfg: AudioVAETrainConfig) -> AudioVAE:
    """Return the :class:`AudioVAE` of ``cfg`` (weights seeded by ``train.seed``)."""
    torch.manual_seed(cfg.train.seed)
    return AudioVAE(cfg.model)


def _terms(loss: AudioVAELoss, x: torch.Tensor, x_hat: torch.Tensor, stats: Mapping[str, float],
           prefix: str) -> dict[str, float]:
    """Map AudioVAELoss's ``avae/*`` stats to ``<prefix>/{loss,recon,kl,spectral}``."""
    spectral = stats.get("avae/stft")
    if spectral is None:  # weight 0: not in the loss, still worth watching
        with torch.no_grad():
            spectral = multi_resolution_mel_loss(x_hat.detach(), x, loss.weights.stft_pools).item()
    return {f"{prefix}/loss": stats["avae/loss"], f"{prefix}/recon": stats["avae/recon"],
            f"{prefix}/kl": stats["avae/kl"], f"{prefix}/spectral": spectral}


def make_step_fn(loss: AudioVAELoss) -> StepFn:
    """Return the Trainer's ``step_fn``: sampled-latent reconstruction, AudioVAELoss, backward, optimiser step."""

    def step_fn(trainer: Trainer, batch: Mapping[str, torch.Tensor], step: int) -> dict[str, float]:
        x = batch["mel"]
        x_hat, mean, logvar = trainer.models[MODEL](x)
        total, stats = loss(x, x_hat, mean, logvar, step)
        trainer.backward(total, "train/loss")
        trainer.optimizer_step(MODEL)
        return {**_terms(loss, x, x_hat, stats, "train"), "train/kl_weight": stats["avae/kl_weight"],
                "train/logvar": stats["avae/logvar"]}

    return step_fn


def make_validate_fn(loss: AudioVAELoss, val_mel: torch.Tensor) -> ValidateFn:
    """Return ``validate_fn``: the loss terms of the posterior-mean reconstruction of ``val_mel``, with the KL at
    its full weight ``beta`` (no warm-up), as ``{loss, recon, kl, spectral}`` (logged as ``val/*``)."""
    full_kl_step = loss.weights.kl_warmup_steps

    def validate(trainer: Trainer, step: int) -> dict[str, float]:
        x = val_mel.to(trainer.accelerator.device)
        x_hat, mean, logvar = trainer.unwrap(MODEL)(x, sample=False)
        _, stats = loss(x, x_hat, mean, logvar, full_kl_step)
        return {k.split("/", 1)[1]: v for k, v in _terms(loss, x, x_hat, stats, "val").items()}

    return validate


def run_fingerprint(cfg: AudioVAETrainConfig, data: AudioData) -> str:
    """Return a digest of everything that decides the run's trajectory: params (bookkeeping keys aside; with
    early stopping on a ``train/*`` metric ``log_every`` counts too), the audio files (list and bytes, see
    :func:`files_digest`) and the code (this module's import closure). Checkpoints with another fingerprint
    are not resumed."""
    # train metrics are observed at each log, so with early stopping on one, log_every decides the trajectory
    keep = ("log_every",) if cfg.early_stopping is not None and cfg.early_stopping.monitor.startswith("train/") else ()
    audio = {"files": files_digest(data.files), "sample_rate": data.folder.sample_rate}
    return fingerprint_of(to_section(cfg), audio, __name__, keep=keep)


def make_trainer(cfg: AudioVAETrainConfig, data: AudioData, **trainer_kwargs: Any) -> Trainer:
    """Return the :class:`Trainer` for ``cfg`` on ``data`` (:func:`load_audio_data`): model ``"vae"``, optional
    EMA, validation on fixed crops, optional early stopping.

    Constructing it resumes from the latest checkpoint under ``cfg.train.out_dir`` when that checkpoint was
    made with the same :func:`run_fingerprint`; otherwise it starts fresh.
    """
    trainer_kwargs.setdefault("fingerprint", run_fingerprint(cfg, data))
    loss = AudioVAELoss(cfg.loss)
    models: dict[str, nn.Module] = {MODEL: build_model(cfg)}
    return Trainer(cfg.train, models, make_step_fn(loss), make_data_fn(cfg, data.train),
                   ema_models=[MODEL] if cfg.ema else [],
                   early_stopping=cfg.early_stopping.build() if cfg.early_stopping is not None else None,
                   validate_fn=make_validate_fn(loss, validation_batch(cfg, data.validation)),
                   val_every=cfg.val_every, **trainer_kwargs)


def load_vae(path: str | Path, config: AudioVAEConfig) -> AudioVAE:
    """Return an :class:`AudioVAE` with the weights of a ``.safetensors`` file (strict keys), in eval mode."""
    return load_trained(AudioVAE(config), path, "train_audio_vae")


__all__ = ["METRICS", "MODEL", "TERMS", "AudioData", "AudioVAETrainConfig", "EarlyStoppingConfig",
           "build_model", "check_sample_rate", "files_digest", "from_section", "load_audio_data", "load_vae",
           "make_data_fn", "make_step_fn", "make_trainer", "make_validate_fn", "run_fingerprint", "to_section",
           "validation_batch"]
