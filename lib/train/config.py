"""TrainConfig: every knob of the one training loop, checked when it is built.

A trainer stage reads it with ``load_section(params_path, "<stage>", TrainConfig)`` (or nests it in
its own config dataclass); a typo or an out-of-range value fails before any model is built, with a
message naming the field and the fix.
"""
from __future__ import annotations

import dataclasses
import difflib
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from lib.config import ConfigError, from_dict, to_dict

MIXED_PRECISION = ("fp32", "fp16", "bf16")
TRACKERS = ("dvclive", "wandb", "none")
TRAINING_MODES = ("full", "lora")
NAN_POLICIES = ("stop", "skip")


@dataclass(frozen=True)
class TrainConfig:
    """Options of :class:`lib.train.loop.Trainer`.

    Counts are in optimiser steps unless the name says otherwise. ``batch_size`` is the micro-batch
    one process sees per forward pass; one optimiser step consumes ``grad_accum`` micro-batches on
    each of ``num_processes`` processes.
    """

    steps: int = 300  # optimiser steps in the whole run
    batch_size: int = 4  # per process, per micro-batch
    grad_accum: int = 1  # micro-batches per optimiser step
    lr: float = 2e-4  # peak learning rate (after warm-up) of optimisers built from this config
    betas: tuple[float, float] = (0.0, 0.99)
    weight_decay: float = 0.0
    warmup_steps: int = 20  # linear warm-up, then cosine decay to lr * min_lr_ratio at `steps`
    min_lr_ratio: float = 0.1
    grad_clip: float = 1.0  # max global grad norm per optimiser; 0 disables clipping (norm still logged)
    # "fp32" | "fp16" | "bf16". Not accelerate's "no": `dvc exp run -S` rewrites params.yaml without quotes,
    # and YAML 1.1 then reads a bare no as false.
    mixed_precision: str = "fp32"
    ema_half_life_images: float = 500.0  # EMA half-life in images (stylegan2-ada)
    ema_rampup: float | None = None  # half-life <= samples_seen * ema_rampup early in training
    checkpoint_every: int = 50
    keep_checkpoints: int = 3
    log_every: int = 10
    seed: int = 0
    tracker: str = "dvclive"  # "dvclive" | "wandb" (always offline) | "none"
    tracker_dir: str | None = None  # where DVCLive writes metrics/plots; None: <out_dir>/dvclive
    out_dir: str = "data/models/run"
    init_from: str | None = None  # a weights file, or a directory of <model name>.safetensors
    training_mode: str = "full"  # "full" | "lora"
    lora_rank: int = 8
    lora_alpha: int = 16
    lora_targets: list[str] = field(default_factory=list)  # glob patterns of module names
    nan_policy: str = "stop"  # "stop" raises TrainingDiverged; "skip" zeroes grads and skips the step

    def __post_init__(self) -> None:
        _positive_int(self, "steps", "batch_size", "grad_accum", "checkpoint_every", "keep_checkpoints",
                      "log_every", "lora_rank", "lora_alpha")
        if self.lr <= 0:
            raise ValueError(f"lr: must be > 0, got {self.lr}")
        if len(self.betas) != 2 or not all(0.0 <= b < 1.0 for b in self.betas):
            raise ValueError(f"betas: need two numbers in [0, 1), got {self.betas!r}")
        if self.weight_decay < 0:
            raise ValueError(f"weight_decay: must be >= 0, got {self.weight_decay}")
        if not 0 <= self.warmup_steps <= self.steps:
            raise ValueError(f"warmup_steps: must be in [0, steps={self.steps}], got {self.warmup_steps}")
        if not 0.0 <= self.min_lr_ratio <= 1.0:
            raise ValueError(f"min_lr_ratio: must be in [0, 1], got {self.min_lr_ratio}")
        if self.grad_clip < 0:
            raise ValueError(f"grad_clip: must be >= 0 (0 disables clipping), got {self.grad_clip}")
        if self.ema_half_life_images <= 0:
            raise ValueError(f"ema_half_life_images: must be > 0, got {self.ema_half_life_images}")
        if self.ema_rampup is not None and self.ema_rampup <= 0:
            raise ValueError(f"ema_rampup: must be > 0 or null (no ramp-up), got {self.ema_rampup}")
        _one_of(self, "mixed_precision", MIXED_PRECISION)
        _one_of(self, "tracker", TRACKERS)
        _one_of(self, "training_mode", TRAINING_MODES)
        _one_of(self, "nan_policy", NAN_POLICIES)
        if not self.out_dir:
            raise ValueError("out_dir: must be a non-empty path")
        if self.training_mode == "lora" and not self.lora_targets:
            raise ValueError("lora_targets: training_mode 'lora' needs at least one module name pattern "
                             "(e.g. ['*.to_q', '*.to_v']); add them or set training_mode: full")
        if self.training_mode == "full" and self.lora_targets:
            raise ValueError("lora_targets: set but training_mode is 'full'; set training_mode: lora or remove them")

    @property
    def images_per_step(self) -> int:
        """Images one process consumes per optimiser step (``batch_size * grad_accum``)."""
        return self.batch_size * self.grad_accum


