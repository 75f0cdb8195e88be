"""Atomic, resumable checkpoints: ``<out_dir>/checkpoints/step-000050/``.

A checkpoint directory is accelerate's ``save_state`` output (``model*.safetensors``,
``optimizer*.bin``, ``scheduler*.bin``, ``random_states_<rank>.pkl``, one ``custom_checkpoint_<i>.pkl``
per object registered with ``accelerator.register_for_checkpointing`` — :class:`TrainState`, the EMAs,
the collapse monitor) plus ``trainer_state.json``, written last, for people and as a completeness mark.

Another run's checkpoint (other fingerprint) is never deleted by a new run: :func:`set_aside` moves its latest
checkpoint to ``checkpoints/superseded-<fingerprint>/step-N/`` and :func:`restore_superseded` brings it back
when that run's fingerprint returns (``keep_superseded`` bounds how many such runs stay).

Atomicity: everything is written into the hidden sibling ``.tmp-step-000050/`` and renamed into
place, so a save killed half-way never looks like a checkpoint; :func:`latest_checkpoint` ignores
hidden directories and directories without ``trainer_state.json``.

What is unpickled, and how (accelerate 1.15):

- model weights: safetensors (no pickle);
- optimiser / scheduler / RNG states: ``accelerate.utils.load``, i.e. ``torch.load(weights_only=True)``
  with numpy's RNG-state types allow-listed;
- registered custom objects: accelerate's ``load_custom_state`` always passes ``weights_only=False``.
  :func:`load_checkpoint` therefore first opens each ``custom_checkpoint_*.pkl`` itself with
  ``torch.load(weights_only=True)`` and refuses the checkpoint if that fails, so nothing beyond
  tensors, numbers, strings and containers ever reaches the unrestricted unpickler.

accelerate also swallows a failure to restore RNG states (it logs "Could not load random states"
at INFO level); :func:`load_checkpoint` compares the restored torch RNG state with the file and
raises instead, because a silently different RNG breaks exact resumption.
"""
from __future__ import annotations

import logging
import os
import re
import shutil
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import torch

from lib.io import atomic_write_json, read_json

log = logging.getLogger(__name__)

CHECKPOINTS_DIR = "checkpoints"
STATE_FILE = "trainer_state.json"  # written last: its presence marks a complete checkpoint
SUPERSEDED_PREFIX = "superseded-"
_CHECKPOINT_NAME = re.compile(r"^step-(\d+)$")


class CheckpointError(RuntimeError):
    """A checkpoint directory that is incomplete or holds something we will not unpickle."""


@dataclass
class TrainState:
    """Loop counters saved with every checkpoint (registered with accelerate as a custom object).

    ``step``: optimiser steps completed; ``samples_seen``: images over all processes;
    ``data_position``: micro-batches consumed per process; ``skipped_steps``: steps skipped by the
    NaN guard; ``metrics``: the last logged metrics (so a finished run can report them again).
    """

    step: int = 0
    samples_seen: int = 0
    data_position: int = 0
    skipped_steps: int = 0
    metrics: dict[str, float] = field(default_factory=dict)
    fingerprint: str = ""  # what the run was started with (params + code); another one means a new run

    def state_dict(self) -> dict[str, Any]:
        """Return the counters as plain numbers (loadable with ``weights_only=True``)."""
        return asdict(self)

    def load_state_dict(self, state: dict[str, Any]) -> None:
        """Restore the counters from :meth:`state_dict`."""
        self.step = int(state["step"])
        self.samples_seen = int(state["samples_seen"])
        self.data_position = int(state["data_position"])
        self.skipped_steps = int(state.get("skipped_steps", 0))
        self.metrics = {str(k): float(v) for k, v in state.get("metrics", {}).items()}
        self.fingerprint = str(state.get("fingerprint", ""))


def checkpoint_dir(out_dir: str | Path, step: int) -> Path:
    """Return ``<out_dir>/checkpoints/step-<step:06d>``."""
    return Path(out_dir) / CHECKPOINTS_DIR / f"step-{step:06d}"


