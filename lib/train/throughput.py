"""Samples/s of a training run's own steps, for benchmarks that launch the real stages (e.g. several GPUs).

The clock starts after ``warmup_steps`` optimiser steps of this invocation (cuDNN autotuning, compilation, the
loader's first batches) and stops at the end of the run; validation, checkpoints and logging run inside
:meth:`Throughput.excluded` and are taken out. The GPU is synchronised only at those edges, never every step, so
measuring costs the run nothing. Samples are global (every process, every accumulation round), so on N processes
the figure is the whole job's. ``peak_gib`` is this process's CUDA allocator peak (None on a CPU).
"""
from __future__ import annotations

import contextlib
import time
from collections.abc import Iterator
from typing import Any

import torch


class Throughput:
    """Counts optimiser steps and samples; times the steps after the warm-up, minus excluded sections."""

    def __init__(self, device: torch.device, warmup_steps: int = 2):
        self.device, self.warmup_steps = device, warmup_steps
        self.steps = 0  # optimiser steps seen in this invocation
        self.samples = 0  # global samples of the timed steps
        self._t0: float | None = None
        self._excluded = 0.0

    def _now(self) -> float:
        if self.device.type == "cuda":
            torch.cuda.synchronize(self.device)
        return time.perf_counter()

    def step_done(self, samples: int) -> None:
        """One optimiser step consumed ``samples`` (global); the clock starts after the warm-up steps."""
        self.steps += 1
        if self.steps == self.warmup_steps:
            self._t0 = self._now()
        elif self.steps > self.warmup_steps:
            self.samples += samples

    @contextlib.contextmanager
    def excluded(self, when: bool = True) -> Iterator[None]:
        """Time spent inside is not training time (validation, checkpoints, logging). ``when=False`` (a step
        with nothing to log or save) makes it a no-op: no GPU sync on an ordinary step."""
        if self._t0 is None or not when:
            yield
            return
        t = self._now()
        try:
            yield
        finally:
            self._excluded += self._now() - t

    def summary(self) -> dict[str, Any]:
        """``{"timed_steps", "samples", "seconds", "samples_per_s", "peak_gib"}`` (samples_per_s None when no step
        was timed: a run of at most ``warmup_steps`` steps)."""
        timed = max(0, self.steps - self.warmup_steps)
        seconds = (self._now() - self._t0 - self._excluded) if self._t0 is not None else 0.0
        peak = torch.cuda.max_memory_allocated(self.device) / 2**30 if self.device.type == "cuda" else None
        return {"timed_steps": timed, "samples": self.samples, "seconds": seconds,
                "samples_per_s": self.samples / seconds if timed and seconds > 0 else None,
                "warmup_steps": self.warmup_steps, "peak_gib": peak}


__all__ = ["Throughput"]
