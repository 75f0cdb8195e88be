"""Curriculum training (phases of growing resolution / frame count) and plateau-based early stopping.

A curriculum is a list of :class:`PhaseConfig` (resolution, frames, batch size, peak LR, warm-up,
maximum steps, how the phase ends). :class:`CurriculumScheduler` tracks which phase a run is in;
the :class:`~lib.train.loop.Trainer` (``curriculum=``) feeds it the logged metrics after every
optimiser step and, at a transition, rebuilds the data iterator for the new phase and restarts the
LR warm-up. Its state (phase index, phase start step, plateau counters) is saved with every
checkpoint, so a run killed mid-phase resumes in that phase, at the same step, LR and data.

A phase ends (``transition``):

- ``"step"``: after ``steps`` optimiser steps;
- ``"epoch"``: after ``epochs`` epochs (``steps_per_epoch(phase)`` optimiser steps each, from the
  data, since an epoch's length depends on the phase's batch size), at most ``steps``;
- ``"plateau"``: when ``monitor`` has not improved by more than ``min_delta`` for ``patience``
  consecutive observations, at most ``steps``.

:class:`EarlyStopping` is that plateau rule on its own; the Trainer (``early_stopping=``) ends the
run cleanly on it, e.g. on a VAE's validation loss.

State dicts hold only ints, floats, strings, bools, None and lists/dicts of them: custom checkpoint
objects are opened with ``torch.load(weights_only=True)`` (see :mod:`lib.train.checkpoint`).
"""
from __future__ import annotations

import logging
import math
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Annotated, Any, Literal

from annotated_types import Doc, Ge, Gt, MinLen

from lib.config import Checked
from lib.train.schedule import warmup_cosine

log = logging.getLogger(__name__)

Mode = Literal["min", "max"]  # min: losses, max: scores
Patience = Annotated[int, Ge(1), Doc("observations without improvement")]
MinDelta = Annotated[float, Ge(0), Doc("smallest change that counts as improvement")]


# ----------------------------------------------------------------------------- plateau / early stopping


@dataclass
class EarlyStopping(Checked):
    """Plateau detector on one logged metric: stop once ``monitor`` has not improved by more than
    ``min_delta`` for ``patience`` consecutive observations.

    ``mode="min"`` for losses, ``"max"`` for scores. A non-finite value counts as no improvement.
    Observations without the ``monitor`` key are ignored, so it can be fed every log.
    """

    monitor: str = "val/loss"
    patience: Patience = 5
    min_delta: MinDelta = 0.0
    mode: Mode = "min"
    best: float | None = field(default=None, init=False)
    best_step: int = field(default=-1, init=False)
    bad_count: int = field(default=0, init=False)

    def __post_init__(self) -> None:
        super().__post_init__()
        if not self.monitor:
            raise ValueError("monitor: must name a logged metric (e.g. 'val/loss'), got ''")

    def observe(self, step: int, metrics: Mapping[str, float]) -> bool:
        """Feed the metrics logged after ``step`` optimiser steps; return :attr:`should_stop`."""
        if self.monitor not in metrics:
            return self.should_stop
        value = float(metrics[self.monitor])
        sign = 1.0 if self.mode == "min" else -1.0
        improved = math.isfinite(value) and (self.best is None or sign * (self.best - value) > self.min_delta)
        if improved:
            self.best, self.best_step, self.bad_count = value, int(step), 0
        else:
            self.bad_count += 1
        return self.should_stop

    @property
    def should_stop(self) -> bool:
        """True once ``patience`` consecutive observations brought no improvement."""
        return self.bad_count >= self.patience

    def reset(self) -> None:
        """Forget the best value (e.g. at a curriculum phase change, where the loss scale changes)."""
        self.best, self.best_step, self.bad_count = None, -1, 0

    def state_dict(self) -> dict[str, Any]:
        """Return the counters (plain numbers: loadable with ``weights_only=True``)."""
        return {"best": self.best, "best_step": self.best_step, "bad_count": self.bad_count}

    def load_state_dict(self, state: Mapping[str, Any]) -> None:
        """Restore the counters from :meth:`state_dict`."""
        self.best = None if state["best"] is None else float(state["best"])
        self.best_step, self.bad_count = int(state["best_step"]), int(state["bad_count"])


