"""Adversarial post-training (APT) of the one-step video SR generator: config, data, step function.

Everything here plugs into the one loop (:class:`lib.train.loop.Trainer`); there is no other loop:

- :class:`APTConfig` is the ``train_apt`` section of ``params.yaml``. The section is *flat* for the
  trainer's knobs (every :class:`TrainConfig` field: ``steps``, ``batch_size``, ``grad_accum``, ``lr``,
  ``out_dir``, ...; ``validate_ssv2`` reads the first three from the top level) and *nested* for the rest
  (``model: {channels, blocks, ...}``, ``loss: {adv, fm, r1, ...}``, ``degrade: {...}``).
  :func:`from_section` splits it into the dataclasses and rejects unknown keys, naming the closest one.
- :func:`make_data_fn`: micro-batch ``i`` is SSv2 loader step ``i`` (train split), a random
  ``crop x crop`` window per clip (same window on every frame) as float [-1, 1], and
  ``lq = degrade(hq)``; crop and degradation draw from a ``torch.Generator`` seeded by ``(seed, i)``,
  so ``data(start_step)`` after a resume yields exactly what the uninterrupted run saw.
- :func:`make_step_fn`: per micro-batch, the discriminator phase (``APTLoss.discriminator_step``
  on ``sg(G(lq))`` with lazy R1) then the generator phase (``APTLoss.generator_step`` with D frozen),
  each followed by ``trainer.backward`` / ``trainer.optimizer_step``. Stats for the collapse monitor:
  ``D/accuracy`` (mean of real and fake accuracy), ``G/fake_std`` and ``G/real_std``.
- :func:`make_trainer` wires models (``G``: :class:`VideoSRGenerator`, ``D``: patch or whole-clip
  discriminator), the EMA of G (``ema_models=["G"]``) and a :class:`CollapseMonitor`.

Text conditioning (``text_condition: true``): each clip's label (or template) vector from the
``embed_text`` cache (:func:`lib.embed.lookup_cached`) is passed to G as ``G(lq, text)`` (FiLM in every
residual block; ``model.text_dim`` must be the embedding size, 384 for all-MiniLM-L6-v2).

Data parallel (``accelerate launch``): rank ``r`` of ``P`` reads global loader steps ``r, r+P, ...``
(:func:`lib.data.video_dataset.iterate_steps`), so the ranks share the single-process data once.

GPU speed knobs: ``channels_last`` (Conv3d weights and inputs in ``channels_last_3d``) and ``compile``
(``torch.compile`` of G and D forwards; R1's double backward runs the eager D, which compile cannot
differentiate twice). Both are off by default (no gain on the CPU); see reports/benchmarks/apt_gpu.md.
"""
from __future__ import annotations

import functools
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Annotated, Any, Literal

import pandas as pd
import torch
from annotated_types import Ge
from torch import nn

from lib.config import Checked, ConfigError
from lib.data.clips import ClipSpec
from lib.data.video_dataset import VideoLoaderConfig, iterate_steps
from lib.embed import lookup_cached
from lib.losses.gan import APTLoss, GANLossWeights
from lib.models.discriminators import PatchDiscriminator3D, VideoDiscriminator
from lib.models.video_sr import VideoSRConfig, VideoSRGenerator
from lib.train.config import TrainConfig, flatten_section, split_section
from lib.train.fingerprint import manifest_content
from lib.train.fingerprint import run_fingerprint as fingerprint_of
from lib.train.guards import CollapseMonitor
from lib.train.loop import DataFn, StepFn, Trainer, process_state
from lib.video.degrade import DegradeConfig, degrade

_SEED_STRIDE = 1_000_003  # generator seed = seed * _SEED_STRIDE + micro-batch index


