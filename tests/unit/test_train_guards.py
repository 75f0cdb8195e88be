"""NaN guard and the collapse monitor's warning and stop rules."""
import logging
import math

import pytest
import torch

from lib.train.guards import CollapseMonitor, NanGuard, TrainingDiverged


def test_nan_guard_policies():
    stop = NanGuard("stop")
    assert stop.check(0, "loss", torch.tensor(1.5)) and stop.check(0, "loss", 2.0)
    with pytest.raises(TrainingDiverged, match="step 7: grad_norm/G = inf") as err:
        stop.check(7, "grad_norm/G", torch.tensor(math.inf))
    assert (err.value.step, err.value.name) == (7, "grad_norm/G")
    assert NanGuard("skip").check(3, "loss", float("nan")) is False
    with pytest.raises(ValueError):
        NanGuard("ignore")


def test_divergence_warns_after_patience_and_resets(caplog):
    mon = CollapseMonitor(disc_patience=3, stop_after=None)
    with caplog.at_level(logging.WARNING, logger="lib.train.guards"):
        assert mon.update(1, {"D/accuracy": 0.995}) == []
        assert mon.update(2, {"D/accuracy": 1.0}) == []
        warned = mon.update(3, {"D/accuracy": 0.99})
    assert len(warned) == 1 and "divergence" in warned[0]
    assert "step 3" in caplog.text and "D/accuracy >= 0.99 for 3 consecutive logs" in caplog.text
    assert mon.update(4, {"D/accuracy": 0.7}) == [] and mon.disc_streak == 0
    assert not mon.should_stop  # stop_after=None: warn only


def test_mode_collapse_and_stop_rule():
    mon = CollapseMonitor(min_std_ratio=0.2, stop_after=2)
    assert mon.update(1, {"G/fake_std": 0.5, "G/real_std": 1.0}) == []
    assert "mode collapse" in mon.update(2, {"G/fake_std": 0.1, "G/real_std": 1.0})[0]
    assert not mon.should_stop
    mon.update(3, {"G/fake_std": 0.05, "G/real_std": 1.0})
    assert mon.should_stop  # warnings at 2 consecutive logs
    # absent keys switch rules off (a VAE run has no discriminator)
    assert CollapseMonitor().update(1, {"loss": 1.0}) == []


def test_monitor_state_round_trip():
    mon = CollapseMonitor(disc_patience=1)
    mon.update(1, {"D/accuracy": 1.0})
    other = CollapseMonitor(disc_patience=1)
    other.load_state_dict(mon.state_dict())
    assert other.state_dict() == mon.state_dict() == {"disc_streak": 1, "std_streak": 0, "warn_streak": 1,
                                                      "warnings": 1}