def list_checkpoints(out_dir: str | Path) -> list[Path]:
    """Return the complete checkpoint directories under ``out_dir``, oldest step first.

    Hidden temporary directories and directories without ``trainer_state.json`` are left out.
    """
    root = Path(out_dir) / CHECKPOINTS_DIR
    if not root.is_dir():
        return []
    found = []
    for entry in root.iterdir():
        match = _CHECKPOINT_NAME.match(entry.name)
        if match and entry.is_dir() and (entry / STATE_FILE).is_file():
            found.append((int(match.group(1)), entry))
    return [path for _, path in sorted(found)]


def checkpoint_fingerprint(path: str | Path) -> str:
    """Return the run fingerprint recorded in a checkpoint's ``trainer_state.json`` ("" when none)."""
    return str(read_json(Path(path) / STATE_FILE).get("fingerprint", ""))


def latest_checkpoint(out_dir: str | Path) -> Path | None:
    """Return the complete checkpoint with the highest step under ``out_dir``, or None."""
    checkpoints = list_checkpoints(out_dir)
    return checkpoints[-1] if checkpoints else None


def prune_checkpoints(out_dir: str | Path, keep: int) -> list[Path]:
    """Delete all but the newest ``keep`` complete checkpoints; return the deleted directories."""
    checkpoints = list_checkpoints(out_dir)
    doomed = checkpoints[:-keep] if keep > 0 else checkpoints
    for path in doomed:
        shutil.rmtree(path)
    return doomed


def superseded_dir(out_dir: str | Path, fingerprint: str) -> Path:
    """Return ``<out_dir>/checkpoints/superseded-<fingerprint>``: where another run's checkpoint is kept."""
    return Path(out_dir) / CHECKPOINTS_DIR / f"{SUPERSEDED_PREFIX}{fingerprint or 'unknown'}"


def set_aside(out_dir: str | Path, fingerprint: str) -> Path:
    """Move the newest checkpoint under ``out_dir`` (a run with ``fingerprint``) into :func:`superseded_dir`,
    replacing an older copy of that run there, and delete the run's older checkpoints; return the new path."""
    checkpoints = list_checkpoints(out_dir)
    if not checkpoints:
        raise CheckpointError(f"{Path(out_dir) / CHECKPOINTS_DIR}: no checkpoint to set aside")
    aside = superseded_dir(out_dir, fingerprint)
    staging = aside.with_name(f".tmp-{aside.name}")  # a kill mid-way leaves a hidden folder, never half a run
    shutil.rmtree(staging, ignore_errors=True)
    staging.mkdir()
    os.replace(checkpoints[-1], staging / checkpoints[-1].name)
    if aside.exists():
        shutil.rmtree(aside)
    os.replace(staging, aside)
    for older in checkpoints[:-1]:
        shutil.rmtree(older)
    return aside / checkpoints[-1].name


def restore_superseded(out_dir: str | Path, fingerprint: str) -> Path | None:
    """When no checkpoint is in place and the run with ``fingerprint`` was set aside, move its checkpoint back
    and return it; otherwise return None."""
    aside = superseded_dir(out_dir, fingerprint)
    if list_checkpoints(out_dir) or not aside.is_dir():
        return None
    found = sorted(p for p in aside.iterdir() if _CHECKPOINT_NAME.match(p.name) and (p / STATE_FILE).is_file())
    if not found:
        return None
    target = Path(out_dir) / CHECKPOINTS_DIR / found[-1].name
    os.replace(found[-1], target)
    shutil.rmtree(aside)
    return target


def list_superseded(out_dir: str | Path) -> list[Path]:
    """Return the set-aside runs under ``out_dir``, most recently set aside last."""
    root = Path(out_dir) / CHECKPOINTS_DIR
    if not root.is_dir():
        return []
    found = [p for p in root.iterdir() if p.is_dir() and p.name.startswith(SUPERSEDED_PREFIX)]
    return sorted(found, key=lambda p: p.stat().st_mtime_ns)


def prune_superseded(out_dir: str | Path, keep: int | None) -> list[Path]:
    """Delete all but the ``keep`` most recently set-aside runs (None keeps all); return what was deleted."""
    if keep is None:
        return []
    runs = list_superseded(out_dir)
    doomed = runs[:-keep] if keep > 0 else runs
    for path in doomed:
        shutil.rmtree(path)
    return doomed


