"""lib.losses.gan: each loss against an independent computation; lazy R1 scaling; APTLoss gradient routing."""
from __future__ import annotations

import math

import pytest
import torch
from torch import nn

from lib.losses.gan import (
    APTLoss,
    GANLossWeights,
    approximate_gradient_penalty,
    discriminator_nonsaturating,
    discriminator_rpgan,
    feature_matching,
    generator_nonsaturating,
    generator_rpgan,
    r1_penalty,
)
from lib.models.discriminators import PatchDiscriminator3D
from lib.models.video_sr import VideoSRConfig, VideoSRGenerator


class TinyD(nn.Module):
    """A one-conv discriminator with a smooth nonlinearity, so ∇_x D depends on x (float64 friendly)."""

    def __init__(self) -> None:
        super().__init__()
        self.conv = nn.Conv3d(3, 2, kernel_size=(1, 2, 2))
        self.out = nn.Conv3d(2, 1, kernel_size=1)

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, list[torch.Tensor]]:
        h = torch.tanh(self.conv(x))
        return self.out(h), [h]


def _tiny_d() -> TinyD:
    torch.manual_seed(0)
    return TinyD().double()


def test_nonsaturating_losses_match_log_sigmoid():
    torch.manual_seed(0)
    real, fake = torch.randn(4, 1, 2, 3, 3).double() * 3, torch.randn(4, 1, 2, 3, 3).double() * 3
    expected_g = -torch.log(torch.sigmoid(fake)).mean()
    expected_d = -torch.log(torch.sigmoid(real)).mean() - torch.log(1 - torch.sigmoid(fake)).mean()
    torch.testing.assert_close(generator_nonsaturating(fake), expected_g)
    torch.testing.assert_close(discriminator_nonsaturating(real, fake), expected_d)


def test_feature_matching_value_by_hand():
    real = [torch.tensor([[1.0, 2.0]]), torch.tensor([[0.0, 0.0, 3.0]])]
    fake = [torch.tensor([[2.0, 0.0]]), torch.tensor([[1.0, 1.0, 1.0]])]
    # layer 1: (1 + 2) / 2 = 1.5; layer 2: (1 + 1 + 2) / 3 = 4/3; mean = (1.5 + 4/3) / 2
    assert feature_matching(real, fake).item() == pytest.approx((1.5 + 4 / 3) / 2)
    with pytest.raises(ValueError, match="same non-zero number of layers"):
        feature_matching(real, fake[:1])


def test_feature_matching_detaches_real_side():
    D = _tiny_d()
    x_real = torch.randn(2, 3, 2, 4, 4, dtype=torch.float64, requires_grad=True)
    x_fake = torch.randn(2, 3, 2, 4, 4, dtype=torch.float64, requires_grad=True)
    _, real_features = D(x_real)
    _, fake_features = D(x_fake)
    feature_matching(real_features, fake_features).backward()
    assert x_real.grad is None
    assert x_fake.grad is not None and x_fake.grad.abs().sum() > 0


def test_r1_matches_finite_differences():
    D = _tiny_d()
    torch.manual_seed(1)
    x = torch.randn(2, 3, 2, 3, 3, dtype=torch.float64)

    def f(sample: torch.Tensor) -> float:  # sum of one sample's patch logits
        with torch.no_grad():
            return D(sample[None])[0].sum().item()

    eps, norms = 1e-6, []
    for sample in x:
        grad = torch.zeros_like(sample).flatten()
        for i in range(grad.numel()):
            step = torch.zeros_like(grad)
            step[i] = eps
            grad[i] = (f(sample + step.view_as(sample)) - f(sample - step.view_as(sample))) / (2 * eps)
        norms.append(grad.square().sum().item())
    patches = D(x)[0][0].numel()  # per logit: the squared norm of the summed logits' gradient over P
    expected = sum(norms) / len(norms) / patches

    r1 = r1_penalty(D, x)
    assert abs(r1.item() - expected) / expected < 1e-4
    # create_graph=True: the penalty backpropagates into D's weights (not the output bias: ∇_x ignores it)
    r1.backward()
    for p in (D.conv.weight, D.conv.bias, D.out.weight):
        assert p.grad is not None and p.grad.abs().sum() > 0


