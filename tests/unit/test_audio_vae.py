"""lib.models.audio_vae: config checks, the frame rule, reparameterisation, and that training lowers AudioVAELoss."""
from __future__ import annotations

import math

import pytest
import torch

from lib.losses.vae import AudioVAELoss, AudioVAELossWeights
from lib.models.audio_vae import AudioVAE, AudioVAEConfig, audio_latent_shape


def _tiny(**kw) -> AudioVAE:
    torch.manual_seed(0)
    return AudioVAE(AudioVAEConfig(**{"n_mels": 16, "channels": 16, "latent_channels": 4, **kw}))


def _logmel(B: int, n_mels: int, frames: int, seed: int = 1) -> torch.Tensor:
    """Smooth log-mel-like input: a decaying spectrum with a slow per-frame envelope, in natural-log units."""
    g = torch.Generator().manual_seed(seed)
    mel = torch.linspace(0, 1, n_mels).view(1, n_mels, 1)
    t = torch.arange(frames).view(1, 1, frames).float()
    phase = torch.rand(B, 1, 1, generator=g) * 6
    return -4 * mel + torch.sin(0.3 * t + phase) * (1 - mel) - 2


@pytest.mark.parametrize("kw", [{"time_compression": 3}, {"time_compression": 32}, {"n_mels": 0},
                                {"channels": 0}, {"latent_channels": 0}, {"blocks": -1}])
def test_config_rejects_bad_values(kw):
    with pytest.raises(ValueError, match=f"^{next(iter(kw))}: "):
        AudioVAEConfig(**kw)


@pytest.mark.parametrize("tc,frames", [(4, 32), (4, 37), (1, 5), (2, 1), (16, 50), (8, 8)])
def test_shapes_and_frame_rule(tc, frames):
    model = _tiny(time_compression=tc)
    x = _logmel(2, 16, frames)
    x_hat, mean, logvar = model(x)
    assert mean.shape == logvar.shape == (2, 4, math.ceil(frames / tc))
    assert audio_latent_shape(model.config, frames) == (4, math.ceil(frames / tc))
    assert x_hat.shape == x.shape  # forward crops: every length round-trips
    # decode without num_frames gives whole groups: equal to frames only when tc divides it
    assert model.decode(mean).shape[2] == math.ceil(frames / tc) * tc


def test_errors_name_the_fix():
    model = _tiny()
    with pytest.raises(ValueError, match="check AudioVAEConfig.n_mels"):
        model.encode(torch.zeros(1, 8, 16))
    with pytest.raises(ValueError, match="expected 5..8"):
        model.decode(torch.zeros(1, 4, 2), num_frames=9)


def test_sample_false_decodes_the_mean_and_generator_reproduces():
    model = _tiny()
    x = _logmel(1, 16, 12)
    with torch.no_grad():
        x_mean, mean, _ = model(x, sample=False)
        a = model(x, generator=torch.Generator().manual_seed(3))[0]
        b = model(x, generator=torch.Generator().manual_seed(3))[0]
    torch.testing.assert_close(x_mean, model.decode(mean, num_frames=12))
    torch.testing.assert_close(a, b)
    assert (a - x_mean).abs().max() > 1e-5  # sampling adds noise


def test_training_lowers_audio_vae_loss():
    torch.manual_seed(0)
    model = AudioVAE(AudioVAEConfig())  # the default, at 64 mels
    x = _logmel(4, 64, 32)
    loss_fn = AudioVAELoss(AudioVAELossWeights(beta=1e-4, stft=1.0))
    opt = torch.optim.Adam(model.parameters(), lr=2e-3)
    gen = torch.Generator().manual_seed(0)
    losses, stft = [], []
    for step in range(30):
        x_hat, mean, logvar = model(x, generator=gen)
        loss, stats = loss_fn(x, x_hat, mean, logvar, step)
        opt.zero_grad()
        loss.backward()
        opt.step()
        losses.append(loss.item())
        stft.append(stats["avae/stft"])
    assert losses[-1] < 0.5 * losses[0], losses
    assert stft[-1] < 0.5 * stft[0], stft
