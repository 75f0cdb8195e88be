"""The one training loop: ``Trainer(cfg, models, step_fn, data).run()``.

Every trainer of the repo (GAN post-training, VAEs, curricula, the CAD VLM) is a ``step_fn`` plus a
``data`` function handed to this class. The loop, top to bottom, per optimiser step::

    for each of cfg.grad_accum micro-batches:        # accelerate decides when gradients sync
        batch = next(data)                            # moved to the device
        metrics = step_fn(trainer, batch, step)       # forward, loss, trainer.backward(loss),
                                                      # trainer.optimizer_step(name): clip, step,
                                                      # zero, LR schedule (only on the last micro-batch)
    update the EMA of cfg's ema_models                # half-life in images
    every log_every steps: log mean metrics, LRs, grad norms; run the collapse monitor
    every val_every steps (with validate_fn): validation metrics, logged as val/*
    curriculum / early stopping observe what was logged; a phase change rebuilds data and restarts warm-up
    every checkpoint_every steps (and at the end): atomic checkpoint, keep the last K
    at the end: <out_dir>/final/{raw,ema}/<model>.safetensors, metrics.json, config.json

It runs unchanged on a CPU, one GPU, or several through ``accelerate launch`` (DDP/FSDP); mixed
precision and distribution are accelerate's (``Accelerator(mixed_precision=...)``, ``prepare``).
Several CPU processes (gloo), as the DDP test does: ``ACCELERATE_USE_CPU=1 torchrun --standalone
--nproc_per_node 2 train.py``; ``data`` then shards by ``accelerate.PartialState().process_index``.

Resumption: at construction the latest complete checkpoint under ``out_dir`` (if any) is loaded
(weights, optimisers, schedules, RNG, EMA, counters) and ``data(start_step)`` is called with the
step to resume at, so the data order resumes too. A resumed run equals an uninterrupted one when
``data`` is a function of the step (e.g. a generator seeded by the step index). Only a checkpoint with
the run's own ``fingerprint`` is resumed; another run's is moved to ``checkpoints/superseded-<its
fingerprint>/`` (its latest checkpoint) and comes back if that run's fingerprint does. The main process
holds a lock on ``out_dir`` from construction to the end of :meth:`Trainer.run`, so a second process on
the same ``out_dir`` fails at once, naming the holder.

Run length: ``cfg.steps`` optimiser steps, unless the run ends earlier because

- ``curriculum=`` (:class:`~lib.train.curriculum.CurriculumScheduler`) finished its last phase. A
  curriculum run therefore lasts at most ``min(cfg.steps, curriculum.max_steps)`` steps (sum of the
  phases' steps); set ``cfg.steps`` >= that to run every phase (a smaller one truncates the curriculum,
  with a warning). With a curriculum, ``data`` is called as ``data(start_step, phase)`` and called again
  at every phase change; the phase's ``batch_size`` replaces ``cfg.batch_size`` (images counted for EMA
  and ``train/samples_seen``), and the LR is ``phase.lr / cfg.lr`` x each phase's own warm-up + cosine
  over its ``steps`` (``cfg.warmup_steps`` is not used). Logged with the train metrics, like ``lr/*``
  for the next step (so a log at a phase change shows the new phase and its first warm-up LR):
  ``curriculum/{phase,resolution,frames,batch_size}``; ``final/curriculum.json`` lists the phases run.
- ``early_stopping=`` (:class:`~lib.train.curriculum.EarlyStopping`) saw its metric plateau. With a
  curriculum it is reset at each phase change (the loss scale changes with the resolution).

``final/metrics.json`` says why the run ended: ``stop_reason`` (``"steps"``, ``"curriculum"``,
``"early_stopping"`` or ``"time"``: ``cfg.max_minutes`` of this invocation's wall clock were spent; a rerun
resumes from that checkpoint with a fresh budget) and ``stopped_early`` (true for early stopping). Both
objects are checkpointed, so a resumed run continues mid-phase, and rerunning a stopped run is a no-op as for
a finished one.

Validation (``validate_fn(trainer, step) -> {name: scalar}``, every ``val_every`` steps): models in
eval mode, ``torch.no_grad``, torch RNG forked (validation does not change the training trajectory);
values are averaged over processes and logged as ``val/<name>``.

Tracking (``cfg.tracker``):

- ``"dvclive"``: ``dvclive.Live(dir=<out_dir>/dvclive, save_dvc_exp=False, dvcyaml=False)``. The
  history lands in ``<out_dir>/dvclive/plots/metrics/<key>.tsv``, the latest values in
  ``<out_dir>/dvclive/metrics.json`` and the config in ``<out_dir>/dvclive/params.yaml``. The stage in
  ``dvc.yaml`` declares them (``metrics: [<out_dir>/dvclive/metrics.json]``,
  ``plots: [<out_dir>/dvclive/plots/metrics: {x: step}]``), which is what ``dvc exp show`` and
  ``dvc plots`` read; DVCLive itself therefore neither edits ``dvc.yaml`` nor makes Git experiment
  refs (``dvc exp run`` records the experiment). Pass ``tracker_kwargs`` to change that.
  On resume, rows logged after the checkpoint are dropped, so no step appears twice.
- ``"wandb"``: offline mode only, files under ``<out_dir>/wandb``.
- ``"none"``: no tracker; metrics are still returned and written to ``final/metrics.json``.

One Trainer per process at a time: accelerate keeps process-wide state.
"""
from __future__ import annotations