# ----------------------------------------------------------------------------- config


@dataclass(frozen=True)
class PhaseConfig(Checked):
    """One curriculum phase. ``lr`` is the phase's peak LR for optimisers built from ``TrainConfig.lr``
    (others are scaled by ``lr / TrainConfig.lr``); each phase warms up over ``warmup_steps`` and then
    decays (cosine) to ``lr * TrainConfig.min_lr_ratio`` at ``steps`` (its maximum length in optimiser
    steps; for ``"epoch"`` at the end of its epochs if sooner). ``batch_size`` replaces
    ``TrainConfig.batch_size`` while the phase runs."""

    name: Annotated[str, MinLen(1), Doc("used in logs and to check resumes")]
    resolution: Annotated[int, Ge(1)]
    frames: Annotated[int, Ge(1)]
    batch_size: Annotated[int, Ge(1)]
    lr: Annotated[float, Gt(0)]
    steps: Annotated[int, Ge(1)]
    warmup_steps: Annotated[int, Ge(0)] = 0
    transition: Literal["step", "epoch", "plateau"] = "step"
    epochs: Annotated[int, Ge(1)] = 1  # transition "epoch": epochs in this phase
    patience: Patience = 5  # transition "plateau"
    min_delta: MinDelta = 0.0
    monitor: str = "train/loss"  # transition "plateau": the metric key (e.g. "val/loss")
    mode: Mode = "min"
    # the step splits each batch into micro-batches of this size and accumulates their gradients: the same
    # update (float noise aside) with 1/(batch_size/micro_batch) of the activation memory. null: batch_size
    micro_batch: Annotated[int, Ge(1)] | None = None
    # the video VAE's checkpoint_levels while the phase runs (whole levels recomputed: memory for time; exact);
    # null: the model's own setting
    checkpoint_levels: Annotated[int, Ge(0)] | None = None

    def __post_init__(self) -> None:
        try:
            super().__post_init__()
        except ValueError as err:
            raise ValueError(f"phase {self.name!r}: {err}") from None
        if self.micro_batch is not None and self.batch_size % self.micro_batch:
            raise ValueError(f"phase {self.name!r}: micro_batch: {self.micro_batch} does not divide batch_size="
                             f"{self.batch_size}; use a divisor (e.g. 1) or null")
        if self.warmup_steps > self.steps:
            raise ValueError(f"phase {self.name!r}: warmup_steps: must be an integer in [0, steps={self.steps}], "
                             f"got {self.warmup_steps!r}; lower it or raise steps")
        if not self.monitor:
            raise ValueError(f"phase {self.name!r}: monitor: must name a logged metric (e.g. 'val/loss')")

    def plateau(self) -> EarlyStopping:
        """Return a fresh plateau detector with this phase's ``monitor``/``patience``/``min_delta``/``mode``."""
        return EarlyStopping(self.monitor, self.patience, self.min_delta, self.mode)


CPU_PHASES = (
    PhaseConfig("low", resolution=32, frames=4, batch_size=8, lr=2e-4, steps=60, warmup_steps=5),
    PhaseConfig("mid", resolution=64, frames=8, batch_size=4, lr=1.5e-4, steps=40, warmup_steps=5),
    PhaseConfig("high", resolution=128, frames=16, batch_size=2, lr=1e-4, steps=20, warmup_steps=5),
)


