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
from typing import Annotated, Any, Literal

from annotated_types import Doc, Ge, Gt, Interval, MinLen

from lib.config import Checked, ConfigError, from_dict, to_dict

Beta = Annotated[float, Interval(ge=0, lt=1)]


@dataclass(frozen=True)
class TrainConfig(Checked):
    """Options of :class:`lib.train.loop.Trainer`.

    Counts are in optimiser steps unless the name says otherwise. ``batch_size`` is the micro-batch
    one process sees per forward pass; one optimiser step consumes ``grad_accum`` micro-batches on
    each of ``num_processes`` processes.
    """

    steps: Annotated[int, Ge(1)] = 300  # optimiser steps in the whole run
    batch_size: Annotated[int, Ge(1)] = 4  # per process, per micro-batch
    grad_accum: Annotated[int, Ge(1)] = 1  # micro-batches per optimiser step
    lr: Annotated[float, Gt(0)] = 2e-4  # peak learning rate (after warm-up) of optimisers built from this config
    betas: tuple[Beta, Beta] = (0.0, 0.99)
    weight_decay: Annotated[float, Ge(0)] = 0.0
    warmup_steps: Annotated[int, Ge(0)] = 20  # linear warm-up, then cosine decay to lr * min_lr_ratio at `steps`
    min_lr_ratio: Annotated[float, Interval(ge=0, le=1)] = 0.1
    # max global grad norm per optimiser; 0: no clipping (the norm is still logged)
    grad_clip: Annotated[float, Ge(0), Doc("0 disables clipping")] = 1.0
    # Not accelerate's "no": `dvc exp run -S` rewrites params.yaml without quotes, and YAML 1.1 then reads a bare
    # no as false.
    mixed_precision: Literal["fp32", "fp16", "bf16"] = "fp32"
    ema_half_life_images: Annotated[float, Gt(0)] = 500.0  # EMA half-life in images (stylegan2-ada)
    # half-life <= samples_seen * ema_rampup early in training
    ema_rampup: Annotated[float, Gt(0), Doc("null: no ramp-up")] | None = None
    checkpoint_every: Annotated[int, Ge(1)] = 50
    keep_checkpoints: Annotated[int, Ge(1)] = 3
    # runs whose checkpoints were set aside by a run with another fingerprint (latest checkpoint each, newest
    # runs first); None keeps them all
    keep_superseded: Annotated[int, Ge(0)] | None = None
    log_every: Annotated[int, Ge(1)] = 10
    seed: int = 0
    tracker: Literal["dvclive", "wandb", "none"] = "dvclive"  # wandb: always offline
    tracker_dir: str | None = None  # where DVCLive writes metrics/plots; None: <out_dir>/dvclive
    out_dir: Annotated[str, MinLen(1)] = "data/models/run"
    init_from: str | None = None  # a weights file, or a directory of <model name>.safetensors
    training_mode: Literal["full", "lora"] = "full"
    lora_rank: Annotated[int, Ge(1)] = 8
    lora_alpha: Annotated[int, Ge(1)] = 16
    lora_targets: list[str] = field(default_factory=list)  # glob patterns of module names
    nan_policy: Literal["stop", "skip"] = "stop"  # stop raises TrainingDiverged; skip zeroes grads, skips the step
    # wall-clock budget of one invocation (a lease, a SLURM time limit): the run checkpoints and ends with
    # stop_reason "time" once it is spent; a rerun resumes with a fresh budget. None: no limit.
    max_minutes: Annotated[float, Gt(0)] | None = None

    def __post_init__(self) -> None:
        super().__post_init__()
        if self.warmup_steps > self.steps:
            raise ValueError(f"warmup_steps: must be in [0, steps={self.steps}], got {self.warmup_steps}")
        if self.training_mode == "lora" and not self.lora_targets:
            raise ValueError("lora_targets: training_mode 'lora' needs at least one module name pattern "
                             "(e.g. ['*.to_q', '*.to_v']); add them or set training_mode: full")
        if self.training_mode == "full" and self.lora_targets:
            raise ValueError("lora_targets: set but training_mode is 'full'; set training_mode: lora or remove them")

    @property
    def images_per_step(self) -> int:
        """Images one process consumes per optimiser step (``batch_size * grad_accum``)."""
        return self.batch_size * self.grad_accum


__all__ = ["TrainConfig", "flatten_section", "section_parts", "split_section"]


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