import contextlib
import copy
import importlib.util
import json
import logging
import math
import shutil
import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from pathlib import Path
from typing import Any

import torch
from accelerate import Accelerator, PartialState
from accelerate.utils import parse_flag_from_env, send_to_device, set_seed
from torch import nn
from tqdm.auto import tqdm

from lib.config import to_dict
from lib.io import atomic_write_json, atomic_write_text
from lib.locks import exclusive
from lib.train.checkpoint import (
    TrainState,
    checkpoint_fingerprint,
    latest_checkpoint,
    load_checkpoint,
    prune_superseded,
    restore_superseded,
    save_checkpoint,
    set_aside,
)
from lib.train.config import TrainConfig
from lib.train.curriculum import CurriculumScheduler, EarlyStopping, PhaseConfig
from lib.train.ema import EMA
from lib.train.guards import CollapseMonitor, NanGuard, TrainingCollapsed
from lib.train.lora import InitFromError, apply_lora, has_lora, init_from, merge_lora
from lib.train.schedule import make_scheduler, refresh_lr
from lib.train.throughput import Throughput

log = logging.getLogger(__name__)

StepFn = Callable[["Trainer", Any, int], Mapping[str, Any]]
DataFn = Callable[[int], Iterator[Any]]
PhaseDataFn = Callable[[int, PhaseConfig], Iterator[Any]]  # data(start_step, phase), with a curriculum
ValidateFn = Callable[["Trainer", int], Mapping[str, Any]]
STOP_REASONS = ("steps", "curriculum", "early_stopping", "time")


def process_state() -> PartialState:
    """accelerate's process state (rank, world size) as the Trainer's Accelerator will see it.

    Data functions are built before the Trainer and ask for their rank. A bare ``PartialState()`` made first fixes
    the shared state for the whole process, and on a CPU it ignores ``ACCELERATE_USE_CPU`` (which ``accelerate
    launch --cpu`` sets and the Accelerator honours), so every rank of a multi-process CPU run would think it was
    the only one: each would train alone on the same data. Passing the flag on gives gloo DDP there too.
    """
    return PartialState(cpu=parse_flag_from_env("ACCELERATE_USE_CPU"))


