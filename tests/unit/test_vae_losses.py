"""lib.losses.vae: KL vs Monte Carlo, warm-up, STFT loss vs numpy, the log-mel spectral term, and the loss wrappers."""
from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from lib.losses.vae import (
    AudioVAELoss,
    AudioVAELossWeights,
    VideoVAELoss,
    VideoVAELossWeights,
    kl_divergence,
    kl_weight,
    multi_resolution_mel_loss,
    multi_resolution_stft_loss,
    reduce_kl,
)
from lib.models.vgg import VGG16_URL, PerceptualWeightsMissing, VGG16Features

# --------------------------------------------------------------------------------------------------- KL


def test_kl_closed_form_matches_monte_carlo():
    mean = torch.tensor([0.0, 1.5, -0.7, 0.3, 2.0], dtype=torch.float64)
    logvar = torch.tensor([0.0, -1.0, 0.8, -3.0, 0.4], dtype=torch.float64)
    n = 400_000
    g = torch.Generator().manual_seed(0)
    eps = torch.randn(n, 5, generator=g, dtype=torch.float64)
    z = mean + torch.exp(0.5 * logvar) * eps
    # log q(z) - log p(z); the 0.5*log(2π) constants cancel
    log_ratio = (-0.5 * logvar - 0.5 * eps.square()) - (-0.5 * z.square())
    mc, se = log_ratio.mean(0), log_ratio.std(0) / math.sqrt(n)
    closed = kl_divergence(mean, logvar)
    assert torch.all((closed - mc).abs() <= 5 * se + 1e-12), (closed, mc, se)  # element 0 has se = 0
    assert closed[0].item() == 0.0  # N(0, 1) against itself


def test_reduce_kl():
    kl = torch.arange(12, dtype=torch.float32).view(2, 3, 2)
    assert reduce_kl(kl, "mean").item() == pytest.approx(66 / 12)
    assert reduce_kl(kl, "sum").item() == pytest.approx((15 + 51) / 2)  # per-sample sums 15 and 51
    with pytest.raises(ValueError, match="'mean' or 'sum'"):
        reduce_kl(kl, "max")


def test_kl_weight_warmup():
    assert [kl_weight(s, 0.2, 4) for s in (0, 1, 2, 4, 10)] == pytest.approx([0.0, 0.05, 0.1, 0.2, 0.2])
    assert kl_weight(0, 0.2, 0) == 0.2
    with pytest.raises(ValueError):
        kl_weight(-1, 0.2, 4)


@pytest.mark.parametrize("cls,kw,field", [(VideoVAELossWeights, {"recon": "l3"}, "recon"),
                                          (VideoVAELossWeights, {"beta": -1}, "beta"),
                                          (VideoVAELossWeights, {"perceptual": -1}, "perceptual"),
                                          (VideoVAELossWeights, {"perceptual_layers": ("relu9",)}, "perceptual_layers"),
                                          (AudioVAELossWeights, {"kl_warmup_steps": -1}, "kl_warmup_steps"),
                                          (AudioVAELossWeights, {"stft_pools": (0,)}, "stft_pools")])
def test_weights_validation(cls, kw, field):
    with pytest.raises(ValueError, match=rf"^{field}(\[\d+\])?: "):
        cls(**kw)


# --------------------------------------------------------------------------------------------------- STFT


