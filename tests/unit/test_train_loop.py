"""The Trainer: exact resumption, NaN guard, dvclive output, final weights, collapse stop rule."""
import dataclasses
import json
import math
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F
from safetensors.torch import load_file
from torch import nn

from lib.train.checkpoint import latest_checkpoint
from lib.train.config import TrainConfig
from lib.train.guards import CollapseMonitor, TrainingCollapsed, TrainingDiverged
from lib.train.loop import Trainer


class Killed(Exception):
    """Stands in for a SIGKILL in the middle of a step."""


@pytest.fixture(autouse=True)
def _outside_any_repo(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)  # dvclive looks for a DVC/Git repo from the working directory


def _cfg(tmp_path, name="run", **kw):
    base = {"steps": 12, "batch_size": 4, "warmup_steps": 3, "checkpoint_every": 4, "log_every": 2,
            "ema_half_life_images": 20.0, "tracker": "none", "out_dir": str(tmp_path / name)}
    return TrainConfig(**{**base, **kw})


def _gan(seed=0):
    torch.manual_seed(seed)
    G = nn.Sequential(nn.Linear(2, 8), nn.ReLU(), nn.Linear(8, 4))
    D = nn.Sequential(nn.Linear(4, 8), nn.LeakyReLU(0.2), nn.Dropout(0.2), nn.Linear(8, 1))  # dropout: global RNG
    return {"G": G, "D": D}


def _data(cfg):
    def data(start_step):  # micro-batch i is a function of i alone, so the order resumes exactly
        i = start_step * cfg.grad_accum
        while True:
            g = torch.Generator().manual_seed(cfg.seed * 100_003 + i)
            yield torch.randn(cfg.batch_size, 4, generator=g) * 2.0 + 1.0
            i += 1
    return data


def gan_step(trainer, real, step):
    G, D = trainer.models["G"], trainer.models["D"]
    z = torch.randn(real.shape[0], 2, device=real.device)  # global RNG: restored on resume
    fake = G(z)
    logits_real, logits_fake = D(real), D(fake.detach())
    loss_D = F.softplus(-logits_real).mean() + F.softplus(logits_fake).mean()
    trainer.backward(loss_D, "loss/D")
    trainer.optimizer_step("D")
    with trainer.frozen("D"):
        loss_G = F.softplus(-D(fake)).mean()
        trainer.backward(loss_G, "loss/G")
    trainer.optimizer_step("G")
    accuracy = ((logits_real > 0).float().mean() + (logits_fake < 0).float().mean()) / 2
    return {"loss/D": loss_D.detach(), "loss/G": loss_G.detach(), "D/accuracy": accuracy,
            "G/fake_std": fake.detach().std(), "G/real_std": real.std()}


def _run(cfg, step_fn=gan_step, **kw):
    trainer = Trainer(cfg, _gan(), step_fn, _data(cfg), ema_models=["G"], **kw)
    return trainer, trainer.run()


def _final(cfg):
    out = {}
    for kind in ("raw", "ema"):
        for f in sorted((Path(cfg.out_dir) / "final" / kind).glob("*.safetensors")):
            out[f"{kind}/{f.stem}"] = load_file(str(f))
    return out


@pytest.mark.parametrize("grad_accum", [1, 2])
def test_resume_after_kill_equals_uninterrupted_run(tmp_path, grad_accum):
    cfg_a = _cfg(tmp_path, "a", grad_accum=grad_accum, tracker="dvclive")
    _, metrics_a = _run(cfg_a)

    cfg_b = dataclasses.replace(cfg_a, out_dir=str(tmp_path / "b"))

    def killed_at_9(trainer, batch, step):
        if step == 9:  # steps 0..8 ran, checkpoint at 8 exists, step 8's logs are lost with the kill
            raise Killed
        return gan_step(trainer, batch, step)

    with pytest.raises(Killed):
        _run(cfg_b, killed_at_9)
    assert latest_checkpoint(cfg_b.out_dir).name == "step-000008"
    trainer_b, metrics_b = _run(cfg_b)
    assert trainer_b.resumed_from.name == "step-000008"

    assert metrics_a == metrics_b
    final_a, final_b = _final(cfg_a), _final(cfg_b)
    assert sorted(final_a) == ["ema/G", "raw/D", "raw/G"] == sorted(final_b)
    for name in final_a:
        for key in final_a[name]:
            assert torch.equal(final_a[name][key], final_b[name][key]), (name, key)
    assert not all(torch.equal(final_a["ema/G"][k], final_a["raw/G"][k]) for k in final_a["raw/G"])
    # the dvclive history is the same too: rows logged after the checkpoint were dropped, not duplicated
    for tsv in sorted((tmp_path / "a" / "dvclive" / "plots" / "metrics").rglob("*.tsv")):
        other = tmp_path / "b" / "dvclive" / tsv.relative_to(tmp_path / "a" / "dvclive")
        assert tsv.read_text() == other.read_text(), tsv.name