class Trainer:
    """The training loop shared by every trainer; see the module docstring for the order of operations.

    Args:
        cfg: the run's :class:`TrainConfig`.
        models: name -> module. Every model is placed on the device and wrapped (DDP/FSDP) by accelerate.
        step_fn: ``step_fn(trainer, batch, step) -> {name: scalar}``; does one micro-batch's forward and
            loss, calls :meth:`backward` and :meth:`optimizer_step`; returns metrics to log (floats or
            0-d tensors; averaged over micro-batches and over the steps between logs).
        data: ``data(start_step)`` returns an iterator of micro-batches (``cfg.batch_size`` each, for
            this process) starting at optimiser step ``start_step``, i.e. after
            ``start_step * cfg.grad_accum`` micro-batches. It must not run out before ``cfg.steps``.
            With a curriculum: ``data(start_step, phase)``, micro-batches of ``phase.batch_size`` at
            ``phase.resolution`` / ``phase.frames``; called again at each phase change.
        optimizers: name -> optimiser over that model's parameters. Default: AdamW
            (``cfg.lr``, ``cfg.betas``, ``cfg.weight_decay``) for every model with trainable
            parameters. Must be None with ``training_mode: lora`` (the adapters exist only later).
        ema_models: names of models to keep an EMA of (half-life ``cfg.ema_half_life_images``).
        lora_models: with ``training_mode: lora``, the models to adapt (default: all).
        monitor: a :class:`CollapseMonitor` fed the logged metrics; its stop rule ends the run.
        tracker_kwargs: extra keyword arguments for the tracker (``dvclive.Live`` / ``wandb.init``).
        fingerprint: what the run was started with; checkpoints with another one are not resumed.
        curriculum: phases (see the module docstring); ``data`` is then ``data(start_step, phase)``.
        early_stopping: ends the run when its ``monitor`` metric plateaus.
        validate_fn: ``validate_fn(trainer, step) -> {name: scalar}``, logged as ``val/<name>`` (same keys
            on every process: they are averaged).
        val_every: optimiser steps between validations (default ``cfg.log_every``).
    """

    def __init__(self, cfg: TrainConfig, models: Mapping[str, nn.Module], step_fn: StepFn, data: DataFn | PhaseDataFn,
                 optimizers: Mapping[str, torch.optim.Optimizer] | None = None, *,
                 ema_models: Sequence[str] = (), lora_models: Sequence[str] | None = None,
                 monitor: CollapseMonitor | None = None, tracker_kwargs: Mapping[str, Any] | None = None,
                 fingerprint: str = "", curriculum: CurriculumScheduler | None = None,
                 early_stopping: EarlyStopping | None = None, validate_fn: ValidateFn | None = None,
                 val_every: int | None = None):
        if cfg.tracker == "wandb" and importlib.util.find_spec("wandb") is None:
            raise ValueError("tracker: 'wandb' is not installed in this environment; "
                             "install it or set tracker: dvclive")
        _check_names("ema_models", ema_models, models)
        _check_names("lora_models", lora_models or (), models)
        _check_names("optimizers", optimizers or {}, models)
        self.val_every = _check_validation(cfg, curriculum, early_stopping, validate_fn, val_every)
        self.cfg, self.step_fn, self.data = cfg, step_fn, data
        self.curriculum, self.early_stopping, self.validate_fn = curriculum, early_stopping, validate_fn
        self.stop_reason: str | None = None  # why run() ended: one of STOP_REASONS
        self._deadline: float | None = None  # time.monotonic() at which cfg.max_minutes are spent (set by run)
        self._batches: Iterator[Any] = iter(())  # run() opens the data; a phase change reopens it
        self.out_dir = Path(cfg.out_dir)
        self.monitor = monitor
        self.tracker_kwargs = dict(tracker_kwargs or {})
        self.accelerator = Accelerator(
            mixed_precision="no" if cfg.mixed_precision == "fp32" else cfg.mixed_precision,
            gradient_accumulation_steps=cfg.grad_accum,
            log_with=None if cfg.tracker == "none" else cfg.tracker,
            step_scheduler_with_optimizer=False,  # the schedule counts optimiser steps, whatever the world size
            project_dir=str(self.out_dir),
        )
        set_seed(cfg.seed, device_specific=True)  # seed + rank: ranks draw different noise
        self.guard = NanGuard(cfg.nan_policy)
        self.state = TrainState()
        self.step = 0  # the optimiser step being run (0-based); step_fn also receives it
        self.grad_norms: dict[str, float] = {}
        self._bad_loss = False  # a non-finite loss since the last optimizer_step (nan_policy: skip)

        # 1. weights: initial weights, then LoRA adapters (which freeze the base weights)
        models = dict(models)
        if cfg.init_from:
            self._load_initial_weights(models, Path(cfg.init_from))
        if cfg.training_mode == "lora":
            if optimizers is not None:
                raise ValueError("optimizers: must be None with training_mode: lora (the Trainer builds them "
                                 "over the LoRA parameters it injects)")
            for name in lora_models or list(models):
                apply_lora(models[name], cfg.lora_rank, cfg.lora_alpha, cfg.lora_targets)

        # 2. one optimiser and one LR schedule per trained model
        if optimizers is None:
            optimizers = {name: self._default_optimizer(m) for name, m in models.items()
                          if any(p.requires_grad for p in m.parameters())}
        schedulers = {name: self._make_scheduler(opt) for name, opt in optimizers.items()}

        # 3. accelerate: device placement, DDP/FSDP wrapping, autocast, grad scaler (one prepare call)
        prepared = self.accelerator.prepare(*models.values(), *optimizers.values(), *schedulers.values())
        prepared = list(prepared) if isinstance(prepared, (list, tuple)) else [prepared]
        self.models = dict(zip(models, prepared[:len(models)], strict=False))
        self.optimizers = dict(zip(optimizers, prepared[len(models):len(models) + len(optimizers)], strict=False))
        self.schedulers = dict(zip(schedulers, prepared[len(models) + len(optimizers):], strict=False))

        # 4. EMA, counters and monitor are saved with every checkpoint, beside models and optimisers
        self.emas = {name: EMA(self.unwrap(name), cfg.ema_half_life_images, cfg.ema_rampup) for name in ema_models}
        #    (appended in this order, so checkpoints of runs without them keep their file indices)
        extra = [obj for obj in (monitor, curriculum, early_stopping) if obj is not None]
        self.accelerator.register_for_checkpointing(self.state, *self.emas.values(), *extra)

        # 5. one process at a time writes out_dir (released by run() or close()); then resume the latest
        #    checkpoint of this run: one made with other params, data or code is set aside, not resumed
        self._lock = contextlib.ExitStack()
        if self.accelerator.is_main_process:
            self._lock.enter_context(exclusive(self.out_dir, "trainer out_dir"))
        try:
            self.state.fingerprint = fingerprint
            self._restored = self._switch_runs(fingerprint)
            self.resumed_from = latest_checkpoint(self.out_dir)
            if self.resumed_from is not None:
                load_checkpoint(self.accelerator, self.resumed_from)
                log.info("resumed from %s at step %d", self.resumed_from, self.state.step)
        except BaseException:
            self.close()
            raise
        self.step = self.state.step

    def close(self) -> None:
        """Release ``out_dir`` for other processes (run() does it when it ends)."""
        self._lock.close()

    def _switch_runs(self, fingerprint: str) -> bool:
        """Set aside the checkpoints of another run (other fingerprint) and bring back this run's, if it was set
        aside earlier; return True when it was (the run then resumes from there)."""
        acc, out = self.accelerator, self.out_dir
        latest = latest_checkpoint(out)
        restored = None
        if acc.is_main_process:
            if latest is not None and (old := checkpoint_fingerprint(latest)) != fingerprint:
                aside = set_aside(out, old)
                log.warning("checkpoints in %s were made with other params, data or code: starting another run; "
                            "the old run's latest checkpoint is kept in %s (its run resumes from there when its "
                            "params, data and code come back; delete the folder to free the space)",
                            latest.parent, aside)
            restored = restore_superseded(out, fingerprint)
            if restored is not None:
                log.info("this run was set aside earlier: its checkpoint %s is back in place", restored)
            for path in prune_superseded(out, self.cfg.keep_superseded):
                log.info("keep_superseded: %s: deleted %s", self.cfg.keep_superseded, path)
        acc.wait_for_everyone()
        return restored is not None  # known on the main process, the only one that touches the tracker files

    # ---------------------------------------------------------------- helpers for step_fn

    def backward(self, loss: torch.Tensor, name: str = "loss") -> None:
        """Backpropagate ``loss`` (scaled for accumulation / fp16 by accelerate) after the NaN guard.

        A non-finite loss raises :class:`TrainingDiverged` (``nan_policy: stop``) or makes the next
        :meth:`optimizer_step` skip (``nan_policy: skip``; backward still runs so DDP stays in step).
        ``name`` is the value's name in error messages.
        """
        if not self.guard.check(self.step, name, loss):
            self._bad_loss = True
        self.accelerator.backward(loss)

    def optimizer_step(self, name: str) -> None:
        """Clip, step, zero the gradients of model ``name`` and advance its LR schedule.

        Does nothing on micro-batches that only accumulate gradients. A non-finite gradient norm
        (or loss, see :meth:`backward`) stops the run or skips this step, per ``cfg.nan_policy``;
        a skipped step still advances the LR schedule, which is a function of the step.
        """
        if not self.accelerator.sync_gradients:  # still accumulating micro-batches
            return
        model, optimizer, scheduler = self.models[name], self.optimizers[name], self.schedulers[name]
        max_norm = self.cfg.grad_clip if self.cfg.grad_clip > 0 else math.inf  # inf: measure, do not clip
        grad_norm = self.accelerator.clip_grad_norm_(model.parameters(), max_norm)
        ok = not self._bad_loss
        if self.cfg.mixed_precision != "fp16":  # under fp16 the grad scaler skips overflowing steps itself
            ok = self.guard.check(self.step, f"grad_norm/{name}", grad_norm) and ok
        ok = self._all_processes_agree(ok)
        if ok:
            optimizer.step()
        else:
            self.state.skipped_steps += 1
            if self.accelerator.scaler is not None:
                self.accelerator.scaler.update()  # reset the scaler's per-optimiser unscale record
        optimizer.zero_grad(set_to_none=True)
        scheduler.step()
        self._bad_loss = False
        self.grad_norms[name] = float(grad_norm) if grad_norm is not None else math.nan

    def unwrap(self, name: str) -> nn.Module:
        """Return model ``name`` without its DDP/FSDP/compile wrapper (for EMA, export, frozen forwards)."""
        return self.accelerator.unwrap_model(self.models[name])

    @contextlib.contextmanager
    def frozen(self, *names: str) -> Iterator[None]:
        """Inside the block the named models' parameters do not require grad; flags restored after.

        E.g. ``with trainer.frozen("D"): loss_G = ...`` so the generator phase leaves D's gradients alone.
        Under DDP run the frozen model through :meth:`unwrap` inside the block.
        """
        saved = [(p, p.requires_grad) for n in names for p in self.models[n].parameters()]
        for param, _ in saved:
            param.requires_grad_(False)
        try:
            yield
        finally:
            for param, flag in saved:
                param.requires_grad_(flag)

    # ---------------------------------------------------------------- the loop

    def run(self, *, progress: bool = True) -> dict[str, float]:
        """Train from ``state.step`` until the run ends (``cfg.steps``, or earlier: see the module
        docstring); return the last logged metrics. ``self.stop_reason`` then says why it ended.

        Also writes ``<out_dir>/config.json``, checkpoints, and ``<out_dir>/final/``.
        """
        cfg, acc, state = self.cfg, self.accelerator, self.state
        log.info("TrainConfig (%s):\n%s", "resuming" if self.resumed_from else "fresh run",
                 json.dumps(to_dict(cfg), indent=1))
        if acc.is_main_process:
            atomic_write_json(self.out_dir / "config.json", to_dict(cfg))
        self._start_tracker()
        self._batches = self._open_data()
        window: dict[str, list[Any]] = {}  # metric -> [sum, count] since the last log
        total = cfg.steps if self.curriculum is None else min(cfg.steps, self.curriculum.max_steps)
        bar = tqdm(total=total, initial=min(state.step, total),
                   disable=not (progress and acc.is_local_main_process), desc="train")
        self._deadline = None if cfg.max_minutes is None else time.monotonic() + 60 * cfg.max_minutes
        self.stop_reason = self._stop_reason()
        self.throughput = Throughput(acc.device)
        try:
            while self.stop_reason is None:
                step = self.step = state.step
                # forward, backward and optimiser steps, one micro-batch at a time
                for _ in range(cfg.grad_accum):
                    batch = send_to_device(self._next_batch(self._batches, step), acc.device)
                    with acc.accumulate(*self.models.values()):
                        metrics = self.step_fn(self, batch, step)
                    _accumulate(window, metrics)
                    state.data_position += 1
                # EMA (stylegan2-ada: half-life in images, ramp-up on the images seen so far)
                images_per_step = self._images_per_step()
                for name, ema in self.emas.items():
                    ema.update(self.unwrap(name), images_per_step, state.samples_seen)
                state.step, state.samples_seen = step + 1, state.samples_seen + images_per_step
                self.throughput.step_done(images_per_step)
                bar.update(1)
                # log (train every log_every, validation every val_every), then curriculum / early stopping
                train_due = state.step % cfg.log_every == 0 or state.step == cfg.steps
                val_due = self.validate_fn is not None and (state.step % self.val_every == 0
                                                            or state.step == cfg.steps)
                ckpt_due = state.step % cfg.checkpoint_every == 0
                with self.throughput.excluded(when=train_due or val_due or ckpt_due):
                    means = self._window_means(window) if train_due else {}
                    val = self._validate() if val_due else {}
                    window = {} if train_due else window
                    self.stop_reason = self._observe({**means, **val})  # may start a phase: new LR, new data
                    if self.stop_reason is not None and window:  # ended between logs: log the last steps too
                        means, window, train_due = self._window_means(window), {}, True
                    # LRs are those of the next step, so after a phase change they show its warm-up
                    logged = {**means, **self._trainer_metrics(), **val} if train_due else val
                    if logged:
                        self._publish(logged, train=train_due)
                        bar.set_postfix({k: f"{v:.4g}" for k, v in list(logged.items())[:4]})
                    # checkpoint
                    if ckpt_due or self.stop_reason is not None:
                        save_checkpoint(acc, self.out_dir, state, cfg.keep_checkpoints)
            if self.stop_reason != "steps":
                log.info("run ended at step %d: %s", state.step, self.stop_reason)
            self._write_final()
        except BaseException:
            for tracker in acc.trackers:  # no barrier here: other ranks may be gone
                tracker.finish()
            raise
        finally:
            bar.close()
            self.close()
        acc.end_training()
        return dict(state.metrics)

    # ---------------------------------------------------------------- internals

    def _default_optimizer(self, model: nn.Module) -> torch.optim.Optimizer:
        params = [p for p in model.parameters() if p.requires_grad]
        return torch.optim.AdamW(params, lr=self.cfg.lr, betas=self.cfg.betas, weight_decay=self.cfg.weight_decay)

    def _load_initial_weights(self, models: dict[str, nn.Module], source: Path) -> None:
        if source.is_file():
            if len(models) != 1:
                raise InitFromError(f"init_from: {source} is one file but there are {len(models)} models "
                                    f"({', '.join(models)}); point it at a directory of <name>.safetensors")
            name, model = next(iter(models.items()))
            init_from(model, source)
            log.info("init_from: %s <- %s", name, source)
            return
        if not source.is_dir():
            raise InitFromError(f"init_from: {source} not found; give a weights file or a run's final/raw directory")
        found = [name for name in models if (source / f"{name}.safetensors").is_file()]
        if not found:
            raise InitFromError(f"init_from: {source} holds none of {', '.join(f'{n}.safetensors' for n in models)}")
        for name in found:
            init_from(models[name], source / f"{name}.safetensors")
            log.info("init_from: %s <- %s", name, source / f"{name}.safetensors")
        for name in set(models) - set(found):
            log.warning("init_from: %s has no %s.safetensors; model %s keeps its own initial weights",
                        source, name, name)

    def _next_batch(self, batches: Iterator[Any], step: int) -> Any:
        try:
            return next(batches)
        except StopIteration:
            need = ("cfg.steps * cfg.grad_accum micro-batches in all" if self.curriculum is None else
                    "the phase's steps * cfg.grad_accum micro-batches from the phase's start")
            raise RuntimeError(f"data(start_step) ran out at step {step} (micro-batch {self.state.data_position}); "
                               f"it must yield {need} (cycle over epochs)") from None

    def _all_processes_agree(self, ok: bool) -> bool:
        if self.accelerator.num_processes == 1:
            return ok
        flag = torch.tensor([0.0 if ok else 1.0], device=self.accelerator.device)
        return bool(self.accelerator.reduce(flag, reduction="sum").item() == 0)

    def _reduce_mean(self, metrics: dict[str, float]) -> dict[str, float]:
        acc = self.accelerator
        if acc.num_processes > 1 and metrics:  # mean over processes (same keys on every rank)
            values = acc.reduce(torch.tensor(list(metrics.values()), device=acc.device), reduction="mean")
            metrics = dict(zip(metrics, values.tolist(), strict=False))
        return metrics

    def _window_means(self, window: dict[str, list[Any]]) -> dict[str, float]:
        """step_fn's metrics averaged over the micro-batches since the last log (and over processes)."""
        return self._reduce_mean({k: float(total) / count for k, (total, count) in window.items()})

    def _trainer_metrics(self) -> dict[str, float]:
        """LRs of the next step, last grad norms, counters and, with a curriculum, the next step's phase."""
        state = self.state
        metrics = {f"lr/{name}": float(scheduler.get_last_lr()[0]) for name, scheduler in self.schedulers.items()}
        metrics.update({f"grad_norm/{name}": v for name, v in self.grad_norms.items()})
        metrics["train/samples_seen"] = float(state.samples_seen)
        metrics["train/skipped_steps"] = float(state.skipped_steps)
        if self.curriculum is not None:
            phase = self.curriculum.phase
            metrics.update({"curriculum/phase": float(self.curriculum.phase_index),
                            "curriculum/resolution": float(phase.resolution),
                            "curriculum/frames": float(phase.frames),
                            "curriculum/batch_size": float(phase.batch_size)})
        return metrics

    def _validate(self) -> dict[str, float]:
        """Run ``validate_fn`` in eval mode, without gradients, on a forked torch RNG; return ``val/*``."""
        acc = self.accelerator
        modes = {name: model.training for name, model in self.models.items()}
        on_cpu = acc.device.type == "cpu"
        fork = torch.random.fork_rng(devices=[] if on_cpu else [acc.device.index or 0],
                                     device_type=None if on_cpu else acc.device.type)
        try:
            with fork, torch.no_grad():
                for model in self.models.values():
                    model.eval()
                raw = self.validate_fn(self, self.state.step)  # type: ignore[misc]  # checked by the caller
        finally:
            for name, model in self.models.items():
                model.train(modes[name])
        values = {(k if k.startswith("val/") else f"val/{k}"): _as_float(v) for k, v in raw.items()}
        return self._reduce_mean(values)

    def _publish(self, metrics: dict[str, float], *, train: bool) -> None:
        """Send ``metrics`` to the tracker and the log; remember them; run the collapse monitor on train logs."""
        acc, state = self.accelerator, self.state
        acc.log(metrics, step=state.step)
        log.info("step %d: %s", state.step, ", ".join(f"{k}={v:.4g}" for k, v in metrics.items()))
        if train:  # a train log replaces the train metrics; the last val/* stay until the next validation
            state.metrics = {**{k: v for k, v in state.metrics.items() if k.startswith("val/")}, **metrics}
        else:
            state.metrics.update(metrics)
        if train and self.monitor is not None:
            self.monitor.update(state.step, metrics)
            if self.monitor.should_stop:
                raise TrainingCollapsed(state.step, "collapse monitor", float(self.monitor.warn_streak),
                                        f"warnings at {self.monitor.warn_streak} consecutive logs; "
                                        f"the last checkpoint before the collapse is under {self.out_dir}")

    def _observe(self, logged: Mapping[str, float]) -> str | None:
        """Feed the curriculum and early stopping after a step; enter a new phase; return the stop reason."""
        step = self.state.step
        if self.curriculum is not None and self.curriculum.observe(step, logged):
            if not self.curriculum.finished:
                self._enter_phase()
        elif self.early_stopping is not None:
            self.early_stopping.observe(step, logged)
        return self._stop_reason()

    def _enter_phase(self) -> None:
        """A new curriculum phase starts at ``state.step``: restart the LR warm-up (the schedulers already
        computed this step's LR with the old phase) and reopen the data at the new resolution."""
        for scheduler in self.schedulers.values():
            refresh_lr(scheduler)
        if self.early_stopping is not None:
            self.early_stopping.reset()
        close = getattr(self._batches, "close", None)
        if close is not None:  # a generator: let it release its loader (workers, files) now
            close()
        self._batches = self._open_data()

    def _stop_reason(self) -> str | None:
        """Return why the run must end now (one of :data:`STOP_REASONS`), or None; state-based, so a
        resumed run that had already ended ends again at once."""
        if self.curriculum is not None and self.curriculum.finished:
            return "curriculum"
        if self.early_stopping is not None and self.early_stopping.should_stop:
            return "early_stopping"
        if self.state.step >= self.cfg.steps:
            return "steps"
        if self._deadline is None:
            return None
        spent = time.monotonic() >= self._deadline
        if self.accelerator.num_processes > 1:  # every rank stops at the same step, or DDP hangs
            flag = torch.tensor(float(spent), device=self.accelerator.device)
            spent = self.accelerator.reduce(flag, reduction="sum").item() > 0
        return "time" if spent else None

    def _open_data(self) -> Iterator[Any]:
        if self.curriculum is None:
            return iter(self.data(self.state.step))  # type: ignore[call-arg]
        return iter(self.data(self.state.step, self.curriculum.phase))  # type: ignore[call-arg]

    def _images_per_step(self) -> int:
        batch_size = self.curriculum.phase.batch_size if self.curriculum is not None else self.cfg.batch_size
        return batch_size * self.cfg.grad_accum * self.accelerator.num_processes

    def _make_scheduler(self, optimizer: torch.optim.Optimizer) -> torch.optim.lr_scheduler.LambdaLR:
        cfg = self.cfg
        if self.curriculum is None:
            return make_scheduler(optimizer, warmup_steps=cfg.warmup_steps, total_steps=cfg.steps,
                                  min_lr_ratio=cfg.min_lr_ratio)
        multiplier = self.curriculum.lr_lambda(base_lr=cfg.lr, min_lr_ratio=cfg.min_lr_ratio)
        return torch.optim.lr_scheduler.LambdaLR(optimizer, multiplier)

    def _start_tracker(self) -> None:
        cfg = self.cfg
        if cfg.tracker == "none":
            return
        if cfg.tracker == "dvclive":
            live_dir = Path(cfg.tracker_dir) if cfg.tracker_dir else self.out_dir / "dvclive"
            kwargs = {"dir": str(live_dir), "resume": self.resumed_from is not None,
                      "save_dvc_exp": False, "dvcyaml": False, **self.tracker_kwargs}
            if kwargs["resume"] and self.accelerator.is_main_process:
                # a run brought back from the side: the history since its checkpoint is another run's
                truncate_dvclive_history(live_dir, -1 if self._restored else self.state.step)
        else:
            kwargs = {"dir": str(self.out_dir), **self.tracker_kwargs, "mode": "offline"}
        self.accelerator.init_trackers(self.out_dir.name, config=to_dict(cfg), init_kwargs={cfg.tracker: kwargs})

    def _write_final(self) -> None:
        """Write ``final/raw/<name>.safetensors`` (trained models), ``final/ema/<name>.safetensors``,
        ``final/metrics.json`` (with ``stop_reason``, ``stopped_early``), ``final/config.json``,
        ``final/throughput.json`` (:class:`~lib.train.throughput.Throughput` of this invocation: samples/s, peak
        GiB) and, with a curriculum, ``final/curriculum.json`` (phases run), atomically (temp dir + rename).

        LoRA models are exported merged (plain keys), so the next run can ``init_from`` them.
        """
        from safetensors.torch import save_file

        acc = self.accelerator
        final, tmp = self.out_dir / "final", self.out_dir / ".tmp-final"
        if acc.is_main_process:
            shutil.rmtree(tmp, ignore_errors=True)
            (tmp / "raw").mkdir(parents=True)
            if self.emas:
                (tmp / "ema").mkdir()
        acc.wait_for_everyone()
        for name in self.optimizers:
            weights = self._export_weights(name)
            if acc.is_main_process:
                save_file(weights, str(tmp / "raw" / f"{name}.safetensors"))
        for name, ema in self.emas.items():
            with ema.swapped_into(self.unwrap(name)):
                weights = self._export_weights(name)
            if acc.is_main_process:
                save_file(weights, str(tmp / "ema" / f"{name}.safetensors"))
        if acc.is_main_process:
            reason = self.stop_reason or "steps"
            atomic_write_json(tmp / "metrics.json", {"step": self.state.step, **self.state.metrics,
                                                     "stop_reason": reason,
                                                     "stopped_early": reason == "early_stopping"})
            if self.curriculum is not None:
                atomic_write_json(tmp / "curriculum.json", self.curriculum.state_dict())
            speed = {**self.throughput.summary(), "processes": acc.num_processes, "device": str(acc.device)}
            atomic_write_json(tmp / "throughput.json", speed)
            if speed["samples_per_s"] is not None:
                log.info("throughput: %.3g samples/s over %d steps of this invocation (%d processes)",
                         speed["samples_per_s"], speed["timed_steps"], acc.num_processes)
            atomic_write_json(tmp / "config.json", to_dict(self.cfg))
            shutil.rmtree(final, ignore_errors=True)
            tmp.rename(final)
        acc.wait_for_everyone()

    def _export_weights(self, name: str) -> dict[str, torch.Tensor]:
        module = self.unwrap(name)
        if has_lora(module):
            state = merge_lora(copy.deepcopy(module)).state_dict()
        else:
            state = self.accelerator.get_state_dict(self.models[name])  # gathers FSDP shards
        # clone: safetensors refuses tensors that share storage (tied weights)
        return {k: v.detach().to("cpu").contiguous().clone() for k, v in state.items()}


