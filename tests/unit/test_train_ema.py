"""EMA with the half-life-in-images rule (stylegan2-ada)."""
import io

import pytest
import torch
from torch import nn

from lib.train.ema import EMA, ema_beta


def _model(seed: int = 0) -> nn.Module:
    torch.manual_seed(seed)
    return nn.Sequential(nn.Linear(3, 5), nn.BatchNorm1d(5), nn.Linear(5, 2))


def test_beta_from_half_life():
    assert ema_beta(4, 500.0) == 0.5 ** (4 / 500)
    # after half_life / batch updates the old weights weigh one half
    assert ema_beta(10, 100.0) ** 10 == pytest.approx(0.5)
    # ramp-up caps the half-life at samples_seen * rampup
    assert ema_beta(4, 500.0, samples_seen=100, rampup=0.05) == 0.5 ** (4 / 5)
    assert ema_beta(4, 500.0, samples_seen=0, rampup=0.05) == 0.0  # first update copies


def test_one_update_is_b_old_plus_one_minus_b_new():
    model = _model()
    ema = EMA(model, half_life_images=50.0)
    old = {n: p.detach().clone().double() for n, p in model.named_parameters()}
    with torch.no_grad():
        for p in model.parameters():
            p.add_(torch.randn_like(p))
        model[1].running_mean.fill_(3.0)
    beta = ema.update(model, batch_images=8)
    b = 0.5 ** (8 / 50.0)
    assert beta == b
    for name, p in model.named_parameters():
        expected = b * old[name] + (1 - b) * p.detach().double()
        torch.testing.assert_close(ema.params[name].double(), expected, rtol=0, atol=1e-6)
    assert torch.equal(ema.buffers["1.running_mean"], torch.full((5,), 3.0))  # buffers are copied


def test_swap_for_eval_and_state_dict_round_trip():
    model = _model()
    ema = EMA(model, half_life_images=10.0)
    with torch.no_grad():
        for p in model.parameters():
            p.mul_(2.0)
    ema.update(model, batch_images=10)
    own = {k: v.clone() for k, v in model.state_dict().items()}
    with ema.swapped_into(model):
        for name, p in model.named_parameters():
            assert torch.equal(p, ema.params[name])
    for name, v in model.state_dict().items():
        assert torch.equal(v, own[name])

    buf = io.BytesIO()
    torch.save(ema.state_dict(), buf)
    buf.seek(0)
    other = EMA(_model(seed=1), half_life_images=10.0)
    other.load_state_dict(torch.load(buf, weights_only=True))
    assert other.num_updates == 1
    for name in ema.params:
        assert torch.equal(other.params[name], ema.params[name])
    fresh = _model(seed=2)
    other.copy_to(fresh)
    assert torch.equal(fresh[0].weight, ema.params["0.weight"])
    with pytest.raises(KeyError, match="different model"):
        EMA(nn.Linear(3, 5), 10.0).load_state_dict(ema.state_dict())
