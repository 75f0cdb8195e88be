"""Causal 3D-convolution video VAE: ``[B, C, T, H, W]`` in [-1, 1] <-> a diagonal-Gaussian latent.

Layout (``L = max(log2 tc, log2 sc)`` levels; level ``i`` halves time while ``i < log2 tc`` and
halves H, W while ``i < log2 sc``, so time is compressed in the first, widest-resolution levels)::

    encoder: CConv ► [ResBlock × blocks ► Down] × L ► ResBlock × blocks ► Norm/SiLU ► CConv ► (mean, logvar)
    decoder: CConv ► ResBlock × blocks ► [Up ► ResBlock × blocks] × L ► Norm/SiLU ► CConv ► x_hat

(CConv = :class:`CausalConv3d`, kernel 3.)

Every level has the same width ``channels``: that keeps the default at a few hundred k parameters, which is
what 2 CPU cores can train in minutes; the GPU preset gets its capacity from width and depth instead.

Time rule (``tc = temporal_compression``, ``sc = spatial_compression``):

- latent frames ``T' = ceil(T / tc)``; latent frame ``j`` summarises input frames ``[j*tc, (j+1)*tc)``.
  When ``T % tc != 0`` the clip is padded at the END by repeating its last frame (never at the start,
  which would shift every group and break the alignment).
- causality: latent frame ``j`` depends only on input frames ``< (j+1)*tc``; decoded frame ``t`` depends
  only on latent frames ``<= t // tc``. So reconstructed frame ``t`` never sees a frame after its group.
  Three things make this hold: :class:`CausalConv3d` pads time on the past side only (repeating the first
  frame, a static "before the clip"); temporal down-sampling is a stride-``2`` kernel-``2`` conv over aligned,
  non-overlapping frame pairs; temporal up-sampling is nearest (frame ``t`` copies latent ``t // 2``)
  followed by a causal conv. GroupNorm runs per frame, because normalising over T would leak the future.
- ``decode(z)`` returns ``T' * tc`` frames; ``decode(z, num_frames=T)`` (and ``forward``) crop to ``T``.
  So shapes round-trip for every ``T >= 1`` through ``forward``; ``encode`` -> ``decode(z)`` without
  ``num_frames`` round-trips exactly when ``T % tc == 0``.
- space: ``H`` and ``W`` must be divisible by ``sc`` (checked); the latent is ``H / sc`` by ``W / sc``.

Presets (param counts from :meth:`VideoVAE.param_count`):

- ``VideoVAEConfig()`` — channels 32, latent 4, tc 2, sc 4, blocks 1: 431,755 params, CPU-trainable.
- ``GPU_PRESET`` — channels 128, latent 16, tc 4, sc 8, blocks 2, gradient checkpointing: 16,420,643 params.
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Annotated, Literal

import torch
import torch.nn.functional as F
from annotated_types import Ge
from torch import nn
from torch.utils.checkpoint import checkpoint

from lib.config import Checked

# Clamp range of logvar (the Stable Diffusion VAE's): exp(-30) ~ 1e-13 and exp(20) ~ 5e8 keep exp() and the
# KL finite when an untrained or diverging encoder outputs extreme values.
LOGVAR_MIN, LOGVAR_MAX = -30.0, 20.0


def reparameterize(mean: torch.Tensor, logvar: torch.Tensor,
                   generator: torch.Generator | None = None) -> torch.Tensor:
    """Return ``mean + exp(logvar / 2) * eps``, ``eps ~ N(0, I)``, so the sample is differentiable in both.

    ``generator`` makes the noise reproducible (e.g. for validation); it must live on ``mean``'s device.
    """
    eps = torch.randn(mean.shape, generator=generator, device=mean.device, dtype=mean.dtype)
    return mean + torch.exp(0.5 * logvar) * eps


@dataclass(frozen=True)
class VideoVAEConfig(Checked):
    """Video VAE shape: channels in/trunk/latent, time and space compression, depth, checkpointing."""

    in_channels: Annotated[int, Ge(1)] = 3
    channels: Annotated[int, Ge(1)] = 32  # trunk width, the same at every level
    latent_channels: Annotated[int, Ge(1)] = 4
    temporal_compression: Literal[1, 2, 4] = 2  # tc
    spatial_compression: Literal[1, 2, 4, 8, 16] = 4  # sc
    blocks: Annotated[int, Ge(0)] = 1  # residual blocks per level (and in the middle)
    gradient_checkpointing: bool = False  # recompute ResBlocks in backward (training only): less memory

    @property
    def levels(self) -> list[tuple[int, int]]:
        """Per level ``(time_factor, space_factor)``, each 1 or 2, encoder order."""
        lt, ls = int(math.log2(self.temporal_compression)), int(math.log2(self.spatial_compression))
        return [(2 if i < lt else 1, 2 if i < ls else 1) for i in range(max(lt, ls))]


GPU_PRESET = VideoVAEConfig(channels=128, latent_channels=16, temporal_compression=4, spatial_compression=8,
                            blocks=2, gradient_checkpointing=True)


def latent_shape(cfg: VideoVAEConfig, T: int, H: int, W: int) -> tuple[int, int, int, int]:
    """Return the latent ``(latent_channels, ceil(T / tc), H / sc, W / sc)`` for a ``T x H x W`` clip."""
    sc = cfg.spatial_compression
    if T < 1:
        raise ValueError(f"latent_shape: need T >= 1 frames, got {T}")
    if H % sc or W % sc:
        raise ValueError(f"VideoVAE: H and W must be divisible by spatial_compression={sc}, got {H}x{W}; "
                         f"crop or resize the clips to a multiple of {sc}")
    return cfg.latent_channels, -(-T // cfg.temporal_compression), H // sc, W // sc


class CausalConv3d(nn.Module):
    """3D conv whose output frame ``t`` depends only on input frames ``<= t``; T, H, W are preserved (stride 1).

    Time is padded by ``kernel_t - 1`` copies of the first frame on the past side only; H and W get
    symmetric zero padding ``k // 2`` (odd spatial kernels).
    """

    def __init__(self, in_channels: int, out_channels: int, kernel_size: int | tuple[int, int, int] = 3) -> None:
        super().__init__()
        kt, kh, kw = (kernel_size,) * 3 if isinstance(kernel_size, int) else kernel_size
        if kh % 2 == 0 or kw % 2 == 0:
            raise ValueError(f"CausalConv3d: spatial kernel must be odd for symmetric padding, got {(kh, kw)}")
        self.time_pad = kt - 1
        self.conv = nn.Conv3d(in_channels, out_channels, (kt, kh, kw), padding=(0, kh // 2, kw // 2))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """``[B, C_in, T, H, W] -> [B, C_out, T, H, W]``."""
        if self.time_pad:
            x = F.pad(x, (0, 0, 0, 0, self.time_pad, 0), mode="replicate")
        return self.conv(x)


def _groups(channels: int) -> int:
    """GroupNorm groups: 8 when 8 divides the width (the usual VAE choice), else gcd(width, 8)."""
    return math.gcd(channels, 8)


class FrameGroupNorm(nn.GroupNorm):
    """GroupNorm over (C, H, W) of each frame separately: statistics over T would make frame t see the future."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        B, C, T, H, W = x.shape
        y = super().forward(x.transpose(1, 2).reshape(B * T, C, H, W))
        return y.reshape(B, T, C, H, W).transpose(1, 2)


