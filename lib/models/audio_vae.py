"""Audio VAE over log-mel frames: ``[B, n_mels, frames]`` <-> a diagonal-Gaussian latent ``[B, latent, frames']``.

1D convolutions over time with the mel bins as channels: a log-mel frame is a short vector, not an image
(the mel axis is not translation invariant the way image axes are), so 2D convs buy little, and 1D keeps the
model small enough for CPU training. Not causal: convs pad symmetrically (offline reconstruction).

    encoder: Conv1d ► [ResBlock × blocks ► Conv1d stride 2] × log2(tc) ► ResBlock × blocks ► Norm/SiLU ► Conv1d
             ► (mean, logvar)
    decoder: Conv1d ► ResBlock × blocks ► [nearest ×2 ► Conv1d ► ResBlock × blocks] × log2(tc) ► Norm/SiLU ► Conv1d

Frame rule (``tc = time_compression``): latent frames ``ceil(frames / tc)``; a clip whose length is not a
multiple of tc is padded at the end by repeating its last frame. ``decode(z)`` returns ``frames' * tc``
frames, so ``encode`` -> ``decode`` round-trips exactly when ``frames % tc == 0``; ``forward`` and
``decode(z, num_frames=frames)`` crop, so they round-trip every ``frames >= 1``.

Input is the log-mel as the data pipeline produces it (natural log, not dB); the model does not normalise
it beyond its GroupNorms, and the output (a log-mel reconstruction) is not clamped.

Default ``AudioVAEConfig()``: 228,816 params.
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Annotated, Literal

import torch
import torch.nn.functional as F
from annotated_types import Ge
from torch import nn

from lib.config import Checked
from lib.models.video_vae import LOGVAR_MAX, LOGVAR_MIN, reparameterize


@dataclass(frozen=True)
class AudioVAEConfig(Checked):
    """Audio VAE shape: mel bins in, trunk width, latent channels, time compression, depth."""

    n_mels: Annotated[int, Ge(1)] = 64
    channels: Annotated[int, Ge(1)] = 64  # trunk width, the same at every level
    latent_channels: Annotated[int, Ge(1)] = 8
    time_compression: Literal[1, 2, 4, 8, 16] = 4
    blocks: Annotated[int, Ge(0)] = 1  # residual blocks per level (and in the middle)


def audio_latent_shape(cfg: AudioVAEConfig, frames: int) -> tuple[int, int]:
    """Return the latent ``(latent_channels, ceil(frames / time_compression))``."""
    if frames < 1:
        raise ValueError(f"audio_latent_shape: need frames >= 1, got {frames}")
    return cfg.latent_channels, -(-frames // cfg.time_compression)


class ResBlock1d(nn.Module):
    """``x + conv(SiLU(norm(conv(SiLU(norm(x))))))``, kernel 3; shape preserved."""

    def __init__(self, channels: int) -> None:
        super().__init__()
        groups = math.gcd(channels, 8)
        self.norm1 = nn.GroupNorm(groups, channels)
        self.conv1 = nn.Conv1d(channels, channels, 3, padding=1)
        self.norm2 = nn.GroupNorm(groups, channels)
        self.conv2 = nn.Conv1d(channels, channels, 3, padding=1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = self.conv1(F.silu(self.norm1(x)))
        return x + self.conv2(F.silu(self.norm2(h)))


class AudioVAE(nn.Module):
    """Log-mel VAE; see the module docstring for the layout and the frame rule."""

    def __init__(self, config: AudioVAEConfig = AudioVAEConfig()) -> None:
        super().__init__()
        self.config = config
        c, n = config.channels, config.blocks
        levels = int(math.log2(config.time_compression))
        groups = math.gcd(c, 8)
        self.enc_in = nn.Conv1d(config.n_mels, c, 3, padding=1)
        self.enc_levels = nn.ModuleList(
            nn.Sequential(*(ResBlock1d(c) for _ in range(n)), nn.Conv1d(c, c, 3, stride=2, padding=1))
            for _ in range(levels))
        self.enc_mid = nn.Sequential(*(ResBlock1d(c) for _ in range(n)))
        self.enc_out = nn.Sequential(nn.GroupNorm(groups, c), nn.SiLU(), nn.Conv1d(c, 2 * config.latent_channels, 3,
                                                                                    padding=1))
        self.dec_in = nn.Conv1d(config.latent_channels, c, 3, padding=1)
        self.dec_mid = nn.Sequential(*(ResBlock1d(c) for _ in range(n)))
        self.dec_levels = nn.ModuleList(
            nn.Sequential(nn.Upsample(scale_factor=2, mode="nearest"), nn.Conv1d(c, c, 3, padding=1),
                          *(ResBlock1d(c) for _ in range(n)))
            for _ in range(levels))
        self.dec_out = nn.Sequential(nn.GroupNorm(groups, c), nn.SiLU(), nn.Conv1d(c, config.n_mels, 3, padding=1))

    def param_count(self) -> int:
        """Return the number of parameters (all are trainable)."""
        return sum(p.numel() for p in self.parameters())

    def encode(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Return ``(mean, logvar)``, each ``[B, latent_channels, ceil(frames / tc)]``; logvar is clamped."""
        cfg = self.config
        if x.ndim != 3 or x.shape[1] != cfg.n_mels:
            raise ValueError(f"AudioVAE.encode: x must be [B, n_mels={cfg.n_mels}, frames], got {list(x.shape)}; "
                             f"check AudioVAEConfig.n_mels against the mel features")
        audio_latent_shape(cfg, x.shape[2])
        pad = -x.shape[2] % cfg.time_compression
        if pad:  # repeat the last frame: every stride-2 level then halves the length exactly
            x = F.pad(x, (0, pad), mode="replicate")
        h = self.enc_in(x)
        for level in self.enc_levels:
            h = level(h)
        mean, logvar = self.enc_out(self.enc_mid(h)).chunk(2, dim=1)
        return mean, logvar.clamp(LOGVAR_MIN, LOGVAR_MAX)

    def decode(self, z: torch.Tensor, num_frames: int | None = None) -> torch.Tensor:
        """Return the log-mel ``[B, n_mels, frames' * tc]`` for ``z [B, latent_channels, frames']``.

        ``num_frames`` crops to the original length; it must lie in ``((frames'-1)*tc, frames'*tc]``.
        """
        cfg = self.config
        if z.ndim != 3 or z.shape[1] != cfg.latent_channels:
            raise ValueError(f"AudioVAE.decode: z must be [B, {cfg.latent_channels}, frames'], got {list(z.shape)}")
        tc, full = cfg.time_compression, z.shape[2] * cfg.time_compression
        if num_frames is not None and not full - tc < num_frames <= full:
            raise ValueError(f"AudioVAE.decode: num_frames={num_frames} does not fit {z.shape[2]} latent frames "
                             f"with time_compression={tc}; expected {full - tc + 1}..{full}")
        h = self.dec_mid(self.dec_in(z))
        for level in self.dec_levels:
            h = level(h)
        x_hat = self.dec_out(h)
        return x_hat if num_frames is None else x_hat[:, :, :num_frames]

    def forward(self, x: torch.Tensor, sample: bool = True,
                generator: torch.Generator | None = None) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """Return ``(x_hat, mean, logvar)``; ``x_hat`` has ``x``'s shape. ``sample=False`` decodes the mean."""
        mean, logvar = self.encode(x)
        z = reparameterize(mean, logvar, generator) if sample else mean
        return self.decode(z, num_frames=x.shape[2]), mean, logvar
