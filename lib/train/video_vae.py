"""Video VAE training (single resolution or a resolution curriculum): config, data, step and validation.

Everything plugs into the one loop (:class:`lib.train.loop.Trainer`):

- :class:`VideoVAETrainConfig` is the ``train_video_vae`` / ``train_curriculum`` section of ``params.yaml``:
  flat :class:`TrainConfig` keys (``steps``, ``batch_size``, ``grad_accum``, ``lr``, ``out_dir``, ...) plus
  nested ``model`` (:class:`VideoVAEConfig`), ``loss`` (:class:`VideoVAELossWeights`), ``early_stopping`` and
  ``curriculum`` (``null`` or ``{phases: [...], gradient_checkpointing}``, :class:`CurriculumConfig`).
  :func:`from_section` splits it and rejects unknown keys, naming the closest one.
- Frames (:func:`square_resize_crop`): each clip becomes a ``resolution x resolution`` square showing the whole
  short side of the frame: a square window whose side is the frame's short side (random position along the long
  side, the same on every frame of the clip) resized to ``resolution`` with antialiasing. That is "resize the
  short side to ``resolution``, then crop a random square", done in the cheaper order (crop, then resize fewer
  pixels). So a 32 px phase sees the whole scene coarsely, not a 32 px patch of texture; every phase sees the
  same content at a different sampling rate, which is what a resolution curriculum is about.
- :func:`make_data_fn`: micro-batch ``i`` (global index) is SSv2 loader step ``i`` of the train split with the
  phase's batch size and clip length; the crop position and the reparameterisation noise are drawn from
  generators seeded by ``(seed, phase index, i)`` (:func:`micro_batch_seed`). With a curriculum the data
  function is ``data(start_step, phase)``. Nothing depends on when the phase started or on the global torch
  RNG, so a run killed mid-phase resumes exactly (same weights as an uninterrupted run).
- :func:`make_step_fn`: ``VideoVAE(x)`` with a sampled latent, :class:`VideoVAELoss`; metrics ``train/loss``,
  ``train/recon``, ``train/kl``, ``train/kl_weight``, ``train/logvar`` (+ ``train/perceptual``).
- :func:`make_validate_fn`: the first ``val_clips`` clips of the validation split (time-centred, centre square,
  resized to the current resolution), decoded from the posterior mean: ``val/loss`` (with the post-warm-up KL
  weight, so values are comparable across steps), ``val/recon``, ``val/kl``, ``val/psnr`` (dB, [0, 1] units,
  output clamped).
- :func:`make_trainer` wires model ``"vae"`` (no EMA: ``final/raw/vae.safetensors``), the curriculum and
  early stopping.
"""
from __future__ import annotations

import contextlib
import dataclasses
import functools
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Annotated, Any

import numpy as np
import torch
import torch.nn.functional as F
from annotated_types import Doc, Ge

from lib.config import Checked, ConfigError, from_dict
from lib.data.clips import ClipSpec
from lib.data.video_dataset import BucketBatchSampler, SSv2ClipDataset, VideoLoaderConfig, iterate_steps
from lib.losses.vae import VideoVAELoss, VideoVAELossWeights, kl_divergence, reduce_kl
from lib.models.video_vae import VideoVAE, VideoVAEConfig, latent_shape
from lib.train.config import TrainConfig, flatten_section, section_parts
from lib.train.curriculum import CurriculumConfig, CurriculumScheduler, EarlyStopping, MinDelta, Mode, PhaseConfig
from lib.train.fingerprint import manifest_content
from lib.train.fingerprint import run_fingerprint as fingerprint_of
from lib.train.loop import StepFn, Trainer, ValidateFn, process_state

MODEL = "vae"  # the Trainer's model name: weights land in <out_dir>/final/raw/vae.safetensors
# Keys a curriculum's phases set: giving them at the top level as well would be silently ignored.
_PHASE_OWNED = {"batch_size": "batch_size", "resolution": "resolution", "clip_frames": "frames",
                "warmup_steps": "warmup_steps", "micro_batch": "micro_batch"}


