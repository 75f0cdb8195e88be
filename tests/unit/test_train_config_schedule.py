"""TrainConfig validation and the warm-up + cosine LR schedule."""
import math

import pytest
import torch

from lib.config import ConfigError, from_dict
from lib.train.config import TrainConfig
from lib.train.schedule import make_scheduler, warmup_cosine


def test_config_defaults_and_params_yaml_shapes():
    cfg = from_dict(TrainConfig, {"steps": 10, "warmup_steps": 2, "betas": [0.5, 0.9], "lora_targets": []})
    assert cfg.betas == (0.5, 0.9) and cfg.images_per_step == cfg.batch_size
    assert TrainConfig().mixed_precision == "fp32"


@pytest.mark.parametrize("bad", [
    {"steps": 0}, {"grad_accum": 0}, {"lr": 0.0}, {"betas": (0.9, 1.0)}, {"warmup_steps": 400},
    {"min_lr_ratio": 1.5}, {"mixed_precision": "fp8"}, {"tracker": "tensorboard"},
    {"training_mode": "lora"}, {"lora_targets": ["q"]}, {"nan_policy": "ignore"}, {"ema_rampup": 0.0},
    {"grad_clip": -1.0}, {"keep_checkpoints": 0},
])
def test_config_rejects_bad_values(bad):
    with pytest.raises(ValueError):
        TrainConfig(**bad)


def test_config_typo_names_the_key():
    with pytest.raises(ConfigError, match="did you mean 'log_every'"):
        from_dict(TrainConfig, {"log_evry": 5}, where="params.yaml: train")


def test_warmup_cosine_values():
    kw = {"warmup_steps": 10, "total_steps": 110, "min_lr_ratio": 0.1}
    assert warmup_cosine(0, **kw) == pytest.approx(1 / 11)  # step 0 already learns
    assert warmup_cosine(9, **kw) == pytest.approx(10 / 11)
    assert warmup_cosine(10, **kw) == pytest.approx(1.0)  # end of warm-up: peak
    assert warmup_cosine(60, **kw) == pytest.approx(0.55)  # middle of the decay: (1 + min) / 2
    assert warmup_cosine(110, **kw) == pytest.approx(0.1)  # end: the floor
    assert warmup_cosine(500, **kw) == pytest.approx(0.1)
    assert warmup_cosine(0, warmup_steps=0, total_steps=10, min_lr_ratio=0.0) == pytest.approx(1.0)


def test_make_scheduler_drives_the_optimizer_lr():
    opt = torch.optim.SGD([torch.nn.Parameter(torch.zeros(1))], lr=2.0)
    sched = make_scheduler(opt, warmup_steps=4, total_steps=20, min_lr_ratio=0.0)
    seen = []
    for _ in range(21):
        seen.append(opt.param_groups[0]["lr"])
        opt.step()
        sched.step()
    assert seen[0] == pytest.approx(2.0 / 5) and seen[4] == pytest.approx(2.0)
    assert seen[12] == pytest.approx(1.0) and seen[20] == pytest.approx(0.0, abs=1e-12)
    assert all(math.isfinite(v) for v in seen)
    assert "lr_lambdas" in sched.state_dict()  # closure: nothing pickled but counters