@dataclass(frozen=True)
class APTConfig(Checked):
    """The ``train_apt`` section: trainer knobs (``train``, flat in the file) plus the APT-specific ones.

    ``crop`` is the HQ spatial crop (divisible by ``model.scale``); the LQ input is ``crop / scale``
    a side. ``clip_frames`` / ``clip_stride`` pick the frames of a training clip. ``val_clips`` is the
    number of validation clips ``eval_apt`` scores. ``text_condition`` feeds G the cached embedding of
    each clip's ``text_source`` column (label: "Pushing a cup from left to right"; template: with
    "something"). ``channels_last`` / ``compile`` are GPU speed knobs (same maths).
    """

    train: TrainConfig = field(default_factory=TrainConfig)
    model: VideoSRConfig = field(default_factory=VideoSRConfig)
    disc: Literal["patch", "video"] = "patch"  # PatchDiscriminator3D | VideoDiscriminator
    disc_channels: Annotated[int, Ge(1)] = 32
    disc_kernel: Literal[3, 4] = 4  # patch D: k(3,4,4) convs (pix2pix) or k(3,3,3)
    disc_stem: Literal["conv", "space_to_depth"] = "conv"  # patch D: a 2x2 pixel-unshuffle before the first conv
    disc_spectral_norm: bool = True  # spectral norm on every D layer (false: the penalties alone regularise D)
    loss: GANLossWeights = field(default_factory=GANLossWeights)
    degrade: DegradeConfig = field(default_factory=DegradeConfig)
    crop: Annotated[int, Ge(1)] = 64
    clip_frames: Annotated[int, Ge(1)] = 8
    clip_stride: Annotated[int, Ge(1)] = 2
    text_condition: bool = False
    text_source: Literal["label", "template"] = "label"  # manifest column whose text conditions G
    val_clips: Annotated[int, Ge(1)] = 8
    channels_last: bool = False  # Conv3d weights and activations in torch.channels_last_3d
    compile: bool = False  # torch.compile the G and D forwards (not R1's double backward)

    def __post_init__(self) -> None:
        super().__post_init__()
        if self.model.scale != self.degrade.scale:
            raise ValueError(f"model.scale ({self.model.scale}) and degrade.scale ({self.degrade.scale}) differ; "
                             f"set both to the same upscaling factor")
        if self.crop % self.model.scale:
            raise ValueError(f"crop: {self.crop} is not divisible by model.scale={self.model.scale}; "
                             f"pick a multiple of it (e.g. {self.model.scale * max(1, self.crop // self.model.scale)})")
        if self.disc == "patch" and self.crop < 8:
            raise ValueError(f"crop: the patch discriminator needs crop >= 8, got {self.crop}")
        if self.text_condition and self.model.text_dim == 0:
            raise ValueError("text_condition: true needs model.text_dim = the text-embedding size "
                             "(384 for embed_text's all-MiniLM-L6-v2); set model.text_dim")
        if not self.text_condition and self.model.text_dim > 0:
            raise ValueError(f"model.text_dim: {self.model.text_dim} but text_condition is false; "
                             f"set text_condition: true or model.text_dim: 0")

    @property
    def lq_size(self) -> int:
        """Return the LQ side length ``crop // scale``."""
        return self.crop // self.model.scale


def from_section(section: Mapping[str, Any] | None, where: str = "train_apt") -> APTConfig:
    """Return the :class:`APTConfig` of a flat ``train_apt`` mapping; raise ConfigError on unknown keys.

    Keys that are :class:`TrainConfig` fields fill ``APTConfig.train``; the others fill APTConfig
    (``model``, ``loss`` and ``degrade`` are nested mappings).
    """
    return split_section(section, APTConfig, where, "APT")


def to_section(cfg: APTConfig) -> dict[str, Any]:
    """Inverse of :func:`from_section`: the flat mapping (for config.json / reports)."""
    return flatten_section(cfg)


# ----------------------------------------------------------------------------- data