def test_finished_run_reruns_as_a_no_op(tmp_path):
    cfg = _cfg(tmp_path, steps=4, warmup_steps=1)
    _, first = _run(cfg)
    trainer, again = _run(cfg)
    assert trainer.resumed_from.name == "step-000004" and again == first


def test_dvclive_metrics_land_under_the_run(tmp_path):
    cfg = _cfg(tmp_path, steps=6, warmup_steps=1, tracker="dvclive")
    _, metrics = _run(cfg)
    live = tmp_path / "run" / "dvclive"
    summary = json.loads((live / "metrics.json").read_text())
    assert summary["step"] == 6 and summary["loss"]["D"] == pytest.approx(metrics["loss/D"])
    rows = (live / "plots" / "metrics" / "loss" / "G.tsv").read_text().split()
    assert rows[:2] == ["step", "G"] and rows[2::2] == ["2", "4", "6"]
    for key in ("lr/G", "lr/D", "grad_norm/D", "train/samples_seen", "D/accuracy"):
        assert (live / "plots" / "metrics" / f"{key}.tsv").is_file(), key
    assert "lr: 0.0002" in (live / "params.yaml").read_text()
    assert not (tmp_path / "dvc.yaml").exists()  # dvclive does not write dvc.yaml; the stage declares outputs
    assert json.loads((tmp_path / "run" / "final" / "metrics.json").read_text())["step"] == 6
    assert json.loads((tmp_path / "run" / "config.json").read_text())["steps"] == 6


def _regression(nan_at=(), nan_grad_at=()):
    def step_fn(trainer, batch, step):
        model = trainer.models["net"]
        loss = F.mse_loss(model(batch), batch.sum(1, keepdim=True))
        if step in nan_at:
            loss = loss * float("nan")
        if step in nan_grad_at:  # finite loss, non-finite gradient: d/dx sqrt(x) at 0
            loss = loss + torch.sqrt(model(batch).mul(0).abs()).sum()
        trainer.backward(loss)
        trainer.optimizer_step("net")
        return {"loss": loss.detach()}
    return step_fn


def _net():
    torch.manual_seed(0)
    return {"net": nn.Sequential(nn.Linear(4, 8), nn.Tanh(), nn.Linear(8, 1))}


def test_nan_policy_stop_names_step_and_value(tmp_path):
    cfg = _cfg(tmp_path, steps=6, warmup_steps=1)
    with pytest.raises(TrainingDiverged, match="step 3: loss = nan") as err:
        Trainer(cfg, _net(), _regression(nan_at={3}), _data(cfg)).run()
    assert err.value.step == 3 and err.value.name == "loss"
    cfg = _cfg(tmp_path, "b", steps=6, warmup_steps=1)
    with pytest.raises(TrainingDiverged) as err:
        Trainer(cfg, _net(), _regression(nan_grad_at={2}), _data(cfg)).run()
    assert err.value.step == 2 and err.value.name == "grad_norm/net"