def test_rpgan_losses_match_their_formula_and_pair_each_fake_with_its_real():
    torch.manual_seed(0)
    real, fake = torch.randn(4, 1, 2, 3, 3).double() * 3, torch.randn(4, 1, 2, 3, 3).double() * 3
    # -log sigmoid(D(x) - D(G(z))) for D; -log sigmoid(D(G(z)) - D(x)) for G, averaged over pairs
    torch.testing.assert_close(discriminator_rpgan(real, fake), -torch.log(torch.sigmoid(real - fake)).mean())
    torch.testing.assert_close(generator_rpgan(real, fake), -torch.log(torch.sigmoid(fake - real)).mean())
    # relativistic: shifting every logit by a constant changes nothing (the non-saturating loss does change)
    torch.testing.assert_close(discriminator_rpgan(real + 5, fake + 5), discriminator_rpgan(real, fake))
    assert discriminator_nonsaturating(real + 5, fake + 5) != discriminator_nonsaturating(real, fake)
    with pytest.raises(ValueError, match="pairs each fake with its real"):
        generator_rpgan(real, fake[:2])


def _exact_per_patch_penalty(D: nn.Module, x: torch.Tensor) -> float:
    """E_x Σ_p ||∇_x D_p(x)||², by autograd, one patch logit at a time."""
    x = x.detach().requires_grad_(True)
    logits = D(x)[0]
    total = 0.0
    for p in range(logits[0].numel()):
        (grad,) = torch.autograd.grad(logits.flatten(1)[:, p].sum(), x, retain_graph=True)
        total += grad.square().flatten(1).sum(1).mean().item()  # samples are independent: per-sample gradients
    return total


def test_approximate_penalty_over_sigma_squared_tends_to_the_exact_gradient_penalty():
    D = _tiny_d()
    torch.manual_seed(1)
    x = torch.randn(2, 3, 2, 3, 3, dtype=torch.float64)
    exact = _exact_per_patch_penalty(D, x) / D(x)[0][0].numel()  # per logit
    # for a fixed direction ε the finite difference is the directional derivative as σ -> 0 ...
    torch.manual_seed(5)
    ratios = []
    for sigma in (1e-2, 1e-3, 1e-4):
        torch.manual_seed(5)
        approx = approximate_gradient_penalty(D, x, sigma).item() / sigma**2
        ratios.append(approx)
    assert abs(ratios[1] - ratios[2]) < abs(ratios[0] - ratios[1])  # converging
    # ... and over ε ~ N(0, I) its mean is Σ_p ||∇D_p||² / P (the exact penalty per logit), within sampling error
    torch.manual_seed(6)
    draws = [approximate_gradient_penalty(D, x, 1e-4).item() / 1e-8 for _ in range(4000)]
    assert sum(draws) / len(draws) == pytest.approx(exact, rel=0.05)
    # one logit per sample: the exact per-patch penalty is the R1 this module computes exactly
    class OneLogit(nn.Module):
        def forward(self, v):
            logits, features = D(v)
            return logits.flatten(1).sum(1, keepdim=True), features

    assert _exact_per_patch_penalty(OneLogit(), x) == pytest.approx(r1_penalty(OneLogit(), x).item(), rel=1e-9)