def save_checkpoint(accelerator: Any, out_dir: str | Path, state: TrainState, keep: int) -> Path:
    """Save the accelerator's state as checkpoint ``state.step`` atomically, keep the newest ``keep``.

    Every process must call it (accelerate writes per-rank RNG files); the main process renames and
    prunes. Returns the checkpoint directory.
    """
    final = checkpoint_dir(out_dir, state.step)
    tmp = final.with_name(f".tmp-{final.name}")
    if accelerator.is_main_process:
        final.parent.mkdir(parents=True, exist_ok=True)
        for stale in final.parent.glob(".tmp-step-*"):  # left behind by a killed save
            shutil.rmtree(stale)
    accelerator.wait_for_everyone()
    accelerator.save_state(str(tmp), safe_serialization=True)
    accelerator.wait_for_everyone()
    if accelerator.is_main_process:
        atomic_write_json(tmp / STATE_FILE, state.state_dict())
        if final.exists():  # same step saved before (e.g. a rerun of a finished run)
            shutil.rmtree(final)
        os.replace(tmp, final)
        removed = prune_checkpoints(out_dir, keep)
        log.info("saved checkpoint %s%s", final, f" (pruned {len(removed)})" if removed else "")
    accelerator.wait_for_everyone()
    return final


def load_checkpoint(accelerator: Any, path: str | Path) -> None:
    """Restore models, optimisers, schedulers, RNG and registered objects from checkpoint ``path``.

    Raises :class:`CheckpointError` when ``path`` is incomplete, when a custom-object file is refused
    by ``torch.load(weights_only=True)``, or when the RNG state did not come back.
    """
    path = Path(path)
    if not (path / STATE_FILE).is_file():
        raise CheckpointError(f"{path}: not a complete checkpoint (no {STATE_FILE}); "
                              f"pick another with latest_checkpoint() or delete it")
    for pkl in sorted(path.glob("custom_checkpoint_*.pkl")):
        try:
            torch.load(pkl, map_location="cpu", weights_only=True)
        except Exception as err:
            raise CheckpointError(f"{pkl}: refused by torch.load(weights_only=True): {err}; "
                                  f"registered objects must hold only tensors, numbers and strings") from err
    accelerator.load_state(str(path))
    _check_rng_restored(accelerator, path)


def _check_rng_restored(accelerator: Any, path: Path) -> None:
    from accelerate.utils import load  # torch.load(weights_only=True) with numpy RNG types allowed

    rng_file = path / f"random_states_{accelerator.process_index}.pkl"
    if not rng_file.is_file():
        raise CheckpointError(f"{rng_file}: missing; was the checkpoint saved with fewer processes?")
    saved = load(rng_file)
    if not torch.equal(torch.get_rng_state(), saved["torch_manual_seed"]):
        raise CheckpointError(f"{rng_file}: accelerate did not restore the torch RNG state; "
                              f"the resumed run would not match an uninterrupted one")


__all__ = [
    "CHECKPOINTS_DIR",
    "STATE_FILE",
    "CheckpointError",
    "TrainState",
    "checkpoint_dir",
    "latest_checkpoint",
    "list_checkpoints",
    "load_checkpoint",
    "list_superseded",
    "prune_checkpoints",
    "prune_superseded",
    "restore_superseded",
    "save_checkpoint",
    "set_aside",
    "superseded_dir",
]


def load_trained(model: torch.nn.Module, path: str | Path, stage: str) -> torch.nn.Module:
    """Load a run's exported weights (``final/{raw,ema}/<name>.safetensors``) into ``model`` with strict keys and
    return it in eval mode: what every evaluation stage does with a trainer stage's output.

    A missing file raises FileNotFoundError naming ``dvc repro <stage>``; weights that do not fit the model
    (the model params changed since training) raise :class:`lib.config.ConfigError` naming ``<stage>.model``.
    """
    from safetensors.torch import load_file

    from lib.config import ConfigError

    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"{path}: no trained weights; run `dvc repro {stage}` first")
    try:
        model.load_state_dict(load_file(str(path)), strict=True)
    except RuntimeError as err:
        raise ConfigError(f"{path}: weights do not fit {stage}.model in the params file ({err}); retrain with "
                          f"`dvc repro {stage}` or restore the model params they were trained with") from None
    return model.eval()