def test_nan_policy_skip_counts_and_continues(tmp_path):
    cfg = _cfg(tmp_path, steps=6, warmup_steps=1, log_every=1, nan_policy="skip")
    seen = {}

    def spy(trainer, batch, step):
        seen[step] = {k: v.clone() for k, v in trainer.unwrap("net").state_dict().items()}
        return _regression(nan_at={2}, nan_grad_at={4})(trainer, batch, step)

    trainer = Trainer(cfg, _net(), spy, _data(cfg))
    metrics = trainer.run()
    assert trainer.state.skipped_steps == 2 and metrics["train/skipped_steps"] == 2.0
    for k in seen[2]:  # the skipped steps left the weights alone
        assert torch.equal(seen[2][k], seen[3][k]) and torch.equal(seen[4][k], seen[5][k])
    assert not torch.equal(seen[0]["0.weight"], seen[1]["0.weight"])
    assert all(torch.isfinite(v).all() for v in trainer.unwrap("net").state_dict().values())


def test_collapse_monitor_stops_the_run(tmp_path):
    cfg = _cfg(tmp_path, steps=12, log_every=1)

    def winning_d(trainer, batch, step):
        return {**gan_step(trainer, batch, step), "D/accuracy": 1.0}

    monitor = CollapseMonitor(disc_patience=2, min_std_ratio=0.0, stop_after=3)  # divergence rule only
    with pytest.raises(TrainingCollapsed, match="step 4"):
        Trainer(cfg, _gan(), winning_d, _data(cfg), monitor=monitor).run()


def test_bad_arguments_fail_early(tmp_path, monkeypatch):
    cfg = _cfg(tmp_path)
    with pytest.raises(ValueError, match="ema_models"):
        Trainer(cfg, _gan(), gan_step, _data(cfg), ema_models=["E"])
    import importlib.util

    find_spec = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec", lambda name, *a: None if name == "wandb" else find_spec(name, *a))
    with pytest.raises(ValueError, match="'wandb' is not installed"):  # as where the tracking extra is missing
        Trainer(_cfg(tmp_path, tracker="wandb"), _gan(), gan_step, _data(cfg))
    monkeypatch.undo()

    def short(start_step):
        yield from [torch.zeros(4, 4)] * 2

    with pytest.raises(RuntimeError, match="ran out at step 2"):
        Trainer(cfg, _gan(), gan_step, short).run()


def test_tracker_dir_moves_the_dvclive_output(tmp_path):
    cfg = _cfg(tmp_path, steps=4, warmup_steps=1, tracker="dvclive", tracker_dir=str(tmp_path / "reports" / "live"))
    _run(cfg)
    assert json.loads((tmp_path / "reports" / "live" / "metrics.json").read_text())["step"] == 4
    assert not (tmp_path / "run" / "dvclive").exists()


def test_checkpoints_of_another_run_are_not_resumed(tmp_path):
    cfg = _cfg(tmp_path, steps=4, warmup_steps=1, checkpoint_every=2)
    t1, _ = _run(cfg, fingerprint="params-A")
    assert t1.resumed_from is None
    t2, _ = _run(cfg, fingerprint="params-A")  # same run: resumes from its last checkpoint
    assert t2.resumed_from is not None and t2.resumed_from.name == "step-000004"
    t3, _ = _run(cfg, fingerprint="params-B")  # other params or code: a fresh run; A's checkpoint set aside
    assert t3.resumed_from is None and t3.state.step == 4
    aside = Path(cfg.out_dir) / "checkpoints" / "superseded-params-A"
    assert [p.name for p in aside.iterdir()] == ["step-000004"]


def test_a_killed_run_superseded_by_new_params_keeps_its_checkpoint_and_comes_back(tmp_path):
    from tests.helpers.training import run_killed_at

    cfg = _cfg(tmp_path, steps=8, warmup_steps=1, checkpoint_every=2)
    run_killed_at(Trainer(cfg, _gan(), gan_step, _data(cfg), ema_models=["G"], fingerprint="A"), step=5)
    checkpoints = Path(cfg.out_dir) / "checkpoints"
    assert sorted(p.name for p in checkpoints.iterdir()) == ["step-000002", "step-000004"]
    cfg_b = dataclasses.replace(cfg, lr=1e-3)
    t_b, _ = _run(cfg_b, fingerprint="B")  # changed params: a fresh run B
    assert t_b.resumed_from is None
    kept = checkpoints / "superseded-A" / "step-000004"  # A's latest checkpoint survives B
    assert (kept / "trainer_state.json").is_file()
    assert json.loads((kept / "trainer_state.json").read_text())["step"] == 4
    # back to A's params: A resumes where it was killed and ends like an uninterrupted run; B is set aside
    t_a, _ = _run(cfg, fingerprint="A")
    assert t_a.resumed_from is not None and t_a.resumed_from.name == "step-000004"
    assert (checkpoints / "superseded-B" / "step-000008").is_dir() and not (checkpoints / "superseded-A").exists()
    resumed = _final(cfg)
    straight = _cfg(tmp_path, name="straight", steps=8, warmup_steps=1, checkpoint_every=2)
    _run(straight, fingerprint="A")
    for key, state in _final(straight).items():
        for name, tensor in state.items():
            torch.testing.assert_close(resumed[key][name], tensor, rtol=0, atol=0)