def test_penalties_are_per_logit_so_more_patches_do_not_strengthen_them():
    """A patch D sees a clip and the same clip tiled 2x2 (~4.6x the patch logits): per logit, both penalties stay
    about equal (only the tiles' seams and borders differ); summed over patches they grew with the patch count
    and held D at chance in training."""
    torch.manual_seed(3)
    D = PatchDiscriminator3D(channels=4, n_down=1).double().eval()  # eval: no power-iteration updates between calls
    x = torch.randn(2, 3, 2, 16, 16, dtype=torch.float64)
    tiled = x.repeat(1, 1, 1, 2, 2)
    patches = D(tiled)[0][0].numel() / D(x)[0][0].numel()
    r1_ratio = (r1_penalty(D, tiled) / r1_penalty(D, x)).item()
    torch.manual_seed(4)
    small = sum(approximate_gradient_penalty(D, x, 1e-3).item() for _ in range(100))
    torch.manual_seed(4)
    large = sum(approximate_gradient_penalty(D, tiled, 1e-3).item() for _ in range(100))
    assert patches > 4
    assert 0.75 < r1_ratio < 1.5 and 0.75 < large / small < 1.5, (r1_ratio, large / small)


def test_rpgan_penalties_train_d_only_and_follow_r1_every():
    G, D = _nets()
    lq, hq, text = _batch()
    fake = G(lq, text)  # not detached by the caller
    weights = GANLossWeights(kind="rpgan_r1r2", r1=1000.0, r2=1000.0, sigma=0.01, r1_every=2)
    loss_fn = APTLoss(weights)
    assert not loss_fn.needs_double_backward and APTLoss(GANLossWeights()).needs_double_backward
    torch.manual_seed(7)
    loss, stats = loss_fn.discriminator_step(D, hq, fake, step=0)
    loss.backward()
    assert {"d/r1", "d/r2"} <= set(stats)
    expected = stats["d/main"] + 2 * 1000.0 * (stats["d/r1"] + stats["d/r2"])
    assert loss.item() == pytest.approx(expected.item(), rel=1e-5)
    # (rel 1e-3: each forward of the spectral-norm D advances its power iteration a little)
    assert stats["d/main"].item() == pytest.approx(discriminator_rpgan(D(hq)[0], D(fake.detach())[0]).item(),
                                                   rel=1e-3)
    assert all(p.grad is None for p in G.parameters())
    assert all(p.grad is not None and torch.isfinite(p.grad).all() for p in D.parameters())
    _, off_step = loss_fn.discriminator_step(D, hq, fake, step=1)
    assert "d/r1" not in off_step and "d/r2" not in off_step
    # the generator side: RpGAN against the paired reals, gradients to G only
    G.zero_grad()
    D.zero_grad()
    g_loss, g_stats = loss_fn.generator_step(G, D, lq, hq, text)
    g_loss.backward()
    with torch.no_grad():
        real_logits, fake_logits = D(hq)[0], D(G(lq, text))[0]
    assert g_stats["g/adv"].item() == pytest.approx(generator_rpgan(real_logits, fake_logits).item(), rel=1e-3)
    assert all(p.grad is None for p in D.parameters())
    assert G.tail.weight.grad is not None and G.tail.weight.grad.abs().sum() > 0
    with pytest.raises(ValueError, match="r2: 1.0 has no effect with kind ns_r1"):
        GANLossWeights(r2=1.0)


def _d_losses(weights: GANLossWeights, steps: int) -> list[tuple[float, dict[str, float]]]:
    D = _tiny_d()
    torch.manual_seed(2)
    real, fake = torch.randn(2, 3, 2, 4, 4).double(), torch.randn(2, 3, 2, 4, 4).double()
    loss_fn = APTLoss(weights)
    return [(loss.item(), {k: v.item() for k, v in stats.items()})
            for loss, stats in (loss_fn.discriminator_step(D, real, fake, s) for s in range(steps))]


