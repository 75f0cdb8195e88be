"""Guards that stop (or skip) a run going wrong: non-finite losses/grad norms and GAN collapse.

Stop rules, in one place:

- :class:`NanGuard`, policy ``"stop"``: the first non-finite loss or grad norm raises
  :class:`TrainingDiverged` naming the step and the value. Policy ``"skip"``: the optimiser step is
  skipped (gradients zeroed) and counted; the run goes on.
- :class:`CollapseMonitor`: at every log it looks at named scalar stats. It *warns* when
  discriminator accuracy has stayed >= ``disc_acc_max`` for ``disc_patience`` consecutive logs
  (the discriminator has won: divergence), or when the generator's output std has been below
  ``min_std_ratio`` x the real data's std for ``std_patience`` consecutive logs (mode collapse).
  The Trainer *stops* (raises :class:`TrainingCollapsed`) once some warning has fired at
  ``stop_after`` consecutive logs, i.e. the run did not recover.
"""
from __future__ import annotations

import logging
import math
from dataclasses import dataclass, field
from typing import Any

import torch

log = logging.getLogger(__name__)


class TrainingDiverged(RuntimeError):
    """A loss or gradient norm became NaN/Inf (or a monitor gave up) at ``step``; ``name`` says which value."""

    def __init__(self, step: int, name: str, value: float, detail: str = ""):
        self.step, self.name, self.value = step, name, value
        msg = f"training diverged at step {step}: {name} = {value}"
        super().__init__(msg + (f" ({detail})" if detail else ""))


class TrainingCollapsed(TrainingDiverged):
    """:class:`CollapseMonitor` warned at ``stop_after`` consecutive logs."""


def _as_float(value: Any) -> float:
    return float(value.detach().float().item()) if isinstance(value, torch.Tensor) else float(value)


class NanGuard:
    """Checks named scalars for NaN/Inf; ``policy`` is ``"stop"`` (raise) or ``"skip"`` (count, continue)."""

    def __init__(self, policy: str = "stop"):
        if policy not in ("stop", "skip"):
            raise ValueError(f"nan_policy: {policy!r} is not one of 'stop', 'skip'")
        self.policy = policy

    def check(self, step: int, name: str, value: Any) -> bool:
        """Return True when ``value`` is finite. Otherwise raise :class:`TrainingDiverged` (policy
        ``"stop"``) or log a warning and return False (policy ``"skip"``; the caller skips the step
        and counts it)."""
        number = _as_float(value)
        if math.isfinite(number):
            return True
        if self.policy == "stop":
            raise TrainingDiverged(step, name, number, "nan_policy: stop; set nan_policy: skip to skip such steps")
        log.warning("step %d: %s = %s; skipping this optimiser step (nan_policy: skip)", step, name, number)
        return False


@dataclass
class CollapseMonitor:
    """Warns about GAN divergence / mode collapse from named scalar stats; see the module docstring.

    Keys that are absent from the stats passed to :meth:`update` switch their rule off, so the
    same monitor can watch a VAE run (no discriminator) without configuration.
    """

    disc_acc_key: str = "D/accuracy"
    disc_acc_max: float = 0.99
    disc_patience: int = 5
    fake_std_key: str = "G/fake_std"
    real_std_key: str = "G/real_std"
    min_std_ratio: float = 0.1
    std_patience: int = 1
    stop_after: int | None = 10  # None: warn only, never stop
    disc_streak: int = field(default=0, init=False)
    std_streak: int = field(default=0, init=False)
    warn_streak: int = field(default=0, init=False)
    warnings: int = field(default=0, init=False)

    def update(self, step: int, stats: dict[str, float]) -> list[str]:
        """Feed one log's stats; log and return the warnings this log raised (empty when healthy)."""
        found: list[str] = []
        acc = stats.get(self.disc_acc_key)
        self.disc_streak = self.disc_streak + 1 if acc is not None and acc >= self.disc_acc_max else 0
        if self.disc_streak >= self.disc_patience:
            found.append(f"{self.disc_acc_key} >= {self.disc_acc_max} for {self.disc_streak} consecutive logs "
                         f"(discriminator wins: divergence)")
        fake, real = stats.get(self.fake_std_key), stats.get(self.real_std_key)
        low = fake is not None and real is not None and fake < self.min_std_ratio * real
        self.std_streak = self.std_streak + 1 if low else 0
        if self.std_streak >= self.std_patience:
            found.append(f"{self.fake_std_key} = {fake:.4g} < {self.min_std_ratio} x {self.real_std_key} "
                         f"= {real:.4g} for {self.std_streak} consecutive logs (mode collapse)")
        self.warn_streak = self.warn_streak + 1 if found else 0
        self.warnings += len(found)
        for message in found:
            log.warning("step %d: %s", step, message)
        return found

    @property
    def should_stop(self) -> bool:
        """True once warnings have fired at ``stop_after`` consecutive logs."""
        return self.stop_after is not None and self.warn_streak >= self.stop_after

    def state_dict(self) -> dict[str, int]:
        """Return the streak counters (so a resumed run keeps counting)."""
        return {"disc_streak": self.disc_streak, "std_streak": self.std_streak,
                "warn_streak": self.warn_streak, "warnings": self.warnings}

    def load_state_dict(self, state: dict[str, int]) -> None:
        """Restore the counters from :meth:`state_dict`."""
        for key in ("disc_streak", "std_streak", "warn_streak", "warnings"):
            setattr(self, key, int(state[key]))


__all__ = ["CollapseMonitor", "NanGuard", "TrainingCollapsed", "TrainingDiverged"]