class ResBlock(nn.Module):
    """``x + conv(SiLU(norm(conv(SiLU(norm(x))))))`` with causal convs; shape preserved."""

    def __init__(self, channels: int) -> None:
        super().__init__()
        self.norm1 = FrameGroupNorm(_groups(channels), channels)
        self.conv1 = CausalConv3d(channels, channels)
        self.norm2 = FrameGroupNorm(_groups(channels), channels)
        self.conv2 = CausalConv3d(channels, channels)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = self.conv1(F.silu(self.norm1(x)))
        return x + self.conv2(F.silu(self.norm2(h)))


class Down(nn.Module):
    """Strided conv, kernel ``(ft, 3, 3)`` stride ``(ft, fs, fs)``: each output frame sees one aligned frame group.

    Needs T divisible by ``ft`` (the encoder pads the clip once, up front) and even H, W when ``fs == 2``.
    """

    def __init__(self, channels: int, ft: int, fs: int) -> None:
        super().__init__()
        self.conv = nn.Conv3d(channels, channels, (ft, 3, 3), stride=(ft, fs, fs), padding=(0, 1, 1))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.conv(x)


class Up(nn.Module):
    """Nearest up-sampling by ``(ft, fs, fs)`` then a causal conv: frame ``t`` comes from input frame ``t // ft``."""

    def __init__(self, channels: int, ft: int, fs: int) -> None:
        super().__init__()
        self.factors = (ft, fs, fs)
        self.conv = CausalConv3d(channels, channels)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.conv(F.interpolate(x, scale_factor=self.factors, mode="nearest"))