def _np_stft_mag(x: np.ndarray, n_fft: int, hop: int, win: int, eps: float) -> np.ndarray:
    """|STFT| like torch.stft(center=True, reflect, periodic hann centred in n_fft), by framing + rfft."""
    xp = np.pad(x, n_fft // 2, mode="reflect")
    w = 0.5 - 0.5 * np.cos(2 * np.pi * np.arange(win) / win)
    window = np.zeros(n_fft)
    left = (n_fft - win) // 2
    window[left:left + win] = w
    n_frames = 1 + (len(xp) - n_fft) // hop
    spec = np.stack([np.fft.rfft(xp[i * hop:i * hop + n_fft] * window) for i in range(n_frames)], axis=1)
    return np.sqrt(np.maximum(np.abs(spec) ** 2, eps))


def _np_mrstft(x: np.ndarray, y: np.ndarray, ffts, hops, wins, eps=1e-7) -> float:
    total = 0.0
    for n_fft, hop, win in zip(ffts, hops, wins, strict=False):
        xm = np.stack([_np_stft_mag(s, n_fft, hop, win, eps) for s in x])
        ym = np.stack([_np_stft_mag(s, n_fft, hop, win, eps) for s in y])
        sc = np.linalg.norm(ym - xm) / np.linalg.norm(ym)
        total += sc + np.mean(np.abs(np.log(ym) - np.log(xm)))
    return total / len(ffts)


def test_stft_loss_matches_numpy():
    rng = np.random.default_rng(0)
    x, y = rng.standard_normal((2, 100)), rng.standard_normal((2, 100))
    ffts, hops, wins = (16, 32), (4, 8), (16, 20)  # the second resolution has win < n_fft
    got = multi_resolution_stft_loss(torch.from_numpy(x), torch.from_numpy(y), ffts, hops, wins)
    assert got.item() == pytest.approx(_np_mrstft(x, y, ffts, hops, wins), rel=1e-9)
    # default hop = fft // 4, win = fft; [B, 1, L] folds to [B, L]
    got = multi_resolution_stft_loss(torch.from_numpy(x)[:, None], torch.from_numpy(y)[:, None], (16, 32))
    assert got.item() == pytest.approx(_np_mrstft(x, y, (16, 32), (4, 8), (16, 32)), rel=1e-9)


def test_stft_loss_zero_when_equal_positive_otherwise_and_differentiable():
    torch.manual_seed(0)
    y = torch.randn(2, 2048)
    assert multi_resolution_stft_loss(y, y.clone()).item() == 0.0
    x = (y + 0.1 * torch.randn_like(y)).requires_grad_(True)
    loss = multi_resolution_stft_loss(x, y)
    assert loss.item() > 0
    loss.backward()
    assert torch.isfinite(x.grad).all() and x.grad.abs().sum() > 0
    assert multi_resolution_stft_loss(torch.zeros(1, 2048), torch.zeros(1, 2048)).item() == 0.0  # silence is finite


def test_stft_loss_errors():
    with pytest.raises(ValueError, match="too short for fft_size 2048.*pass smaller fft_sizes"):
        multi_resolution_stft_loss(torch.zeros(1, 600), torch.zeros(1, 600))
    with pytest.raises(ValueError, match="same non-zero"):
        multi_resolution_stft_loss(torch.zeros(1, 600), torch.zeros(1, 600), (64, 128), (16,))


# --------------------------------------------------------------------------------------------------- log-mel


def _np_mel_loss(a: np.ndarray, b: np.ndarray, pools) -> float:
    """Spectral convergence + log-magnitude L1 on exp(log-mel) pooled by r frames (trailing partial window)."""
    total = 0.0
    ma, mb = np.exp(a), np.exp(b)
    for r in pools:
        n = -(-a.shape[-1] // r)
        pa = np.stack([ma[..., i * r:(i + 1) * r].mean(-1) for i in range(n)], -1)
        pb = np.stack([mb[..., i * r:(i + 1) * r].mean(-1) for i in range(n)], -1)
        total += np.linalg.norm(pb - pa) / np.linalg.norm(pb) + np.mean(np.abs(np.log(pb) - np.log(pa)))
    return total / len(pools)


def test_mel_loss_matches_numpy_and_is_zero_when_equal():
    rng = np.random.default_rng(1)
    a, b = rng.normal(-3, 1, (2, 5, 11)), rng.normal(-3, 1, (2, 5, 11))
    got = multi_resolution_mel_loss(torch.from_numpy(a), torch.from_numpy(b), (1, 2, 4))
    assert got.item() == pytest.approx(_np_mel_loss(a, b, (1, 2, 4)), rel=1e-9)
    t = torch.from_numpy(b)
    assert multi_resolution_mel_loss(t, t.clone()).item() == 0.0
    big = torch.full((1, 2, 4), 500.0)  # an exploding decoder: clamped, not inf
    assert torch.isfinite(multi_resolution_mel_loss(big, torch.zeros(1, 2, 4)))


def test_audio_vae_loss_by_hand():
    torch.manual_seed(0)
    x, x_hat = torch.randn(2, 6, 8) - 3, torch.randn(2, 6, 8) - 3
    mean, logvar = torch.randn(2, 3, 2), torch.randn(2, 3, 2)
    loss, stats = AudioVAELoss(AudioVAELossWeights(recon="l2", beta=0.5, kl_warmup_steps=4, stft=2.0))(
        x, x_hat, mean, logvar, step=1)
    recon = ((x_hat - x) ** 2).mean().item()
    kl = (0.5 * (mean ** 2 + logvar.exp() - 1 - logvar)).mean().item()
    spec = _np_mel_loss(x_hat.double().numpy(), x.double().numpy(), (1, 2, 4))
    assert loss.item() == pytest.approx(recon + 0.5 * 0.25 * kl + 2.0 * spec, rel=1e-5)
    assert stats["avae/kl_weight"] == pytest.approx(0.125) and stats["avae/stft"] == pytest.approx(spec, rel=1e-5)
    loss0, stats0 = AudioVAELoss(AudioVAELossWeights(stft=0.0))(x, x_hat, mean, logvar, step=0)
    assert "avae/stft" not in stats0 and loss0.item() == pytest.approx((x_hat - x).abs().mean().item() + 1e-4 * kl)


# --------------------------------------------------------------------------------------------------- video


def test_video_vae_loss_by_hand_without_perceptual():
    torch.manual_seed(0)
    x, x_hat = torch.rand(2, 3, 4, 8, 8), torch.rand(2, 3, 4, 8, 8)
    mean, logvar = torch.randn(2, 4, 2, 2, 2), torch.randn(2, 4, 2, 2, 2)
    loss_fn = VideoVAELoss(VideoVAELossWeights(beta=0.1, kl_warmup_steps=10))
    assert loss_fn.vgg is None  # perceptual 0: nothing loaded
    kl = (0.5 * (mean ** 2 + logvar.exp() - 1 - logvar)).mean().item()
    for step, w in ((0, 0.0), (5, 0.05), (20, 0.1)):
        loss, stats = loss_fn(x, x_hat, mean, logvar, step)
        assert loss.item() == pytest.approx((x_hat - x).abs().mean().item() + w * kl, rel=1e-6)
        assert stats["vae/kl"] == pytest.approx(kl, rel=1e-6) and stats["vae/kl_weight"] == pytest.approx(w)


def test_video_vae_loss_missing_vgg_raises_at_construction(monkeypatch, tmp_path):
    monkeypatch.setattr(torch.hub, "get_dir", lambda: str(tmp_path))
    with pytest.raises(PerceptualWeightsMissing, match="perceptual_weights: <path>") as info:
        VideoVAELoss(VideoVAELossWeights(perceptual=0.1))
    assert VGG16_URL in str(info.value) and "perceptual: 0" in str(info.value)


def test_video_vae_loss_perceptual_term_per_frame(tmp_path):
    torch.manual_seed(0)
    src = VGG16Features(("relu1_2", "relu2_2"))
    with torch.no_grad():
        for p in src.parameters():
            p.normal_(0, 0.1)
    torch.save(src.state_dict(), tmp_path / "vgg.pth")
    loss_fn = VideoVAELoss(VideoVAELossWeights(beta=0.0, perceptual=0.5, perceptual_weights=str(tmp_path / "vgg.pth"),
                                               perceptual_layers=("relu1_2", "relu2_2")))
    x, x_hat = torch.rand(2, 3, 3, 8, 8) * 2 - 1, torch.rand(2, 3, 3, 8, 8) * 2 - 1
    x_hat.requires_grad_(True)
    loss, stats = loss_fn(x, x_hat, torch.zeros(2, 4, 2, 2, 2), torch.zeros(2, 4, 2, 2, 2), step=0)
    with torch.no_grad():  # frame by frame, layer by layer, then averaged
        per_frame = [[(a - b).abs().mean() for a, b in zip(src(x_hat[:, :, t]), src(x[:, :, t]), strict=False)]
                     for t in range(3)]
        perc = torch.tensor(per_frame).mean(0).mean().item()
    assert stats["vae/perceptual"] == pytest.approx(perc, rel=1e-5)
    assert loss.item() == pytest.approx((x_hat - x).abs().mean().item() + 0.5 * perc, rel=1e-5)
    loss.backward()
    assert x_hat.grad.abs().sum() > 0 and not any(p.grad is not None for p in loss_fn.vgg.parameters())
