"""Curriculum phases (step / epoch / plateau), per-phase LR warm-up, data rebuilt per phase, exact resume
mid-phase, early stopping on a validation plateau, and config validation."""
import dataclasses
import json
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F
from safetensors.torch import load_file
from torch import nn

from lib.config import ConfigError, from_dict
from lib.train.checkpoint import latest_checkpoint
from lib.train.config import TrainConfig
from lib.train.curriculum import (
    CPU_DEFAULT,
    GPU_PRESET,
    CurriculumConfig,
    CurriculumScheduler,
    EarlyStopping,
    PhaseConfig,
)
from lib.train.loop import Trainer
from lib.train.schedule import warmup_cosine

A = PhaseConfig("A", resolution=4, frames=2, batch_size=3, lr=1e-2, steps=4, warmup_steps=2)
B = PhaseConfig("B", resolution=8, frames=4, batch_size=2, lr=5e-3, steps=6, warmup_steps=3)


class Killed(Exception):
    """Stands in for a SIGKILL in the middle of a step."""


@pytest.fixture(autouse=True)
def _outside_any_repo(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)


def _cfg(tmp_path, name="run", **kw):
    base = {"steps": 50, "lr": 1e-2, "warmup_steps": 0, "min_lr_ratio": 0.1, "log_every": 1,
            "checkpoint_every": 100, "ema_half_life_images": 10.0, "tracker": "none", "out_dir": str(tmp_path / name)}
    return TrainConfig(**{**base, **kw})


def _net():
    torch.manual_seed(0)
    return {"net": nn.Sequential(nn.Linear(3, 8), nn.Tanh(), nn.Dropout(0.2), nn.Linear(8, 1))}


def _data(calls):
    def data(start_step, phase):  # micro-batch i depends on (i, phase) only: the order resumes exactly
        calls.append((start_step, phase.name))
        i = start_step
        while True:
            g = torch.Generator().manual_seed(1000 + i)
            yield torch.randn(phase.batch_size, 3, phase.frames, phase.resolution, phase.resolution, generator=g)
            i += 1
    return data


def _step_fn(seen=None, kill_at=None):
    def step_fn(trainer, x, step):
        if step == kill_at:
            raise Killed
        if seen is not None:
            seen.append((step, tuple(x.shape), trainer.optimizers["net"].param_groups[0]["lr"]))
        feats = x.mean(dim=(2, 3, 4))
        target = feats.sum(1, keepdim=True) + 0.1 * torch.randn(feats.shape[0], 1)  # global RNG: restored on resume
        loss = F.mse_loss(trainer.models["net"](feats), target)
        trainer.backward(loss)
        trainer.optimizer_step("net")
        return {"train/loss": loss.detach()}
    return step_fn


def _trainer(cfg, phases, step_fn, calls, **kw):
    curriculum = CurriculumScheduler(CurriculumConfig(phases=phases))
    return Trainer(cfg, _net(), step_fn, _data(calls), ema_models=["net"], curriculum=curriculum, **kw)


def _final(cfg):
    root = Path(cfg.out_dir) / "final"
    return {f"{kind}/{k}": v for kind in ("raw", "ema")
            for k, v in load_file(str(root / kind / "net.safetensors")).items()}


def _expected_lr(step, phase, start):
    return phase.lr * warmup_cosine(step - start, warmup_steps=phase.warmup_steps, total_steps=phase.steps,
                                    min_lr_ratio=0.1)


# ----------------------------------------------------------------------------- Trainer with a curriculum


def test_step_transition_rebuilds_data_and_restarts_warmup(tmp_path):
    cfg, calls, seen, logs = _cfg(tmp_path), [], [], []
    trainer = _trainer(cfg, (A, B), _step_fn(seen), calls)
    trainer.accelerator.log = lambda metrics, step: logs.append((step, dict(metrics)))
    metrics = trainer.run()

    assert calls == [(0, "A"), (4, "B")]  # reopened at the phase change with the new phase
    assert [s for s, _, _ in seen] == list(range(10)) and trainer.state.step == 10  # run length: 4 + 6
    assert {shape for s, shape, _ in seen if s < 4} == {(3, 3, 2, 4, 4)}
    assert {shape for s, shape, _ in seen if s >= 4} == {(2, 3, 4, 8, 8)}
    for step, _, lr in seen:
        phase, start = (A, 0) if step < 4 else (B, 4)
        assert lr == pytest.approx(_expected_lr(step, phase, start)), step
    assert seen[4][2] == pytest.approx(5e-3 / 4)  # warm-up restarted: (0 + 1) / (3 + 1) of B's peak
    assert seen[7][2] == pytest.approx(5e-3)  # B's peak after its 3 warm-up steps
    assert trainer.state.samples_seen == 4 * 3 + 6 * 2  # per-phase batch sizes
    # logged LRs are the next step's: at step 4 the new phase's first warm-up value
    logged = dict(logs)
    assert logged[4]["lr/net"] == pytest.approx(5e-3 / 4) and logged[4]["curriculum/phase"] == 1.0
    assert logged[3]["curriculum/resolution"] == 4.0 and logged[10]["curriculum/resolution"] == 8.0
    assert trainer.stop_reason == "curriculum" and metrics["curriculum/frames"] == 4.0
    final = json.loads((tmp_path / "run" / "final" / "metrics.json").read_text())
    assert final["step"] == 10 and final["stop_reason"] == "curriculum" and final["stopped_early"] is False
    history = json.loads((tmp_path / "run" / "final" / "curriculum.json").read_text())["history"]
    assert [(h["name"], h["start"], h["end"]) for h in history] == [("A", 0, 4), ("B", 4, 10)]


