"""Atomic checkpoints: round trip of every piece of state, keep-last-K, incomplete dirs ignored."""
import copy
import random

import numpy as np
import pytest
import torch
from accelerate import Accelerator
from torch import nn

from lib.train.checkpoint import (
    STATE_FILE,
    CheckpointError,
    TrainState,
    checkpoint_dir,
    latest_checkpoint,
    list_checkpoints,
    load_checkpoint,
    save_checkpoint,
)
from lib.train.ema import EMA
from lib.train.schedule import make_scheduler


class _Evil:
    """Not a weights-only type: torch.load(weights_only=True) must refuse it."""


def _setup():
    torch.manual_seed(0)
    acc = Accelerator(step_scheduler_with_optimizer=False)
    model = nn.Sequential(nn.Linear(3, 4), nn.ReLU(), nn.Linear(4, 1))
    opt = torch.optim.AdamW(model.parameters(), lr=1e-2, betas=(0.0, 0.99))
    sched = make_scheduler(opt, warmup_steps=2, total_steps=10, min_lr_ratio=0.1)
    model, opt, sched = acc.prepare(model, opt, sched)
    ema = EMA(model, half_life_images=20.0)
    state = TrainState()
    acc.register_for_checkpointing(state, ema)
    return acc, model, opt, sched, ema, state


def _train(model, opt, sched, ema, state, steps):
    for _ in range(steps):
        x = torch.randn(8, 3)
        loss = model(x).pow(2).mean()
        loss.backward()
        opt.step()
        opt.zero_grad()
        sched.step()
        ema.update(model, 8)
        state.step += 1
        state.samples_seen += 8
        state.data_position += 1
        state.metrics = {"loss": float(loss.detach())}


def test_round_trip_restores_everything(tmp_path):
    acc, model, opt, sched, ema, state = _setup()
    _train(model, opt, sched, ema, state, 3)
    path = save_checkpoint(acc, tmp_path, state, keep=3)
    assert path == checkpoint_dir(tmp_path, 3) and (path / STATE_FILE).is_file()
    saved = {"model": copy.deepcopy(model.state_dict()), "opt": copy.deepcopy(opt.state_dict()),
             "sched": sched.state_dict(), "ema": copy.deepcopy(ema.state_dict()), "state": state.state_dict(),
             "torch_rng": torch.get_rng_state(), "py_rng": random.getstate(),
             "np_rng": np.random.get_state()[1].copy()}

    _train(model, opt, sched, ema, state, 2)  # move everything on
    torch.manual_seed(123), random.seed(123), np.random.seed(123)
    load_checkpoint(acc, path)

    for k, v in model.state_dict().items():
        assert torch.equal(v, saved["model"][k])
    for pid, st in opt.state_dict()["state"].items():
        for k, v in st.items():
            assert torch.equal(torch.as_tensor(v), torch.as_tensor(saved["opt"]["state"][pid][k]))
    assert sched.state_dict()["last_epoch"] == saved["sched"]["last_epoch"] == 3
    assert opt.param_groups[0]["lr"] == pytest.approx(saved["sched"]["_last_lr"][0])
    for k, v in ema.state_dict()["params"].items():
        assert torch.equal(v, saved["ema"]["params"][k])
    assert ema.num_updates == 3
    assert state.state_dict() == saved["state"] and state.step == 3
    assert torch.equal(torch.get_rng_state(), saved["torch_rng"])
    assert random.getstate() == saved["py_rng"]
    assert np.array_equal(np.random.get_state()[1], saved["np_rng"])


def test_keep_last_k_and_incomplete_dirs_are_ignored(tmp_path):
    acc, model, opt, sched, ema, state = _setup()
    for _ in range(5):
        _train(model, opt, sched, ema, state, 1)
        save_checkpoint(acc, tmp_path, state, keep=2)
    assert [p.name for p in list_checkpoints(tmp_path)] == ["step-000004", "step-000005"]
    # a save killed before its rename, and a directory without the completeness mark
    (tmp_path / "checkpoints" / ".tmp-step-000009").mkdir()
    (tmp_path / "checkpoints" / "step-000010").mkdir()
    assert latest_checkpoint(tmp_path) == checkpoint_dir(tmp_path, 5)
    with pytest.raises(CheckpointError, match="not a complete checkpoint"):
        load_checkpoint(acc, tmp_path / "checkpoints" / "step-000010")
    # the next save clears the stale temp dir
    _train(model, opt, sched, ema, state, 1)
    save_checkpoint(acc, tmp_path, state, keep=2)
    assert not (tmp_path / "checkpoints" / ".tmp-step-000009").exists()
    assert latest_checkpoint(tmp_path) == checkpoint_dir(tmp_path, 6)
    assert latest_checkpoint(tmp_path / "nothing-here") is None


def test_pickled_objects_are_refused_before_accelerate_unpickles_them(tmp_path):
    acc, *_, state = _setup()
    path = save_checkpoint(acc, tmp_path, state, keep=1)
    torch.save({"step": 1, "payload": _Evil()}, path / "custom_checkpoint_0.pkl")
    with pytest.raises(CheckpointError, match="weights_only=True"):
        load_checkpoint(acc, path)