def truncate_dvclive_history(live_dir: str | Path, last_step: int) -> int:
    """Drop rows with ``step > last_step`` from DVCLive's ``plots/metrics/**/*.tsv``; return rows dropped.

    Called before resuming from the checkpoint at ``last_step``, so steps that were logged after it
    (and will be run again) do not appear twice in ``dvc plots``.
    """
    dropped = 0
    for tsv in sorted((Path(live_dir) / "plots" / "metrics").rglob("*.tsv")):
        lines = tsv.read_text().splitlines()
        if not lines:
            continue
        step_col = lines[0].split("\t").index("step")
        kept = [row for row in lines[1:] if int(row.split("\t")[step_col]) <= last_step]
        if len(kept) != len(lines) - 1:
            dropped += len(lines) - 1 - len(kept)
            atomic_write_text(tsv, "\n".join([lines[0], *kept]) + "\n")
    return dropped


def _accumulate(window: dict[str, list[Any]], metrics: Mapping[str, Any]) -> None:
    for key, value in metrics.items():
        value = value.detach().float() if isinstance(value, torch.Tensor) else float(value)
        if key in window:
            window[key][0] = window[key][0] + value
            window[key][1] += 1
        else:
            window[key] = [value, 1]


def _as_float(value: Any) -> float:
    return float(value.detach().float().item()) if isinstance(value, torch.Tensor) else float(value)