def loader_config(cfg: APTConfig, manifest: str, stable: Mapping[str, Any] | None = None) -> VideoLoaderConfig:
    """Return the train-split loader config for ``cfg``: one loader step = one micro-batch.

    ``stable`` (``load_stable_config``'s dict) sets ``num_workers``, ``prefetch_factor`` and
    ``backend``; the batch size stays ``train_apt.batch_size`` (the trainer and ``validate_ssv2``'s
    exposure check count with it).
    """
    loader = VideoLoaderConfig(manifest=str(manifest), split="train", batch_size=cfg.train.batch_size,
                               clip=ClipSpec(cfg.clip_frames, cfg.clip_stride, "random"), seed=cfg.train.seed)
    if stable:
        loader = loader.with_stable({k: v for k, v in stable.items() if k != "batch_size"})
    return loader


def to_signed(video: torch.Tensor) -> torch.Tensor:
    """Return uint8 ``[0, 255]`` video as float32 in ``[-1, 1]``."""
    return video.to(torch.float32) / 127.5 - 1.0


def random_crop(video: torch.Tensor, size: int, generator: torch.Generator) -> torch.Tensor:
    """Return a ``size x size`` window of each clip of ``video [B, C, T, H, W]``, one window per clip
    (the same on all its frames), offsets drawn from ``generator``."""
    B, _, _, H, W = video.shape
    if size > H or size > W:
        raise ValueError(f"crop: {size} is larger than the frames ({H}x{W}); lower train_apt.crop")
    tops = torch.randint(0, H - size + 1, (B,), generator=generator).tolist()
    lefts = torch.randint(0, W - size + 1, (B,), generator=generator).tolist()
    return torch.stack([video[b, :, :, top:top + size, left:left + size]
                        for b, (top, left) in enumerate(zip(tops, lefts, strict=False))])


def center_crop(video: torch.Tensor, size: int) -> torch.Tensor:
    """Return the central ``size x size`` window of ``video [..., H, W]`` (deterministic, for evaluation)."""
    H, W = video.shape[-2:]
    if size > H or size > W:
        raise ValueError(f"crop: {size} is larger than the frames ({H}x{W}); lower train_apt.crop")
    top, left = (H - size) // 2, (W - size) // 2
    return video[..., top:top + size, left:left + size]


def micro_batch_generator(seed: int, index: int) -> torch.Generator:
    """Return the CPU generator of micro-batch ``index`` (crop offsets, then degradations)."""
    return torch.Generator().manual_seed(seed * _SEED_STRIDE + index)


def clip_texts(cfg: APTConfig, manifest: str | Path, cache_dir: str | Path,
               splits: tuple[str, ...] = ("train", "validation")) -> dict[str, torch.Tensor]:
    """Return video id -> ``[text_dim]`` float32 embedding of its ``cfg.text_source`` text, for ``splits``.

    Vectors come from the ``embed_text`` cache only; a size other than ``model.text_dim`` raises ConfigError.
    """
    frame = pd.read_parquet(manifest, columns=["id", "split", cfg.text_source])
    frame = frame[frame["split"].isin(splits)]
    texts = [str(t) for t in frame[cfg.text_source]]
    vectors = lookup_cached(cache_dir, texts)
    if vectors.shape[1] != cfg.model.text_dim:
        raise ConfigError(f"train_apt.model.text_dim: {cfg.model.text_dim}, but the cached embeddings in "
                          f"{cache_dir} have {vectors.shape[1]} dimensions; set model.text_dim: {vectors.shape[1]}")
    return {str(i): torch.from_numpy(v.copy()) for i, v in zip(frame["id"], vectors, strict=False)}


def stack_texts(texts: Mapping[str, torch.Tensor], ids: list[str]) -> torch.Tensor:
    """Return ``[len(ids), text_dim]`` embeddings of ``ids``; an id without one raises KeyError naming it."""
    missing = [i for i in ids if i not in texts]
    if missing:
        raise KeyError(f"no text embedding for video id {missing[0]!r}; rerun `dvc repro embed_text`")
    return torch.stack([texts[i] for i in ids])