@dataclass(frozen=True)
class EarlyStoppingConfig(Checked):
    """``early_stopping`` of a VAE section: stop once ``monitor`` has not improved by more than ``min_delta``
    for ``patience`` consecutive validations. ``patience: 0`` or ``null`` turns it off."""

    monitor: str = "val/loss"
    patience: Annotated[int, Ge(0), Doc("0 and null turn it off")] | None = 0
    min_delta: MinDelta = 0.0
    mode: Mode = "min"

    def __post_init__(self) -> None:
        super().__post_init__()
        self.build()  # checks monitor with EarlyStopping's own message

    def build(self) -> EarlyStopping | None:
        """Return a fresh :class:`EarlyStopping`, or None when it is off."""
        if not self.patience:
            return None
        try:
            return EarlyStopping(self.monitor, self.patience, self.min_delta, self.mode)
        except ValueError as err:
            raise ValueError(f"early_stopping.{err}") from None


@dataclass(frozen=True)
class VideoVAETrainConfig(Checked):
    """A video VAE trainer section: ``train`` (flat in the file) plus the VAE's own keys.

    ``resolution`` is the side of the square training clips (see the module docstring for how frames become
    squares; a multiple of ``model.spatial_compression``), ``clip_frames`` / ``clip_stride`` pick the frames.
    With ``curriculum`` set, each phase's ``resolution`` / ``frames`` / ``batch_size`` replace them.
    ``val_clips`` validation clips are scored every ``val_every`` steps (null: ``log_every``).
    """

    train: TrainConfig = field(default_factory=TrainConfig)
    model: VideoVAEConfig = field(default_factory=VideoVAEConfig)
    loss: VideoVAELossWeights = field(default_factory=VideoVAELossWeights)
    resolution: Annotated[int, Ge(1)] = 64
    clip_frames: Annotated[int, Ge(1)] = 8
    clip_stride: Annotated[int, Ge(1)] = 2
    val_clips: Annotated[int, Ge(1)] = 4
    val_every: Annotated[int, Ge(1), Doc("null: log_every")] | None = None
    # split each batch into micro-batches of this size inside the step (PhaseConfig.micro_batch); null: batch_size
    micro_batch: Annotated[int, Ge(1)] | None = None
    early_stopping: EarlyStoppingConfig = field(default_factory=EarlyStoppingConfig)
    curriculum: CurriculumConfig | None = None

    def __post_init__(self) -> None:
        super().__post_init__()
        sc = self.model.spatial_compression
        for where, res in [("resolution", self.resolution)] + [
                (f"curriculum phase {p.name!r} resolution", p.resolution) for p in self.phases()]:
            if res % sc:
                raise ValueError(f"{where}: {res} is not divisible by model.spatial_compression={sc}; "
                                 f"use a multiple of {sc} (e.g. {sc * max(1, round(res / sc))})")

    def phases(self) -> tuple[PhaseConfig, ...]:
        """The curriculum's phases, or ``()`` without a curriculum."""
        return self.curriculum.phases if self.curriculum is not None else ()

    def points(self) -> list[tuple[int, int]]:
        """``(resolution, frames)`` of every phase, or ``[(resolution, clip_frames)]`` without a curriculum."""
        return [(p.resolution, p.frames) for p in self.phases()] or [(self.resolution, self.clip_frames)]

    def micro_batch_of(self, phase: PhaseConfig | None) -> int:
        """Samples per forward pass in ``phase`` (or the single-resolution run): its micro_batch or batch_size."""
        if phase is not None:
            return phase.micro_batch or phase.batch_size
        return self.micro_batch or self.train.batch_size

    def model_config(self) -> VideoVAEConfig:
        """The model config, with gradient checkpointing on when the curriculum asks for it."""
        if self.curriculum is not None and self.curriculum.gradient_checkpointing:
            return dataclasses.replace(self.model, gradient_checkpointing=True)
        return self.model