def test_keep_superseded_bounds_the_runs_set_aside(tmp_path):
    cfg = _cfg(tmp_path, steps=2, warmup_steps=1, checkpoint_every=2, keep_superseded=2)
    for fingerprint in ("A", "B", "C", "D"):
        _run(cfg, fingerprint=fingerprint)
    root = Path(cfg.out_dir) / "checkpoints"
    assert sorted(p.name for p in root.iterdir() if p.name.startswith("superseded-")) == \
        ["superseded-B", "superseded-C"]


def test_a_second_trainer_on_the_same_out_dir_is_refused_naming_the_holder(tmp_path):
    from lib.locks import LockedError

    cfg = _cfg(tmp_path, steps=2, warmup_steps=1)
    first = Trainer(cfg, _gan(), gan_step, _data(cfg))
    with pytest.raises(LockedError, match=r"trainer out_dir is in use by pid \d+"):
        Trainer(cfg, _gan(), gan_step, _data(cfg))
    first.run(progress=False)  # run() releases the lock when it ends
    Trainer(cfg, _gan(), gan_step, _data(cfg)).close()


def test_wandb_tracker_writes_an_offline_run_under_out_dir(tmp_path, monkeypatch):
    pytest.importorskip("wandb")
    monkeypatch.setenv("WANDB_SILENT", "true")
    monkeypatch.delenv("WANDB_MODE", raising=False)
    monkeypatch.delenv("WANDB_API_KEY", raising=False)
    cfg = _cfg(tmp_path, steps=4, warmup_steps=1, tracker="wandb")
    _, metrics = _run(cfg)
    runs = list((tmp_path / "run" / "wandb").glob("offline-run-*"))
    assert len(runs) == 1, list((tmp_path / "run").rglob("*"))[:20]  # offline: nothing was sent anywhere
    history = [p for p in runs[0].rglob("*.wandb")]
    assert history and history[0].stat().st_size > 0
    assert math.isfinite(metrics["loss/D"])


def test_max_minutes_ends_with_a_checkpoint_and_a_rerun_resumes_to_the_same_weights(tmp_path, monkeypatch):
    import lib.train.loop as loop

    clock = [1000.0]
    monkeypatch.setattr(loop.time, "monotonic", lambda: clock[0])

    def slow_step(trainer, batch, step):  # each step takes 25 s of the fake clock
        clock[0] += 25.0
        return gan_step(trainer, batch, step)

    full = _cfg(tmp_path, "full")
    _run(full)
    timed = _cfg(tmp_path, "timed", max_minutes=1.0)
    trainer, _ = _run(timed, slow_step)
    # 60 s at 25 s a step: the budget is spent after the third step, which is checkpointed and final
    assert trainer.stop_reason == "time" and trainer.state.step == 3
    assert latest_checkpoint(timed.out_dir).name == "step-000003"
    assert json.loads((Path(timed.out_dir) / "final" / "metrics.json").read_text())["stop_reason"] == "time"
    trainer, _ = _run(dataclasses.replace(timed, max_minutes=None))
    assert trainer.resumed_from.name == "step-000003" and trainer.stop_reason == "steps"
    final_full, final_timed = _final(full), _final(timed)
    for name in final_full:
        for key in final_full[name]:
            assert torch.equal(final_full[name][key], final_timed[name][key]), (name, key)