@dataclass(frozen=True)
class CurriculumConfig(Checked):
    """Phases run in order. Default: :data:`CPU_PHASES` (32 px/4 frames -> 64/8 -> 128/16, minutes on a CPU).

    ``gradient_checkpointing`` is for the stage building the model (activation memory at 1024 px x 49
    frames); the Trainer does not read it.
    """

    phases: Annotated[tuple[PhaseConfig, ...], MinLen(1),
                      Doc("at least one phase: name, resolution, frames, batch_size, lr, steps")] = CPU_PHASES
    gradient_checkpointing: bool = False

    def __post_init__(self) -> None:
        super().__post_init__()
        names = [p.name for p in self.phases]
        duplicates = sorted({n for n in names if names.count(n) > 1})
        if duplicates:
            raise ValueError(f"phases: names must be unique, {duplicates} repeat; rename them")

    @property
    def max_steps(self) -> int:
        """Upper bound of the run: the sum of the phases' ``steps``."""
        return sum(p.steps for p in self.phases)


CPU_DEFAULT = CurriculumConfig()

GPU_PRESET = CurriculumConfig(phases=(
    PhaseConfig("256px", resolution=256, frames=8, batch_size=16, lr=2e-4, steps=20_000, warmup_steps=1_000),
    PhaseConfig("512px", resolution=512, frames=16, batch_size=8, lr=1e-4, steps=10_000, warmup_steps=500,
                micro_batch=4),
    PhaseConfig("1024px", resolution=1024, frames=49, batch_size=4, lr=5e-5, steps=5_000, warmup_steps=500,
                micro_batch=1, checkpoint_levels=2),  # 93 -> 64 GiB estimated: one 80 GB card
), gradient_checkpointing=True)  # peaks: benchmarks/estimate_vae_memory.py (CPU), bench_vae_gpu.py (GPU)


# ----------------------------------------------------------------------------- scheduler

StepsPerEpoch = Callable[[PhaseConfig], int]