def from_section(section: Mapping[str, Any] | None, where: str = "train_video_vae") -> VideoVAETrainConfig:
    """Return the :class:`VideoVAETrainConfig` of a flat section; raise ConfigError naming a bad key.

    With ``curriculum`` set, ``steps`` defaults to the sum of the phases' steps, and ``batch_size`` /
    ``resolution`` / ``clip_frames`` / ``warmup_steps`` must not be given (the phases set them).
    """
    section = dict(section or {})
    train_section, own_section = section_parts(section, VideoVAETrainConfig, where, "video VAE")
    if section.get("curriculum") is not None:
        clash = [k for k in _PHASE_OWNED if k in section]
        if clash:
            raise ConfigError(f"{where}.{clash[0]}: set by each curriculum phase ({_PHASE_OWNED[clash[0]]}); "
                              f"remove it from the section or set curriculum: null")
        curriculum = from_dict(CurriculumConfig, section["curriculum"], f"{where}.curriculum")
        train_section.setdefault("steps", curriculum.max_steps)
        train_section["warmup_steps"] = 0  # unused with a curriculum (each phase warms up); keeps steps free
    train = from_dict(TrainConfig, train_section, where)
    cfg = dataclasses.replace(from_dict(VideoVAETrainConfig, own_section, where), train=train)
    if cfg.micro_batch is not None and train.batch_size % cfg.micro_batch:
        raise ConfigError(f"{where}.micro_batch: {cfg.micro_batch} does not divide batch_size={train.batch_size}; "
                          f"use a divisor (e.g. 1) or null")
    levels = len(cfg.model.levels)
    for i, phase in enumerate(cfg.curriculum.phases if cfg.curriculum is not None else ()):
        if phase.checkpoint_levels is not None and phase.checkpoint_levels > levels:
            raise ConfigError(f"{where}.curriculum.phases.{i}.checkpoint_levels: {phase.checkpoint_levels} is more "
                              f"than the model's {levels} levels; use 0..{levels} or null")
    return cfg


def to_section(cfg: VideoVAETrainConfig) -> dict[str, Any]:
    """Inverse of :func:`from_section`: the flat mapping (for logs and fingerprints); with a curriculum, without
    the top-level keys its phases replace."""
    out = flatten_section(cfg)
    return out if cfg.curriculum is None else {k: v for k, v in out.items() if k not in _PHASE_OWNED}


# ----------------------------------------------------------------------------- frames


def micro_batch_seed(seed: int, phase_index: int, index: int) -> int:
    """Return the 63-bit seed of global micro-batch ``index`` in phase ``phase_index`` of a run seeded ``seed``."""
    return int(np.random.SeedSequence([seed, phase_index, index]).generate_state(2, np.uint64)[0] >> np.uint64(1))


def training_crop(index: int, batch: Mapping[str, Any], *, seed: int, phase_index: int,
                  resolution: int) -> dict[str, Any]:
    """Global micro-batch ``index``'s training input from its loader batch: ``{"video": float [-1, 1]
    [B, 3, T, resolution, resolution] (random full-short-side squares), "noise_seed": int}``, both drawn from
    the micro-batch's own seed (:func:`micro_batch_seed`), so any process computes the same."""
    generator = torch.Generator().manual_seed(micro_batch_seed(seed, phase_index, index))
    video = square_resize_crop(batch["video"], resolution, generator)
    return {"video": video, "noise_seed": int(torch.randint(0, 2**62, (1,), generator=generator))}


def _to_square(video: torch.Tensor, size: int, tops: list[int], lefts: list[int]) -> torch.Tensor:
    """Crop each clip of uint8 ``video [B, C, T, H, W]`` to its ``min(H, W)`` square at (top, left), resize the
    squares to ``size`` (bilinear, antialiased, in uint8); return float [-1, 1] ``[B, C, T, size, size]``."""
    side = min(video.shape[-2:])
    squares = []
    for clip, top, left in zip(video, tops, lefts, strict=False):
        frames = clip[:, :, top:top + side, left:left + side].transpose(0, 1)  # [T, C, side, side]
        if side != size:
            # resized as uint8: a 1024 px batch of the 256 px phase (16 clips x 8 frames) takes ~0.4 s of one
            # core against ~6 s in float32, within one level of the float result (it is rounded to uint8)
            frames = F.interpolate(frames.contiguous(), size=(size, size), mode="bilinear", align_corners=False,
                                   antialias=True)
        squares.append(frames.transpose(0, 1))
    x = torch.stack(squares).to(torch.float32) / 127.5 - 1.0
    return x.clamp(-1.0, 1.0).contiguous()


def square_resize_crop(video: torch.Tensor, size: int, generator: torch.Generator) -> torch.Tensor:
    """Training frames: a random full-short-side square of each clip (same on all its frames; position drawn
    from ``generator``), resized to ``size x size``; uint8 ``[B, C, T, H, W]`` -> float [-1, 1]."""
    B, _, _, H, W = video.shape
    side = min(H, W)
    tops = torch.randint(0, H - side + 1, (B,), generator=generator).tolist()
    lefts = torch.randint(0, W - side + 1, (B,), generator=generator).tolist()
    return _to_square(video, size, tops, lefts)