@pytest.mark.parametrize("kill_at", [5, 7])  # 5: resumes in phase A (checkpoint 3); 7: mid-phase B (checkpoint 6)
def test_resume_mid_phase_equals_uninterrupted_run(tmp_path, kill_at):
    # B ends on a plateau (min_delta never met): best at step 5, no improvement at 6, 7, 8 -> ends at 8
    plateau_b = dataclasses.replace(B, transition="plateau", patience=3, min_delta=10.0, steps=20)
    cfg_a = _cfg(tmp_path, "a", checkpoint_every=3)
    calls_a = []
    metrics_a = _trainer(cfg_a, (A, plateau_b), _step_fn(), calls_a).run()

    cfg_b = dataclasses.replace(cfg_a, out_dir=str(tmp_path / "b"))
    with pytest.raises(Killed):
        _trainer(cfg_b, (A, plateau_b), _step_fn(kill_at=kill_at), []).run()
    calls_b = []
    trainer_b = _trainer(cfg_b, (A, plateau_b), _step_fn(), calls_b)
    resumed_at = 3 if kill_at == 5 else 6
    assert trainer_b.resumed_from.name == f"step-{resumed_at:06d}"
    assert trainer_b.curriculum.phase.name == ("A" if kill_at == 5 else "B")
    metrics_b = trainer_b.run()

    assert calls_a == [(0, "A"), (4, "B")]
    assert calls_b == ([(3, "A"), (4, "B")] if kill_at == 5 else [(6, "B")])
    assert trainer_b.state.step == 8 and trainer_b.stop_reason == "curriculum"  # plateau counters resumed too
    assert metrics_a == metrics_b
    final_a, final_b = _final(cfg_a), _final(cfg_b)
    assert sorted(final_a) == sorted(final_b)
    for key in final_a:
        assert torch.equal(final_a[key], final_b[key]), key


def test_cfg_steps_caps_a_curriculum(tmp_path):
    cfg, calls = _cfg(tmp_path, steps=6), []
    trainer = _trainer(cfg, (A, B), _step_fn(), calls)
    trainer.run()
    assert trainer.state.step == 6 and trainer.stop_reason == "steps" and calls == [(0, "A"), (4, "B")]


# ----------------------------------------------------------------------------- early stopping and validation


def _regression_step(trainer, x, step):
    loss = F.mse_loss(trainer.models["net"](x), x.sum(1, keepdim=True) + 0.1 * torch.randn(x.shape[0], 1))
    trainer.backward(loss)
    trainer.optimizer_step("net")
    return {"loss": loss.detach()}


def _flat_data(start_step):
    i = start_step
    while True:
        yield torch.randn(4, 3, generator=torch.Generator().manual_seed(i))
        i += 1