def make_data_fn(cfg: APTConfig, loader: VideoLoaderConfig,
                 texts: Mapping[str, torch.Tensor] | None = None) -> DataFn:
    """Return ``data(start_step)`` for the Trainer: ``{"hq", "lq"}`` micro-batches (plus ``"text"``
    ``[B, text_dim]`` when ``texts`` maps video ids to embeddings) from optimiser step ``start_step`` on,
    a pure function of the micro-batch index (exact resume).

    ``hq`` is ``[B, 3, T, crop, crop]`` and ``lq`` ``[B, 3, T, crop/scale, crop/scale]``, float in [-1, 1].
    Under data parallelism each rank reads its share of the global sequence (see :func:`iterate_steps`),
    and crops/degradations are seeded by the global micro-batch index, so ranks see different clips.
    """
    state = process_state()
    accum, total = cfg.train.grad_accum, cfg.train.steps * cfg.train.grad_accum

    # crop and degradation (blur, noise, JPEG, codec round trips) run in the loader's workers, not in the process
    # that feeds the GPU
    pair = functools.partial(training_pair, seed=cfg.train.seed, crop=cfg.crop, degrade_cfg=cfg.degrade)

    def data(start_step: int) -> Iterator[dict[str, torch.Tensor]]:
        for _, batch in iterate_steps(loader, total, start_step * accum, rank=state.process_index,
                                      world=state.num_processes, transform=pair):
            ids = batch.pop("id")
            if texts is not None:
                batch["text"] = stack_texts(texts, ids)
            yield batch

    return data


def training_pair(index: int, batch: Mapping[str, Any], *, seed: int, crop: int,
                  degrade_cfg: DegradeConfig) -> dict[str, Any]:
    """Global micro-batch ``index``'s ``{"hq", "lq", "id"}`` from its loader batch: a random ``crop`` of each clip
    and its degradation, drawn from the micro-batch's own generator (:func:`micro_batch_generator`)."""
    generator = micro_batch_generator(seed, index)
    hq = random_crop(to_signed(batch["video"]), crop, generator)
    return {"hq": hq, "lq": degrade(hq, degrade_cfg, generator), "id": list(batch["id"])}


# ----------------------------------------------------------------------------- models and step


def build_models(cfg: APTConfig) -> dict[str, nn.Module]:
    """Return ``{"G": VideoSRGenerator, "D": discriminator}`` for ``cfg`` (seeded by ``train.seed``)."""
    torch.manual_seed(cfg.train.seed)
    G = VideoSRGenerator(cfg.model)
    D = (PatchDiscriminator3D(channels=cfg.disc_channels, kernel=cfg.disc_kernel, stem=cfg.disc_stem,
                              spectral=cfg.disc_spectral_norm)
         if cfg.disc == "patch"
         else VideoDiscriminator(channels=cfg.disc_channels, spectral=cfg.disc_spectral_norm))
    if cfg.channels_last:
        for model in (G, D):
            to_channels_last_3d(model)
    return {"G": G, "D": D}


def to_channels_last_3d(model: nn.Module) -> nn.Module:
    """Put every Conv3d weight of ``model`` in ``torch.channels_last_3d`` (other tensors have no 5-D layout)."""
    for module in model.modules():
        if isinstance(module, nn.Conv3d):
            module.to(memory_format=torch.channels_last_3d)
    return model