class VideoVAE(nn.Module):
    """Causal video VAE; see the module docstring for the layout, the time rule and the presets."""

    def __init__(self, config: VideoVAEConfig = VideoVAEConfig()) -> None:
        super().__init__()
        self.config = config
        c, n = config.channels, config.blocks
        levels = config.levels
        self.enc_in = CausalConv3d(config.in_channels, c)
        self.enc_levels = nn.ModuleList(
            nn.ModuleList([*(ResBlock(c) for _ in range(n)), Down(c, ft, fs)]) for ft, fs in levels)
        self.enc_mid = nn.ModuleList(ResBlock(c) for _ in range(n))
        self.enc_norm = FrameGroupNorm(_groups(c), c)
        self.enc_out = CausalConv3d(c, 2 * config.latent_channels)

        self.dec_in = CausalConv3d(config.latent_channels, c)
        self.dec_mid = nn.ModuleList(ResBlock(c) for _ in range(n))
        self.dec_levels = nn.ModuleList(
            nn.ModuleList([Up(c, ft, fs), *(ResBlock(c) for _ in range(n))]) for ft, fs in reversed(levels))
        self.dec_norm = FrameGroupNorm(_groups(c), c)
        self.dec_out = CausalConv3d(c, config.in_channels)

    def param_count(self) -> int:
        """Return the number of parameters (all are trainable)."""
        return sum(p.numel() for p in self.parameters())

    def _run(self, layer: nn.Module, x: torch.Tensor) -> torch.Tensor:
        """Apply ``layer``; ResBlocks are checkpointed when configured and a backward pass will follow."""
        if (self.config.gradient_checkpointing and self.training and torch.is_grad_enabled()
                and isinstance(layer, ResBlock)):
            return checkpoint(layer, x, use_reentrant=False)
        return layer(x)

    def encode(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Return ``(mean, logvar)``, each ``[B, latent_channels, ceil(T/tc), H/sc, W/sc]``; logvar is clamped.

        ``x`` is ``[B, in_channels, T, H, W]`` in [-1, 1]; see the module docstring for the time rule.
        """
        cfg = self.config
        if x.ndim != 5 or x.shape[1] != cfg.in_channels:
            raise ValueError(f"VideoVAE.encode: x must be [B, {cfg.in_channels}, T, H, W], got {list(x.shape)}")
        T = x.shape[2]
        latent_shape(cfg, T, x.shape[3], x.shape[4])  # validates T, H, W with a clear message
        pad = -T % cfg.temporal_compression
        if pad:  # repeat the last frame at the end: keeps groups aligned to frame 0 and stays causal
            x = F.pad(x, (0, 0, 0, 0, 0, pad), mode="replicate")
        h = self.enc_in(x)
        for level in self.enc_levels:
            for layer in level:
                h = self._run(layer, h)
        for block in self.enc_mid:
            h = self._run(block, h)
        moments = self.enc_out(F.silu(self.enc_norm(h)))
        mean, logvar = moments.chunk(2, dim=1)
        return mean, logvar.clamp(LOGVAR_MIN, LOGVAR_MAX)

    def decode(self, z: torch.Tensor, num_frames: int | None = None) -> torch.Tensor:
        """Return ``x_hat [B, in_channels, T'*tc, H'*sc, W'*sc]`` for ``z [B, latent_channels, T', H', W']``.

        ``num_frames`` crops to the first ``num_frames`` frames (the original T of a clip whose T is not a
        multiple of tc); it must lie in ``((T'-1)*tc, T'*tc]``. The output is not clamped.
        """
        cfg = self.config
        if z.ndim != 5 or z.shape[1] != cfg.latent_channels:
            raise ValueError(f"VideoVAE.decode: z must be [B, {cfg.latent_channels}, T', H', W'], "
                             f"got {list(z.shape)}")
        full = z.shape[2] * cfg.temporal_compression
        if num_frames is not None and not full - cfg.temporal_compression < num_frames <= full:
            raise ValueError(f"VideoVAE.decode: num_frames={num_frames} does not fit {z.shape[2]} latent frames "
                             f"with temporal_compression={cfg.temporal_compression}; "
                             f"expected {full - cfg.temporal_compression + 1}..{full}")
        h = self.dec_in(z)
        for block in self.dec_mid:
            h = self._run(block, h)
        for level in self.dec_levels:
            for layer in level:
                h = self._run(layer, h)
        x_hat = self.dec_out(F.silu(self.dec_norm(h)))
        return x_hat if num_frames is None else x_hat[:, :, :num_frames]

    def forward(self, x: torch.Tensor, sample: bool = True,
                generator: torch.Generator | None = None) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """Return ``(x_hat, mean, logvar)``; ``x_hat`` has ``x``'s shape for any T >= 1.

        ``sample=True`` decodes ``mean + exp(logvar/2) * eps`` (training); ``sample=False`` decodes the mean.
        """
        mean, logvar = self.encode(x)
        z = reparameterize(mean, logvar, generator) if sample else mean
        return self.decode(z, num_frames=x.shape[2]), mean, logvar