def test_early_stopping_on_validation_plateau(tmp_path):
    scripted = {2: 1.0, 4: 0.9, 6: 0.95, 8: 0.97, 10: 0.5}  # no improvement at 6 and 8 -> stop at 8
    modes = []

    def validate(trainer, step):
        modes.append((trainer.models["net"].training, torch.is_grad_enabled()))
        torch.randn(100)  # draws from the (forked) global RNG: must not change training
        return {"loss": scripted[step]}

    cfg = _cfg(tmp_path, steps=20, log_every=3)
    trainer = Trainer(cfg, _net(), _regression_step, _flat_data, validate_fn=validate, val_every=2,
                      early_stopping=EarlyStopping("val/loss", patience=2))
    metrics = trainer.run()
    assert trainer.state.step == 8 and trainer.stop_reason == "early_stopping"
    assert modes == [(False, False)] * 4 and trainer.models["net"].training
    assert metrics["val/loss"] == 0.97 and "loss" in metrics  # train metrics of steps 7..8 logged at the stop
    assert latest_checkpoint(cfg.out_dir).name == "step-000008"
    final = json.loads((tmp_path / "run" / "final" / "metrics.json").read_text())
    assert final["stopped_early"] is True and final["stop_reason"] == "early_stopping" and final["step"] == 8
    raw = load_file(str(tmp_path / "run" / "final" / "raw" / "net.safetensors"))

    # same weights as a run without validation after 8 steps: validation leaves the training RNG alone
    def stop_at_8(trainer, batch, step):
        if step == 8:
            raise Killed
        return _regression_step(trainer, batch, step)

    plain = Trainer(_cfg(tmp_path, "plain", steps=20, log_every=3), _net(), stop_at_8, _flat_data)
    with pytest.raises(Killed):
        plain.run()
    other = plain.unwrap("net").state_dict()
    assert all(torch.equal(raw[k], other[k]) for k in raw)

    # rerunning a stopped run is a no-op: the stop is in the checkpoint
    def never(trainer, batch, step):
        raise AssertionError("trained again")

    again = Trainer(cfg, _net(), never, _flat_data, validate_fn=validate, val_every=2,
                    early_stopping=EarlyStopping("val/loss", patience=2))
    assert again.run() == metrics and again.stop_reason == "early_stopping"


def test_early_stopping_rule():
    stop = EarlyStopping("val/psnr", patience=2, min_delta=0.5, mode="max")
    assert not stop.observe(1, {"val/psnr": 20.0})
    assert not stop.observe(2, {"val/psnr": 20.4})  # +0.4 is not > min_delta
    assert not stop.observe(3, {"train/loss": 1.0})  # no monitored key: ignored
    assert not stop.observe(4, {"val/psnr": 21.0}) and stop.best_step == 4  # +1.0 counts
    assert not stop.observe(5, {"val/psnr": float("nan")})  # non-finite: no improvement
    assert stop.observe(6, {"val/psnr": 21.2}) and stop.should_stop and stop.best == 21.0
    stop.reset()
    assert not stop.should_stop and stop.best is None


# ----------------------------------------------------------------------------- the scheduler on its own