def make_step_fn(loss: APTLoss, *, compile: bool = False, channels_last: bool = False) -> StepFn:
    """Return the Trainer's ``step_fn``: D phase on ``sg(G(lq))`` then G phase with D frozen.

    Returns per-micro-batch stats: APTLoss's (``d/*``, ``g/*``) plus ``D/accuracy``, ``G/fake_std`` and
    ``G/real_std`` for the :class:`CollapseMonitor`. ``compile``: forwards go through ``torch.compile``
    wrappers of the (prepared) models, built on the first step; they share the parameters, so
    checkpoints, EMA and exports see the plain modules. Exact R1 (ns_r1) uses the eager D; the approximate
    R1/R2 of rpgan_r1r2 need no double backward and use the compiled one.
    """
    compiled: dict[str, nn.Module] = {}

    def forward(trainer: Trainer, name: str, unwrap: bool = False) -> nn.Module:
        model = trainer.unwrap(name) if unwrap else trainer.models[name]
        if not compile:
            return model
        key = f"{name}/{'unwrapped' if unwrap else 'prepared'}"
        if key not in compiled:
            compiled[key] = torch.compile(model)
        return compiled[key]

    def step_fn(trainer: Trainer, batch: Mapping[str, torch.Tensor], step: int) -> dict[str, torch.Tensor]:
        G, D = forward(trainer, "G"), forward(trainer, "D")
        lq, hq, text = batch["lq"], batch["hq"], batch.get("text")
        if channels_last:
            lq, hq = (t.contiguous(memory_format=torch.channels_last_3d) for t in (lq, hq))
        # discriminator phase: fake is a constant here (no graph into G)
        with torch.no_grad():
            fake = G(lq) if text is None else G(lq, text)
        loss_D, stats_D = loss.discriminator_step(D, hq, fake, step, r1_discriminator=trainer.models["D"])
        trainer.backward(loss_D, "d/loss")
        trainer.optimizer_step("D")
        # generator phase: D frozen, gradients reach G only
        with trainer.frozen("D"):
            loss_G, stats_G = loss.generator_step(G, forward(trainer, "D", unwrap=True), lq, hq, text)
            trainer.backward(loss_G, "g/loss")
        trainer.optimizer_step("G")
        return {**stats_D, **stats_G,
                "D/accuracy": (stats_D["d/acc_real"] + stats_D["d/acc_fake"]) / 2,
                "G/fake_std": fake.detach().float().std(), "G/real_std": hq.float().std()}

    return step_fn


def run_fingerprint(cfg: APTConfig, loader: VideoLoaderConfig,
                    texts: Mapping[str, torch.Tensor] | None = None) -> str:
    """Return a digest of everything that decides the run's trajectory: params (bookkeeping keys aside),
    the manifest's rows, the text vectors, and the code (this module's import closure). Checkpoints with
    another fingerprint are not resumed."""
    import hashlib

    data = {"manifest": manifest_content(loader.manifest), "split": loader.split, "seed": loader.seed}
    if texts is not None:
        h = hashlib.sha256()
        for key in sorted(texts):
            h.update(key.encode() + b"\0" + texts[key].numpy().tobytes())
        data["texts"] = h.hexdigest()
    return fingerprint_of(to_section(cfg), data, __name__)


def make_trainer(cfg: APTConfig, loader: VideoLoaderConfig, *, texts: Mapping[str, torch.Tensor] | None = None,
                 monitor: CollapseMonitor | None = None, **trainer_kwargs: Any) -> Trainer:
    """Return the :class:`Trainer` for ``cfg`` (models, step_fn, data, EMA of G, collapse monitor).

    ``texts`` (video id -> embedding, :func:`clip_texts`) is required with ``text_condition: true``.
    Constructing it resumes from the latest checkpoint under ``cfg.train.out_dir`` when that checkpoint was
    made with the same :func:`run_fingerprint`; otherwise it starts fresh.
    """
    if cfg.text_condition and texts is None:
        raise ValueError("text_condition: true needs texts (video id -> embedding); see lib.train.apt.clip_texts")
    texts = texts if cfg.text_condition else None
    trainer_kwargs.setdefault("fingerprint", run_fingerprint(cfg, loader, texts))
    step_fn = make_step_fn(APTLoss(cfg.loss), compile=cfg.compile, channels_last=cfg.channels_last)
    if cfg.train.training_mode == "lora":  # adapters on G only: D is trained from scratch, fully, each run
        trainer_kwargs.setdefault("lora_models", ["G"])
    return Trainer(cfg.train, build_models(cfg), step_fn, make_data_fn(cfg, loader, texts),
                   ema_models=["G"], monitor=monitor if monitor is not None else CollapseMonitor(),
                   **trainer_kwargs)


__all__ = ["APTConfig", "build_models", "center_crop", "clip_texts", "from_section",
           "loader_config", "make_data_fn", "make_step_fn", "make_trainer", "micro_batch_generator", "random_crop",
           "run_fingerprint", "stack_texts", "to_channels_last_3d", "to_section", "to_signed", "training_pair"]
