"""Learning-rate schedule: linear warm-up, then cosine decay to a floor (nanoGPT's ``get_lr``).

The schedule is a pure function of the optimiser step, so a resumed run gets the same rate as an
uninterrupted one; :func:`make_scheduler` wraps it in a ``LambdaLR`` that accelerate saves and restores.
A curriculum (:mod:`lib.train.curriculum`) uses its own multiplier and :func:`refresh_lr` at phase changes.
"""
from __future__ import annotations

import math
from typing import Any

import torch


def warmup_cosine(step: int, *, warmup_steps: int, total_steps: int, min_lr_ratio: float) -> float:
    """Return the LR multiplier (of the peak LR) for optimiser step ``step`` (0-based).

    - warm-up: ``(step + 1) / (warmup_steps + 1)`` for ``step < warmup_steps`` (never 0, so step 0 learns);
    - ``step == warmup_steps``: 1.0 (the peak);
    - then cosine from 1.0 down to ``min_lr_ratio`` at ``step == total_steps``; constant after that.
    """
    if step < warmup_steps:
        return (step + 1) / (warmup_steps + 1)
    if step >= total_steps:
        return min_lr_ratio
    decay_ratio = (step - warmup_steps) / max(1, total_steps - warmup_steps)
    coeff = 0.5 * (1.0 + math.cos(math.pi * decay_ratio))  # 1 -> 0
    return min_lr_ratio + coeff * (1.0 - min_lr_ratio)


def make_scheduler(optimizer: torch.optim.Optimizer, *, warmup_steps: int, total_steps: int,
                   min_lr_ratio: float) -> torch.optim.lr_scheduler.LambdaLR:
    """Return a ``LambdaLR`` applying :func:`warmup_cosine` to every param group's initial LR.

    Call ``scheduler.step()`` once per optimiser step. The lambda is a plain closure, so the
    scheduler's state dict holds only counters (safe for ``torch.load(weights_only=True)``).
    """

    def multiplier(step: int) -> float:
        return warmup_cosine(step, warmup_steps=warmup_steps, total_steps=total_steps, min_lr_ratio=min_lr_ratio)

    return torch.optim.lr_scheduler.LambdaLR(optimizer, multiplier)


def refresh_lr(scheduler: Any) -> list[float]:
    """Set the optimiser's LRs to the schedule's value at the scheduler's current step, without advancing it.

    Why: ``LambdaLR.step()`` at the end of step ``s - 1`` already computed step ``s``'s LR; when the
    multiplier changes afterwards (a curriculum phase starting at ``s``), the LR must be recomputed
    before step ``s`` runs (and before the checkpoint at ``s``, which saves the optimiser's LR).
    ``scheduler`` is a ``LambdaLR`` or accelerate's wrapper of one. Returns the new LRs.
    """
    inner = getattr(scheduler, "scheduler", scheduler)  # accelerate's AcceleratedScheduler wraps it
    lrs = [base * fn(inner.last_epoch) for base, fn in zip(inner.base_lrs, inner.lr_lambdas, strict=False)]
    for group, lr in zip(inner.optimizer.param_groups, lrs, strict=False):
        if isinstance(group["lr"], torch.Tensor):  # tensor LRs (capturable optimisers) are updated in place
            group["lr"].fill_(lr)
        else:
            group["lr"] = lr
    inner._last_lr = list(lrs)  # what get_last_lr() (logged as lr/<name>) returns
    return lrs


__all__ = ["make_scheduler", "refresh_lr", "warmup_cosine"]