def test_epoch_transition_uses_steps_per_epoch():
    phases = (dataclasses.replace(A, transition="epoch", epochs=2, steps=100),
              dataclasses.replace(B, transition="epoch", epochs=1, steps=4))
    sched = CurriculumScheduler(CurriculumConfig(phases=phases), steps_per_epoch=lambda p: 12 // p.batch_size)
    assert sched.phase_length(0) == 8 and sched.phase_length(1) == 4  # 2 x 4 steps; min(6, steps=4)
    assert sched.max_steps == 12
    assert sched.lr_factor(8, base_lr=1e-2, min_lr_ratio=0.1) == pytest.approx(0.1)  # cosine ends with the epochs
    ended = [step for step in range(1, 20) if sched.observe(step, {})]
    assert ended == [8, 12] and sched.finished and sched.phase.name == "B"
    assert sched.step_in_phase(10) == 2  # B started at 8
    with pytest.raises(ValueError, match="steps_per_epoch"):
        CurriculumScheduler(CurriculumConfig(phases=phases))


def test_plateau_transition_with_patience_and_min_delta():
    p1 = dataclasses.replace(A, transition="plateau", monitor="val/loss", patience=2, min_delta=0.1, steps=100)
    p2 = dataclasses.replace(B, transition="plateau", monitor="val/loss", steps=3)
    sched = CurriculumScheduler(CurriculumConfig(phases=(p1, p2)))
    script = [(1, {"val/loss": 1.0}), (2, {"val/loss": 0.95}), (3, {}), (4, {"val/loss": 0.8}),
              (5, {"val/loss": 0.75}), (6, {"val/loss": 0.72})]
    changes = [step for step, metrics in script if sched.observe(step, metrics)]
    assert changes == [6]  # 0.95: within min_delta; 0.8: improved by 0.2 (reset); 0.75, 0.72: patience 2
    assert sched.phase_index == 1 and sched.phase_start_step == 6 and sched.step_in_phase(7) == 1
    assert sched.history[0]["reason"].startswith("plateau of val/loss")
    assert not sched.observe(8, {}) and sched.observe(9, {})  # a plateau phase still ends at its steps
    assert sched.finished and not sched.observe(10, {"val/loss": 0.0})


def test_state_dict_round_trip_through_weights_only_load(tmp_path):
    p1 = dataclasses.replace(A, transition="plateau", monitor="val/loss", patience=3)
    phases = (dataclasses.replace(A, name="warm"), p1, B)
    sched = CurriculumScheduler(CurriculumConfig(phases=phases))
    sched.observe(4, {})  # "warm" ends at its 4 steps
    sched.observe(5, {"val/loss": 0.5})
    sched.observe(6, {"val/loss": 0.6})
    torch.save(sched.state_dict(), tmp_path / "state.pt")
    loaded = torch.load(tmp_path / "state.pt", weights_only=True)

    again = CurriculumScheduler(CurriculumConfig(phases=phases))
    again.load_state_dict(loaded)
    assert again.state_dict() == sched.state_dict()
    assert again.phase.name == "A" and again.phase_start_step == 4
    assert again.plateau.best == 0.5 and again.plateau.bad_count == 1
    assert again.lr_factor(7, base_lr=1e-2, min_lr_ratio=0.1) == sched.lr_factor(7, base_lr=1e-2, min_lr_ratio=0.1)
    with pytest.raises(ValueError, match="differ"):  # other phases: would resume somewhere else
        CurriculumScheduler(CurriculumConfig(phases=(A, B))).load_state_dict(loaded)
    stop = EarlyStopping(patience=2)
    stop.observe(1, {"val/loss": 1.5})
    torch.save(stop.state_dict(), tmp_path / "stop.pt")
    restored = EarlyStopping(patience=2)
    restored.load_state_dict(torch.load(tmp_path / "stop.pt", weights_only=True))
    assert restored.state_dict() == {"best": 1.5, "best_step": 1, "bad_count": 0}


# ----------------------------------------------------------------------------- config


def test_presets_and_params_shapes():
    assert [(p.resolution, p.frames) for p in CPU_DEFAULT.phases] == [(32, 4), (64, 8), (128, 16)]
    assert [(p.resolution, p.frames, p.batch_size) for p in GPU_PRESET.phases] == [
        (256, 8, 16), (512, 16, 8), (1024, 49, 4)]
    assert GPU_PRESET.gradient_checkpointing and not CPU_DEFAULT.gradient_checkpointing
    cfg = from_dict(CurriculumConfig, {"phases": [
        {"name": "a", "resolution": 32, "frames": 4, "batch_size": 8, "lr": 1e-4, "steps": 10},
        {"name": "b", "resolution": 64, "frames": 8, "batch_size": 4, "lr": 1e-4, "steps": 10,
         "transition": "plateau", "monitor": "val/loss", "patience": 3}]})
    assert cfg.phases[1].transition == "plateau" and cfg.max_steps == 20
    with pytest.raises(ConfigError, match=r"phases\[0\]\.resolutoin: unknown key; did you mean 'resolution'"):
        from_dict(CurriculumConfig, {"phases": [{"name": "a", "resolutoin": 32}]}, where="curriculum")


@pytest.mark.parametrize(("bad", "match"), [
    ({"warmup_steps": 5}, "warmup_steps: must be an integer in \\[0, steps=4\\]"),
    ({"transition": "loss"}, "transition: 'loss' is not one of"),
    ({"batch_size": 0}, "batch_size: must be >= 1, got 0"),
    ({"lr": 0.0}, "lr: must be > 0"),
    ({"patience": 0}, "patience"),
    ({"min_delta": -1.0}, "min_delta"),
    ({"mode": "avg"}, "mode"),
    ({"name": ""}, "name"),
])
def test_phase_config_rejects_bad_values(bad, match):
    with pytest.raises(ValueError, match=match):
        dataclasses.replace(A, **bad)


def test_bad_curricula_and_trainer_arguments_fail_early(tmp_path):
    with pytest.raises(ValueError, match="at least one phase"):
        CurriculumConfig(phases=())
    with pytest.raises(ValueError, match=r"unique, \['A'\] repeat"):
        CurriculumConfig(phases=(A, A))
    with pytest.raises(ValueError, match="patience"):
        EarlyStopping(patience=0)
    cfg = _cfg(tmp_path)
    with pytest.raises(ValueError, match="early_stopping.monitor: 'val/loss' is a validation metric"):
        Trainer(cfg, _net(), _regression_step, _flat_data, early_stopping=EarlyStopping("val/loss"))
    with pytest.raises(ValueError, match="val_every: set without validate_fn"):
        Trainer(cfg, _net(), _regression_step, _flat_data, val_every=5)
    plateau_on_val = dataclasses.replace(A, transition="plateau", monitor="val/loss")
    with pytest.raises(ValueError, match="phase 'A' monitor"):
        _trainer(cfg, (plateau_on_val,), _step_fn(), [])