def _positive_int(cfg: TrainConfig, *names: str) -> None:
    for name in names:
        value = getattr(cfg, name)
        if isinstance(value, bool) or not isinstance(value, int) or value < 1:
            raise ValueError(f"{name}: must be an integer >= 1, got {value!r}")


def _one_of(cfg: TrainConfig, name: str, allowed: tuple[str, ...]) -> None:
    value = getattr(cfg, name)
    if value not in allowed:
        raise ValueError(f"{name}: {value!r} is not one of {', '.join(repr(a) for a in allowed)}")


__all__ = ["MIXED_PRECISION", "NAN_POLICIES", "TRACKERS", "TRAINING_MODES", "TrainConfig", "flatten_section",
           "section_parts", "split_section"]


# ----------------------------------------------------------------------------- trainer sections of params.yaml

def section_parts(section: Mapping[str, Any] | None, cls: type, where: str,
                  kind: str = "") -> tuple[dict[str, Any], dict[str, Any]]:
    """Split one flat trainer section into ``(TrainConfig keys, cls's own keys)``; ConfigError on unknown keys.

    Every trainer stage's section is flat for the loop's knobs (the :class:`TrainConfig` fields: ``steps``,
    ``batch_size``, ``grad_accum``, ``lr``, ``out_dir``, ...; ``validate_ssv2`` reads the first three from the
    top level) and holds the trainer's own keys beside them (nested mappings for models and losses). An
    unknown key raises :class:`lib.config.ConfigError` naming ``<where>.<key>``, the closest known key and both
    key lists (``kind`` names the trainer's own keys in the message, e.g. "APT").
    """
    section = dict(section or {})
    train_keys = {f.name for f in dataclasses.fields(TrainConfig) if f.init}
    own_keys = {f.name for f in dataclasses.fields(cls) if f.init} - {"train"}
    unknown = [k for k in section if k not in train_keys | own_keys]
    if unknown:
        close = difflib.get_close_matches(str(unknown[0]), sorted(train_keys | own_keys), n=1)
        hint = f"; did you mean '{close[0]}'?" if close else ""
        raise ConfigError(f"{where}.{unknown[0]}: unknown key{hint} (trainer keys: {', '.join(sorted(train_keys))}; "
                          f"{kind or cls.__name__} keys: {', '.join(sorted(own_keys))}); "
                          f"remove or rename it in the params file")
    return ({k: v for k, v in section.items() if k in train_keys}, {k: v for k, v in section.items() if k in own_keys})


def split_section(section: Mapping[str, Any] | None, cls: type, where: str, kind: str = "") -> Any:
    """Return ``cls`` (a dataclass with a ``train: TrainConfig`` field) built from one flat params section
    (see :func:`section_parts`)."""
    train, own = section_parts(section, cls, where, kind)
    return dataclasses.replace(from_dict(cls, own, where), train=from_dict(TrainConfig, train, where))


def flatten_section(cfg: Any) -> dict[str, Any]:
    """Inverse of :func:`split_section`: the flat mapping (for config.json, reports and fingerprints)."""
    flat = to_dict(cfg)
    return {**flat.pop("train"), **flat}