def test_lazy_r1_total_strength_does_not_depend_on_r1_every():
    gamma, every = 0.7, 4
    lazy = _d_losses(GANLossWeights(r1=gamma, r1_every=every), every)
    eager = _d_losses(GANLossWeights(r1=gamma, r1_every=1), every)
    assert ["d/r1" in s for _, s in lazy] == [True, False, False, False]
    assert all("d/r1" in s for _, s in eager)
    main = lazy[1][1]["d/main"]
    r1 = eager[0][1]["d/r1"]
    lazy_r1 = sum(loss - s["d/main"] for loss, s in lazy)
    eager_r1 = sum(loss - s["d/main"] for loss, s in eager)
    assert lazy_r1 == pytest.approx(eager_r1, rel=1e-10)
    assert eager_r1 == pytest.approx(every * gamma / 2 * r1, rel=1e-10)
    assert lazy[0][0] == pytest.approx(main + every * gamma / 2 * r1, rel=1e-10)


def test_weights_validation():
    with pytest.raises(ValueError, match="r1_every"):
        GANLossWeights(r1_every=0)
    with pytest.raises(ValueError, match="^fm: must be >= 0, got -1.0"):
        GANLossWeights(fm=-1.0)


def _nets() -> tuple[VideoSRGenerator, PatchDiscriminator3D]:
    torch.manual_seed(3)
    G = VideoSRGenerator(VideoSRConfig(scale=2, channels=4, blocks=1, text_dim=3))
    D = PatchDiscriminator3D(channels=4)
    return G, D


def _batch() -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    torch.manual_seed(4)
    return torch.rand(2, 3, 2, 8, 8) * 2 - 1, torch.rand(2, 3, 2, 16, 16) * 2 - 1, torch.randn(2, 3)


def test_generator_step_reaches_g_only():
    G, D = _nets()
    lq, hq, text = _batch()
    weights = GANLossWeights(adv=1.0, fm=2.0, recon=0.5)
    loss, raw = APTLoss(weights).generator_step(G, D, lq, hq, text)
    loss.backward()
    assert math.isfinite(loss.item())
    # stats are detached 0-d tensors (no GPU sync per stat)
    assert all(isinstance(v, torch.Tensor) and v.ndim == 0 and not v.requires_grad for v in raw.values())
    stats = {k: v.item() for k, v in raw.items()}
    assert all(math.isfinite(v) for v in stats.values())
    assert stats["g/loss"] == pytest.approx(stats["g/adv"] + 2.0 * stats["g/fm"] + 0.5 * stats["g/recon_l1"], rel=1e-5)
    assert all(p.grad is None for p in D.parameters())
    assert all(p.requires_grad for p in D.parameters())  # frozen only during the step
    assert G.tail.weight.grad is not None and G.tail.weight.grad.abs().sum() > 0


def test_discriminator_step_reaches_d_only():
    G, D = _nets()
    lq, hq, text = _batch()
    fake = G(lq, text)  # not detached by the caller: the step must detach it
    loss, stats = APTLoss(GANLossWeights(r1_every=2)).discriminator_step(D, hq, fake, step=0)
    loss.backward()
    assert math.isfinite(loss.item()) and "d/r1" in stats
    assert 0.0 <= stats["d/acc_real"] <= 1.0 and 0.0 <= stats["d/acc_fake"] <= 1.0
    assert all(p.grad is None for p in G.parameters())
    assert all(p.grad is not None and torch.isfinite(p.grad).all() for p in D.parameters())


def test_d_accuracy_stats():
    class FixedD(nn.Module):
        def forward(self, x):
            return x.flatten(1)[:, :1], []

    real = torch.tensor([1.0, 2.0, -1.0, 3.0]).view(4, 1, 1, 1, 1)
    fake = torch.tensor([-1.0, 1.0, -2.0, -3.0]).view(4, 1, 1, 1, 1)
    _, stats = APTLoss(GANLossWeights(r1=0.0)).discriminator_step(FixedD(), real, fake, step=0)
    assert stats["d/acc_real"].item() == 0.75 and stats["d/acc_fake"].item() == 0.75
    assert "d/r1" not in stats