class CurriculumScheduler:
    """Which phase a run is in, and when it moves on; see the module docstring.

    Args:
        cfg: the phases.
        steps_per_epoch: ``steps_per_epoch(phase)`` -> optimiser steps in one epoch of that phase
            (e.g. ``ceil(dataset_size / (phase.batch_size * grad_accum * world_size))``); required
            when a phase has ``transition: "epoch"``.

    ``observe(step, metrics)`` is called by the Trainer after each optimiser step; when the last
    phase ends, :attr:`finished` becomes True and the run stops.
    """

    def __init__(self, cfg: CurriculumConfig, steps_per_epoch: StepsPerEpoch | None = None):
        if steps_per_epoch is None and any(p.transition == "epoch" for p in cfg.phases):
            raise ValueError("steps_per_epoch: phases with transition 'epoch' need it (optimiser steps per epoch "
                             "of a phase); pass CurriculumScheduler(cfg, steps_per_epoch=...)")
        self.cfg = cfg
        self.steps_per_epoch = steps_per_epoch
        self.phase_index = 0
        self.phase_start_step = 0
        self.finished = False
        self.history: list[dict[str, Any]] = []  # one entry per ended phase: name, start, end, reason
        self.plateau = self.phase.plateau()
        self._lengths: dict[int, int] = {}

    @property
    def phase(self) -> PhaseConfig:
        """The current phase (the last one once :attr:`finished`)."""
        return self.cfg.phases[self.phase_index]

    def step_in_phase(self, step: int) -> int:
        """Return ``step - phase_start_step``: optimiser steps run in the current phase before ``step``."""
        return step - self.phase_start_step

    def phase_length(self, index: int) -> int:
        """Return the most optimiser steps phase ``index`` may run (``steps``; fewer for an epoch budget)."""
        if index not in self._lengths:
            phase = self.cfg.phases[index]
            length = phase.steps
            if phase.transition == "epoch":
                per_epoch = int(self.steps_per_epoch(phase))  # type: ignore[misc]  # checked in __init__
                if per_epoch < 1:
                    raise ValueError(f"steps_per_epoch: returned {per_epoch} for phase {phase.name!r}; "
                                     f"must be >= 1 (is the dataset smaller than one batch?)")
                length = min(length, phase.epochs * per_epoch)
            self._lengths[index] = length
        return self._lengths[index]

    @property
    def max_steps(self) -> int:
        """Upper bound of the run length: the sum of :meth:`phase_length` over all phases."""
        return sum(self.phase_length(i) for i in range(len(self.cfg.phases)))

    def observe(self, step: int, metrics: Mapping[str, float] | None = None) -> bool:
        """Feed the state after ``step`` optimiser steps (and the metrics logged then, if any).

        Returns True when the current phase ended: the next phase starts at ``step`` (or, after the
        last phase, :attr:`finished` is set).
        """
        if self.finished:
            return False
        phase = self.phase
        plateaued = phase.transition == "plateau" and self.plateau.observe(step, metrics or {})
        if plateaued:
            reason = f"plateau of {phase.monitor} (best {self.plateau.best:.4g} at step {self.plateau.best_step})"
        elif self.step_in_phase(step) >= self.phase_length(self.phase_index):
            reason = {"step": "steps reached", "epoch": "epochs reached"}.get(phase.transition, "max steps reached")
        else:
            return False
        self.history.append({"name": phase.name, "start": self.phase_start_step, "end": int(step), "reason": reason})
        if self.phase_index + 1 == len(self.cfg.phases):
            self.finished = True
            log.info("curriculum: last phase %r ended at step %d (%s)", phase.name, step, reason)
            return True
        self.phase_index += 1
        self.phase_start_step = int(step)
        self.plateau = self.phase.plateau()
        log.info("curriculum: phase %r ended at step %d (%s); phase %r (%d px, %d frames, batch %d) starts",
                 phase.name, step, reason, self.phase.name, self.phase.resolution, self.phase.frames,
                 self.phase.batch_size)
        return True

    def lr_factor(self, step: int, *, base_lr: float, min_lr_ratio: float) -> float:
        """Return the LR multiplier of optimiser step ``step``: the current phase's warm-up + cosine at
        ``step_in_phase(step)``, times ``phase.lr / base_lr``. The cosine spans :meth:`phase_length`
        (an epoch budget shorter than ``steps`` still decays to the floor)."""
        phase = self.phase
        in_phase = max(0, self.step_in_phase(step))
        total = max(phase.warmup_steps, self.phase_length(self.phase_index))
        return phase.lr / base_lr * warmup_cosine(in_phase, warmup_steps=phase.warmup_steps,
                                                   total_steps=total, min_lr_ratio=min_lr_ratio)

    def lr_lambda(self, *, base_lr: float, min_lr_ratio: float) -> Callable[[int], float]:
        """Return ``step -> lr_factor(step, ...)`` for a ``LambdaLR``: a plain closure, so the LR
        scheduler's own state stays a step counter and this object's (checkpointed) state decides the rest."""

        def multiplier(step: int) -> float:
            return self.lr_factor(step, base_lr=base_lr, min_lr_ratio=min_lr_ratio)

        return multiplier

    def state_dict(self) -> dict[str, Any]:
        """Return the position in the curriculum (plain types: loadable with ``weights_only=True``)."""
        return {"phase_index": self.phase_index, "phase_start_step": self.phase_start_step,
                "finished": self.finished, "plateau": self.plateau.state_dict(),
                "history": [dict(h) for h in self.history], "phase_names": [p.name for p in self.cfg.phases]}

    def load_state_dict(self, state: Mapping[str, Any]) -> None:
        """Restore :meth:`state_dict`; refuse a state saved with other phases (it would resume elsewhere)."""
        names = [p.name for p in self.cfg.phases]
        if list(state["phase_names"]) != names:
            raise ValueError(f"curriculum: the checkpoint's phases {list(state['phase_names'])} differ from "
                             f"{names}; resume with the same phases or start in a new out_dir")
        self.phase_index = int(state["phase_index"])
        self.phase_start_step = int(state["phase_start_step"])
        self.finished = bool(state["finished"])
        self.plateau = self.phase.plateau()
        self.plateau.load_state_dict(state["plateau"])
        self.history = [dict(h) for h in state["history"]]


__all__ = ["CPU_DEFAULT", "CPU_PHASES", "GPU_PRESET", "CurriculumConfig", "CurriculumScheduler", "EarlyStopping",
           "MinDelta", "Mode", "Patience", "PhaseConfig", "StepsPerEpoch"]
