"""Throughput: the clock starts after the warm-up steps, excluded sections do not count, samples are global."""
import json
import time

import pytest
import torch

from lib.train.throughput import Throughput


def test_warmup_steps_and_excluded_time_are_not_counted():
    tp = Throughput(torch.device("cpu"), warmup_steps=2)
    for _ in range(2):  # warm-up: slow and uncounted
        time.sleep(0.05)
        tp.step_done(8)
    for _ in range(4):
        time.sleep(0.02)
        tp.step_done(8)
        with tp.excluded():
            time.sleep(0.05)  # a checkpoint: not training time
    s = tp.summary()
    assert s["timed_steps"] == 4 and s["samples"] == 32 and s["peak_gib"] is None
    assert 0.08 <= s["seconds"] < 0.08 + 0.1  # 4 x 20 ms of steps, none of the 4 x 50 ms excluded
    assert s["samples_per_s"] == pytest.approx(32 / s["seconds"])


def test_excluded_when_false_is_training_time():
    tp = Throughput(torch.device("cpu"), warmup_steps=1)
    tp.step_done(2)
    with tp.excluded(when=False):  # an ordinary step: nothing to log or save, so nothing is taken out
        time.sleep(0.05)
    tp.step_done(2)
    assert tp.summary()["seconds"] >= 0.05


def test_a_run_no_longer_than_the_warmup_has_no_figure():
    tp = Throughput(torch.device("cpu"), warmup_steps=2)
    with tp.excluded():  # before the clock starts: nothing to take out
        pass
    tp.step_done(4)
    tp.step_done(4)
    assert tp.summary()["samples_per_s"] is None and tp.summary()["timed_steps"] == 0


def test_the_trainer_writes_it_beside_its_final_metrics(tmp_path):
    from lib.train.config import TrainConfig
    from lib.train.loop import Trainer

    torch.manual_seed(0)
    model = torch.nn.Linear(4, 1)
    data = lambda start: iter([torch.randn(3, 4)] * 100)  # noqa: E731

    def step_fn(trainer, batch, step):
        loss = trainer.models["m"](batch).pow(2).mean()
        trainer.backward(loss)
        trainer.optimizer_step("m")
        return {"loss": loss.detach()}

    cfg = TrainConfig(steps=6, batch_size=3, warmup_steps=1, checkpoint_every=3, log_every=2, tracker="none",
                      out_dir=str(tmp_path / "run"))
    Trainer(cfg, {"m": model}, step_fn, data).run(progress=False)
    speed = json.loads((tmp_path / "run/final/throughput.json").read_text())
    assert speed["timed_steps"] == 4 and speed["samples"] == 12 and speed["processes"] == 1
    assert speed["samples_per_s"] > 0 and speed["device"] == "cpu"