def _check_validation(cfg: TrainConfig, curriculum: CurriculumScheduler | None,
                      early_stopping: EarlyStopping | None, validate_fn: ValidateFn | None,
                      val_every: int | None) -> int:
    """Fail early on validation settings that could never work; return ``val_every`` (default ``log_every``)."""
    if val_every is not None and validate_fn is None:
        raise ValueError("val_every: set without validate_fn; pass validate_fn=... or drop val_every")
    if val_every is not None and (isinstance(val_every, bool) or not isinstance(val_every, int) or val_every < 1):
        raise ValueError(f"val_every: must be an integer >= 1 (optimiser steps), got {val_every!r}")
    monitors = [("early_stopping.monitor", early_stopping.monitor)] if early_stopping is not None else []
    if curriculum is not None:
        monitors += [(f"curriculum phase {p.name!r} monitor", p.monitor)
                     for p in curriculum.cfg.phases if p.transition == "plateau"]
        if cfg.steps < curriculum.max_steps:
            log.warning("steps: %d < the curriculum's %d steps; the run stops at cfg.steps, phases cut short",
                        cfg.steps, curriculum.max_steps)
    for what, key in monitors:
        if key.startswith("val/") and validate_fn is None:
            raise ValueError(f"{what}: {key!r} is a validation metric but no validate_fn was given; "
                             f"pass validate_fn=... or monitor a train metric")
    return val_every if val_every is not None else cfg.log_every


def _check_names(what: str, names: Any, models: Mapping[str, nn.Module]) -> None:
    unknown = [n for n in names if n not in models]
    if unknown:
        raise ValueError(f"{what}: {unknown} are not model names (models: {', '.join(models)})")


__all__ = ["STOP_REASONS", "DataFn", "PhaseDataFn", "StepFn", "Trainer", "ValidateFn", "truncate_dvclive_history"]