def center_square_resize(video: torch.Tensor, size: int) -> torch.Tensor:
    """Evaluation frames: the central full-short-side square, resized to ``size``; deterministic.

    ``video`` is uint8 ``[B, C, T, H, W]`` or ``[C, T, H, W]``; returns float [-1, 1] of the same rank."""
    single = video.ndim == 4
    video = video[None] if single else video
    H, W = video.shape[-2:]
    side = min(H, W)
    out = _to_square(video, size, [(H - side) // 2] * len(video), [(W - side) // 2] * len(video))
    return out[0] if single else out


def validation_clips(manifest: str | Path, resolution: int, frames: int, stride: int, count: int,
                     indices: list[int] | None = None, seed: int = 0, backend: str = "decord") -> torch.Tensor:
    """Return held-out clips ``[N, 3, frames, resolution, resolution]`` in [-1, 1]: validation-split items
    ``indices`` (default: the first ``count``), time-centred (``ClipSpec(start="uniform")``), centre square,
    decoded with ``backend`` (the run's loader backend: all backends give the same frames)."""
    ds = SSv2ClipDataset(manifest, "validation", clip=ClipSpec(frames, stride, "uniform"), seed=seed,
                         backend=backend)
    chosen = list(range(min(count, len(ds)))) if indices is None else list(indices)
    return torch.stack([center_square_resize(ds[(i, 0)]["video"], resolution) for i in chosen])


# ----------------------------------------------------------------------------- data


def loader_config(cfg: VideoVAETrainConfig, manifest: str | Path, phase: PhaseConfig | None = None,
                  stable: Mapping[str, Any] | None = None) -> VideoLoaderConfig:
    """Return the train-split loader of ``phase`` (or of the single-resolution run): one step = one micro-batch.

    ``stable`` (``load_stable_config``'s dict) sets workers / prefetch / backend, never the batch size."""
    batch_size = phase.batch_size if phase is not None else cfg.train.batch_size
    frames = phase.frames if phase is not None else cfg.clip_frames
    loader = VideoLoaderConfig(manifest=str(manifest), split="train", batch_size=batch_size,
                               clip=ClipSpec(frames, cfg.clip_stride, "random"), seed=cfg.train.seed)
    if stable:
        loader = loader.with_stable({k: v for k, v in stable.items() if k != "batch_size"})
    return loader


def make_data_fn(cfg: VideoVAETrainConfig, manifest: str | Path, stable: Mapping[str, Any] | None = None):
    """Return the Trainer's data function: ``data(start_step)``, or ``data(start_step, phase)`` with a curriculum.

    Micro-batches are ``{"video": float [-1, 1] [B, 3, T, S, S], "noise_seed": int}`` from optimiser step
    ``start_step`` on; a pure function of (phase, global micro-batch index), so resuming is exact. Under data
    parallelism rank ``r`` reads global loader steps ``r, r+P, ...`` (see :func:`iterate_steps`).
    """
    state = process_state()
    accum, total = cfg.train.grad_accum, cfg.train.steps * cfg.train.grad_accum
    names = [p.name for p in cfg.phases()]

    def batches(phase: PhaseConfig | None, start_step: int) -> Iterator[dict[str, Any]]:
        phase_index = 0 if phase is None else names.index(phase.name)
        resolution = cfg.resolution if phase is None else phase.resolution
        loader = loader_config(cfg, manifest, phase, stable)
        # crops and resizes run in the loader's workers: 1024 px sources cost the 256 px phase ~1 s a step in the
        # trainer's process before (a batch's frames as float, resized there, 2 GiB at batch 16 x 8 frames)
        crop = functools.partial(training_crop, seed=cfg.train.seed, phase_index=phase_index, resolution=resolution)
        for _, batch in iterate_steps(loader, total, start_step * accum, rank=state.process_index,
                                      world=state.num_processes, transform=crop):
            yield {**batch, "micro_batch": cfg.micro_batch_of(phase),
                   "checkpoint_levels": None if phase is None else phase.checkpoint_levels}

    if cfg.curriculum is None:
        def data(start_step: int) -> Iterator[dict[str, Any]]:
            return batches(None, start_step)
    else:
        def data(start_step: int, phase: PhaseConfig) -> Iterator[dict[str, Any]]:  # type: ignore[misc]
            if phase.name not in names:
                raise ValueError(f"phase {phase.name!r} is not in the curriculum ({', '.join(names)})")
            return batches(phase, start_step)
    return data


def steps_per_epoch_fn(cfg: VideoVAETrainConfig, manifest: str | Path):
    """Return ``phase -> optimiser steps per epoch`` of the train split (for ``transition: epoch`` phases)."""
    world = process_state().num_processes
    sizes = SSv2ClipDataset(manifest, "train").sizes()

    def steps_per_epoch(phase: PhaseConfig) -> int:
        batches = len(BucketBatchSampler(sizes, phase.batch_size, seed=cfg.train.seed, drop_last=True))
        return batches // (cfg.train.grad_accum * world)

    return steps_per_epoch


# ----------------------------------------------------------------------------- step and validation


def _noise(seed: int, device: torch.device) -> torch.Generator:
    return torch.Generator(device=device).manual_seed(int(seed))


def make_step_fn(loss_fn: VideoVAELoss) -> StepFn:
    """Return ``step_fn``: sampled-latent forward, :class:`VideoVAELoss`, backward, optimiser step.

    A batch of ``B`` clips runs as micro-batches of ``batch["micro_batch"]`` (default ``B``): each one's loss is
    weighted by its share of the batch and backpropagated at once, freeing its activations, and the latent noise
    is drawn for the whole batch first and sliced, so the update equals the whole batch's (every loss term is a
    mean over samples of equal size) up to float summation order.
    """

    def step_fn(trainer: Trainer, batch: Mapping[str, Any], step: int) -> dict[str, float]:
        x = batch["video"]
        B = len(x)
        micro = min(int(batch.get("micro_batch") or B), B)
        model = trainer.models[MODEL]
        vae = trainer.unwrap(MODEL)
        cfg = vae.config
        levels = batch.get("checkpoint_levels")  # the phase's, else the model's own
        vae.checkpoint_levels = cfg.checkpoint_levels if levels is None else levels
        eps = torch.randn((B, *latent_shape(cfg, *x.shape[2:])), generator=_noise(batch["noise_seed"], x.device),
                          device=x.device)  # what reparameterize draws for the whole batch
        stats: dict[str, float] = {}
        starts = range(0, B, micro)
        for k, i in enumerate(starts):
            xs, share = x[i:i + micro], min(micro, B - i) / B
            last = k == len(starts) - 1
            sync = contextlib.nullcontext() if last else trainer.accelerator.no_sync(model)
            with sync:  # under DDP, gradients are all-reduced once per batch, after its last micro-batch
                x_hat, mean, logvar = model(xs, sample=True, eps=eps[i:i + micro])
                loss, part = loss_fn(xs, x_hat, mean, logvar, step)
                trainer.backward(loss * share, "train/loss")
            for key, value in part.items():
                stats[key] = stats.get(key, 0.0) + value * share
        trainer.optimizer_step(MODEL)
        return {f"train/{k.split('/', 1)[1]}": v for k, v in stats.items()}

    return step_fn


def make_validate_fn(cfg: VideoVAETrainConfig, manifest: str | Path, loss_fn: VideoVAELoss,
                     backend: str = "decord") -> ValidateFn:
    """Return ``validate_fn(trainer, step)`` on the first ``val_clips`` validation clips at the current phase's
    resolution and frames (clips are decoded once per size with ``backend`` and kept), in batches of the training
    micro-batch (what fits in memory for training fits without gradients)."""
    cache: dict[tuple[int, int], torch.Tensor] = {}
    kl_step = loss_fn.weights.kl_warmup_steps  # the KL weight after warm-up: val/loss comparable across steps

    def validate(trainer: Trainer, step: int) -> dict[str, float]:
        phase = trainer.curriculum.phase if trainer.curriculum is not None else None
        key = (phase.resolution, phase.frames) if phase is not None else (cfg.resolution, cfg.clip_frames)
        if key not in cache:
            cache[key] = validation_clips(manifest, key[0], key[1], cfg.clip_stride, cfg.val_clips,
                                          seed=cfg.train.seed, backend=backend)
        clips, model = cache[key], trainer.unwrap(MODEL)
        batch_size = cfg.micro_batch_of(phase)  # what one training forward holds fits without gradients
        sums = {"loss": 0.0, "recon": 0.0, "kl": 0.0, "psnr": 0.0}
        for i in range(0, len(clips), batch_size):
            x = clips[i:i + batch_size].to(trainer.accelerator.device)
            x_hat, mean, logvar = model(x, sample=False)
            _, stats = loss_fn(x, x_hat, mean, logvar, max(step, kl_step))
            mse = ((x_hat.clamp(-1, 1) - x) / 2).double().square().flatten(1).mean(1)
            n = len(x)
            sums["loss"] += stats["vae/loss"] * n
            sums["recon"] += stats["vae/recon"] * n
            sums["kl"] += stats["vae/kl"] * n
            sums["psnr"] += float((10 * torch.log10(1.0 / mse.clamp_min(1e-12))).sum())
        return {k: v / len(clips) for k, v in sums.items()}

    return validate


def kl_per_element(mean: torch.Tensor, logvar: torch.Tensor) -> float:
    """Return the KL to N(0, I) per latent element (nats), averaged over the batch."""
    return float(reduce_kl(kl_divergence(mean, logvar), "mean"))


# ----------------------------------------------------------------------------- trainer


def run_fingerprint(cfg: VideoVAETrainConfig, manifest: str | Path) -> str:
    """Return a digest of what decides the run's trajectory: params (bookkeeping aside), the manifest's rows, and
    the code (this module's import closure). Checkpoints with another fingerprint are not resumed."""
    return fingerprint_of(to_section(cfg), {"manifest": manifest_content(manifest)}, __name__)


def build_model(cfg: VideoVAETrainConfig) -> VideoVAE:
    """Return the :class:`VideoVAE` of ``cfg`` (initialised from ``train.seed``)."""
    torch.manual_seed(cfg.train.seed)
    return VideoVAE(cfg.model_config())


def make_trainer(cfg: VideoVAETrainConfig, manifest: str | Path, *, stable: Mapping[str, Any] | None = None,
                 **trainer_kwargs: Any) -> Trainer:
    """Return the :class:`Trainer` of ``cfg`` on the train split of ``manifest``.

    Constructing it resumes from the latest checkpoint under ``cfg.train.out_dir`` when that checkpoint has the
    same :func:`run_fingerprint`; otherwise it starts fresh. A perceptual weight > 0 loads VGG16 now (and raises
    :class:`lib.models.vgg.PerceptualWeightsMissing` with instructions when the weights are absent).
    """
    trainer_kwargs.setdefault("fingerprint", run_fingerprint(cfg, manifest))
    loss_fn = VideoVAELoss(cfg.loss)
    if cfg.curriculum is not None:
        epochs = any(p.transition == "epoch" for p in cfg.curriculum.phases)
        trainer_kwargs.setdefault("curriculum", CurriculumScheduler(
            cfg.curriculum, steps_per_epoch_fn(cfg, manifest) if epochs else None))
    trainer_kwargs.setdefault("early_stopping", cfg.early_stopping.build())
    backend = (stable or {}).get("backend", "decord")  # validation decodes like the loader
    trainer = Trainer(cfg.train, {MODEL: build_model(cfg)}, make_step_fn(loss_fn),
                      make_data_fn(cfg, manifest, stable),
                      validate_fn=make_validate_fn(cfg, manifest, loss_fn, backend),
                      val_every=cfg.val_every, **trainer_kwargs)
    loss_fn.to(trainer.accelerator.device)
    return trainer


def describe(cfg: VideoVAETrainConfig) -> str:
    """One line: model size, compression, and the (phase) resolutions, for logs and reports."""
    m = cfg.model_config()
    ratio = m.in_channels * m.temporal_compression * m.spatial_compression ** 2 / m.latent_channels
    params = VideoVAE(m).param_count()
    where = ", ".join(f"{r}px/{t}f" for r, t in cfg.points())
    return (f"VideoVAE {params:,} params, latent {m.latent_channels} ch, x{m.temporal_compression} time, "
            f"x{m.spatial_compression} space ({ratio:g}x fewer values); clips {where}")


__all__ = [
    "MODEL",
    "EarlyStoppingConfig",
    "VideoVAETrainConfig",
    "build_model",
    "center_square_resize",
    "describe",
    "from_section",
    "kl_per_element",
    "loader_config",
    "make_data_fn",
    "make_step_fn",
    "make_trainer",
    "training_crop",
    "make_validate_fn",
    "micro_batch_seed",
    "run_fingerprint",
    "square_resize_crop",
    "steps_per_epoch_fn",
    "to_section",
    "validation_clips",
]
