"""Causal 3D-convolution video VAE: ``[B, C, T, H, W]`` in [-1, 1] <-> a diagonal-Gaussian latent.

Layout (``L = max(log2 tc, log2 sc)`` levels; level ``i`` halves time while ``i < log2 tc`` and
halves H, W while ``i < log2 sc``, so time is compressed in the first, widest-resolution levels)::

    encoder: CConv ► [ResBlock × blocks ► Down] × L ► ResBlock × blocks ► Norm/SiLU ► CConv ► (mean, logvar)
    decoder: CConv ► ResBlock × blocks ► [Up ► ResBlock × blocks] × L ► Norm/SiLU ► CConv ► x_hat

(CConv = :class:`CausalConv3d`, kernel 3.)

``shortcuts`` adds DC-AE's residual autoencoding (Chen et al., "Deep Compression Autoencoder", 2024) on every
resolution change: Down adds its input rearranged time/space-to-channel and averaged to its width, Up adds its
input repeated and rearranged channel-to-space, the latent mean adds the trunk averaged to ``latent_channels`` and
the decoder's first conv adds the latent repeated to the trunk width. The shortcuts have no parameters, so the
layers learn a residual over a fixed down/up-sampling instead of the whole mapping, which trains faster at high
compression (``reports/benchmarks/vae_shortcuts.md``). They respect the time rule: a Down shortcut reads only its
aligned frame group, an Up shortcut gives frame ``t`` from latent ``t // ft``.

By default every level has the same width ``channels``: that keeps the default at a few hundred k parameters,
which is what 2 CPU cores can train in minutes. ``level_channels`` narrows the full-resolution levels, where
nearly all activation memory is at 1024 px (the GPU preset), and keeps the width where the maps are small.

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
- ``GPU_PRESET`` — levels 64/128/128 wide, middle 128, latent 16, tc 4, sc 8, blocks 2, gradient checkpointing:
  13,385,635 params.
"""
from __future__ import annotations

import functools
import math
from collections.abc import Callable
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


# CUDA kernels index with 32 bits: cuDNN's convolution refuses a sample of 2**31 - 1 elements or more ("input
# tensor must fit into 32-bit index math"; it only splits the batch), as do the replication-pad kernels. At 1024 px
# and 49 frames one 64-wide full-resolution sample is 3.4e9 elements, so convolutions run in time chunks below it
# (exact: each chunk reads its own look-back) and padding repeats frames by concatenation. A setting for tests.
MAX_KERNEL_ELEMENTS = 2**31 - 1
# The shortcuts' full-resolution terms are built this many values at a time (whole frame groups) and added into
# the conv's output: built whole, each Up's shortcut (a repeat, then a pixel shuffle: two copies) and its sum were
# three extra full-resolution tensors, and at 1024 px/49 frames they took the step from a 59.6 GiB peak to out of
# memory on an 80 GB H100 (reports/benchmarks/vae_gpu.md). A setting for tests.
SHORTCUT_PIECE_ELEMENTS = 2**26


def _shortcut_frames(per_frame: int) -> int:
    """Frames (of the low-resolution side) per piece of a shortcut whose one frame has ``per_frame`` values."""
    return max(1, SHORTCUT_PIECE_ELEMENTS // per_frame)


def repeat_frames(x: torch.Tensor, before: int = 0, after: int = 0) -> torch.Tensor:
    """Pad time by repeating the first frame ``before`` times and the last ``after`` times: ``F.pad(mode=
    "replicate")`` on the time axis, values and gradients, without its 32-bit index limit."""
    parts = [x[:, :, :1].expand(-1, -1, before, -1, -1)] if before else []
    parts.append(x)
    if after:
        parts.append(x[:, :, -1:].expand(-1, -1, after, -1, -1))
    return torch.cat(parts, dim=2) if len(parts) > 1 else x


def _frames_per_call(x: torch.Tensor, out_channels: int, extra_in: int = 0, stride_t: int = 1) -> int:
    """Output frames one convolution call may make so that neither one sample of its input (``stride_t`` input
    frames per output frame plus ``extra_in`` look-back frames) nor of its output reaches the 32-bit limit."""
    _, c, _, h, w = x.shape
    per_in, per_out = c * h * w, out_channels * h * w  # the output's H, W are no larger than the input's
    n_in = (MAX_KERNEL_ELEMENTS - 1) // per_in - extra_in
    return max(1, min(n_in // stride_t, (MAX_KERNEL_ELEMENTS - 1) // per_out))


def space_to_channel(x: torch.Tensor, ft: int, fs: int) -> torch.Tensor:
    """``[B, C, T, H, W] -> [B, C*ft*fs*fs, T/ft, H/fs, W/fs]``: each ``ft x fs x fs`` block's values become
    channels, channel ``c`` first, then time, row, column offset (pixel-unshuffle in 3-D)."""
    B, C, T, H, W = x.shape
    x = x.reshape(B, C, T // ft, ft, H // fs, fs, W // fs, fs)
    return x.permute(0, 1, 3, 5, 7, 2, 4, 6).reshape(B, C * ft * fs * fs, T // ft, H // fs, W // fs)


def channel_to_space(x: torch.Tensor, ft: int, fs: int) -> torch.Tensor:
    """The inverse of :func:`space_to_channel`: ``[B, C*ft*fs*fs, T, H, W] -> [B, C, T*ft, H*fs, W*fs]``."""
    B, C, T, H, W = x.shape
    c = C // (ft * fs * fs)
    x = x.reshape(B, c, ft, fs, fs, T, H, W)
    return x.permute(0, 1, 5, 2, 6, 3, 7, 4).reshape(B, c, T * ft, H * fs, W * fs)


def average_channels(x: torch.Tensor, channels: int) -> torch.Tensor:
    """Mean of each group of ``C / channels`` consecutive channels: ``[B, C, ...] -> [B, channels, ...]``."""
    return x.unflatten(1, (channels, x.shape[1] // channels)).mean(2)


def repeat_channels(x: torch.Tensor, channels: int) -> torch.Tensor:
    """Each channel repeated ``channels / C`` times in place: ``[B, C, ...] -> [B, channels, ...]``."""
    return x.repeat_interleave(channels // x.shape[1], dim=1)


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
    # width of each level, encoder order (level 0 at full resolution); () = ``channels`` everywhere. The middle
    # is always ``channels``. Narrow early levels are where a high resolution's activation memory goes.
    level_channels: tuple[Annotated[int, Ge(1)], ...] = ()
    # with gradient_checkpointing: recompute each ResBlock in chunks of this many frames (plus the frames its
    # causal convs look back on), so backward holds one chunk's inner tensors, not the clip's; exact. null: whole
    checkpoint_chunk_frames: Annotated[int, Ge(1)] | None = None
    # with gradient_checkpointing: the first N encoder levels (with the input conv) and the last N decoder levels
    # (with the output head) also run as one checkpointed segment each, their layers checkpointed inside it, so
    # between forward and backward only a level's input is kept, not its layers' full-resolution inputs (the
    # floor of memory at 1024 px); each such level's forward runs once more. Exact. 0: layers only
    checkpoint_levels: Annotated[int, Ge(0)] = 0
    # DC-AE's parameter-free shortcuts around every Down/Up and the latent (module docstring); changes what the
    # weights mean, not their shapes. Needs each level's width x its block size divisible by the next level's,
    # and channels divisible by latent_channels.
    shortcuts: bool = False

    def __post_init__(self) -> None:
        super().__post_init__()
        if self.shortcuts:
            w = self.widths
            for i, (ft, fs) in enumerate(self.levels):
                if (w[i] * ft * fs * fs) % w[i + 1]:
                    raise ValueError(f"shortcuts: level {i} is {w[i]} wide with a {ft}x{fs}x{fs} block, so its "
                                     f"{w[i] * ft * fs * fs} rearranged channels do not average to the next "
                                     f"width {w[i + 1]}; choose level_channels that divide, or shortcuts: false")
            if self.channels % self.latent_channels:
                raise ValueError(f"shortcuts: channels {self.channels} is not a multiple of latent_channels "
                                 f"{self.latent_channels}; choose ones that divide, or shortcuts: false")
        if self.checkpoint_levels > len(self.levels):
            raise ValueError(f"checkpoint_levels: {self.checkpoint_levels} is more than the {len(self.levels)} "
                             f"levels (temporal_compression={self.temporal_compression}, spatial_compression="
                             f"{self.spatial_compression}); use 0..{len(self.levels)}")
        if self.level_channels and len(self.level_channels) != len(self.levels):
            raise ValueError(f"level_channels: one width per level ({len(self.levels)} levels for "
                             f"temporal_compression={self.temporal_compression}, spatial_compression="
                             f"{self.spatial_compression}), got {list(self.level_channels)}; or [] for channels "
                             f"everywhere")

    @property
    def widths(self) -> list[int]:
        """Width of each level then of the middle: ``level_channels + [channels]`` (all ``channels`` by default)."""
        return [*(self.level_channels or [self.channels] * len(self.levels)), self.channels]

    @property
    def levels(self) -> list[tuple[int, int]]:
        """Per level ``(time_factor, space_factor)``, each 1 or 2, encoder order."""
        lt, ls = int(math.log2(self.temporal_compression)), int(math.log2(self.spatial_compression))
        return [(2 if i < lt else 1, 2 if i < ls else 1) for i in range(max(lt, ls))]


# Levels 0-2 (full, 1/2, 1/4 resolution) at 64/128/128 wide, the middle at 128: at 1024 px x 49 frames a
# full-resolution activation is 6.6 GB in bf16 at width 64, so the full-resolution levels decide the memory;
# ResBlocks and heads recomputed 8 frames at a time (see benchmarks/estimate_vae_memory.py for what each buys).
GPU_PRESET = VideoVAEConfig(channels=128, latent_channels=16, temporal_compression=4, spatial_compression=8,
                            blocks=2, gradient_checkpointing=True, level_channels=(64, 128, 128),
                            checkpoint_chunk_frames=8, shortcuts=True)


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

    Streaming (inference in temporal chunks, see :mod:`lib.models.video_vae_inference`): with ``streaming`` on,
    the first chunk is padded as above and every later chunk is prefixed by the last ``kernel_t - 1`` frames of
    the previous chunk's padded input instead, so chunk-by-chunk output equals the output on the whole clip.
    """

    def __init__(self, in_channels: int, out_channels: int, kernel_size: int | tuple[int, int, int] = 3) -> None:
        super().__init__()
        kt, kh, kw = (kernel_size,) * 3 if isinstance(kernel_size, int) else kernel_size
        if kh % 2 == 0 or kw % 2 == 0:
            raise ValueError(f"CausalConv3d: spatial kernel must be odd for symmetric padding, got {(kh, kw)}")
        self.time_pad = kt - 1
        self.conv = nn.Conv3d(in_channels, out_channels, (kt, kh, kw), padding=(0, kh // 2, kw // 2))
        self.streaming = False
        self._cache: torch.Tensor | None = None  # [B, C_in, time_pad, H, W]: the previous chunk's last frames

    def set_streaming(self, on: bool) -> None:
        """Switch streaming on or off; either way the cache is dropped, so the next call starts a new clip."""
        self.streaming, self._cache = on, None

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """``[B, C_in, T, H, W] -> [B, C_out, T, H, W]``."""
        p = self.time_pad
        if not p:
            return self.conv(x)
        if self.streaming and self._cache is not None:
            if self._cache.shape[:2] != x.shape[:2] or self._cache.shape[3:] != x.shape[3:]:
                raise RuntimeError(f"CausalConv3d: streaming chunk {list(x.shape)} does not continue the "
                                   f"previous chunk (cache {list(self._cache.shape)}); start a new stream "
                                   f"for a new clip or tile")
            prefix = self._cache
        else:
            prefix = x[:, :, :1].expand(-1, -1, p, -1, -1)  # the first frame, repeated: "before the clip"
        if self.streaming:  # the padded input's last p frames (chunks shorter than p reach into the prefix)
            self._cache = (x[:, :, -p:] if x.shape[2] >= p else torch.cat([prefix, x], dim=2)[:, :, -p:]).detach()
        n = _frames_per_call(x, self.conv.out_channels, extra_in=p)
        if x.shape[2] <= n:
            return self.conv(torch.cat([prefix, x], dim=2))
        outs = []  # output frames [t0, t0 + n) read padded frames [t0, t0 + n + p): x[t0 - p, t0 + n), prefix before
        for t0 in range(0, x.shape[2], n):
            window = x[:, :, max(0, t0 - p):t0 + n]
            if t0 < p:
                window = torch.cat([prefix[:, :, t0:], window], dim=2)
            outs.append(self.conv(window))
        return torch.cat(outs, dim=2)


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


def _checkpoint_in_time_chunks(layer: Callable[[torch.Tensor], torch.Tensor], x: torch.Tensor, chunk: int,
                               halo: int) -> torch.Tensor:
    """``layer(x)`` computed ``chunk`` output frames at a time, each chunk checkpointed on its own.

    For a per-frame (FrameGroupNorm), causal, time-preserving layer (a ResBlock, an output head), output frames
    ``[t0, t1)`` depend only on input frames ``[t0 - halo, t1)``, ``halo`` being how far its causal convs look
    back: each chunk runs on that window and keeps frames from ``t0`` on, where the window's own first-frame
    padding no longer reaches. Each checkpoint keeps a view of ``x``, and the recompute in backward holds one
    chunk's inner tensors: exact, with a fraction of the transient memory.
    """
    outs = []
    for t0 in range(0, x.shape[2], chunk):
        start = max(0, t0 - halo)
        out = checkpoint(layer, x[:, :, start:t0 + chunk], use_reentrant=False)
        outs.append(out[:, :, t0 - start:])
    return torch.cat(outs, dim=2)


class Down(nn.Module):
    """Strided conv, kernel ``(ft, 3, 3)`` stride ``(ft, fs, fs)``: each output frame sees one aligned frame group.

    Needs T divisible by ``ft`` (the encoder pads the clip once, up front) and even H, W when ``fs == 2``.
    """

    def __init__(self, channels: int, ft: int, fs: int, out_channels: int | None = None,
                 shortcut: bool = False) -> None:
        super().__init__()
        self.conv = nn.Conv3d(channels, out_channels or channels, (ft, 3, 3), stride=(ft, fs, fs), padding=(0, 1, 1))
        self.shortcut = shortcut

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        ft, fs = self.conv.stride[0], self.conv.stride[1]
        n = _frames_per_call(x, self.conv.out_channels, stride_t=ft)
        if x.shape[2] <= n * ft:
            y = self.conv(x)
        else:  # output frame j reads input frames [j*ft, (j+1)*ft) only: chunks of whole groups are exact
            y = torch.cat([self.conv(x[:, :, t0:t0 + n * ft]) for t0 in range(0, x.shape[2], n * ft)], dim=2)
        if self.shortcut:  # in pieces of whole frame groups: space_to_channel copies its input
            n = _shortcut_frames(x.shape[1] * ft * x.shape[3] * x.shape[4])
            parts = [average_channels(space_to_channel(x[:, :, j * ft:(j + n) * ft], ft, fs), self.conv.out_channels)
                     for j in range(0, y.shape[2], n)]
            y = y + (parts[0] if len(parts) == 1 else torch.cat(parts, dim=2))
        return y


def upsample_nearest(x: torch.Tensor, factors: tuple[int, int, int]) -> torch.Tensor:
    """``F.interpolate(x, scale_factor=factors, mode="nearest")`` for integer factors (values and gradients), as
    a broadcast copy, which indexes with 64 bits where the interpolation kernel may not."""
    B, C, T, H, W = x.shape
    ft, fh, fw = factors
    return (x[:, :, :, None, :, None, :, None].expand(B, C, T, ft, H, fh, W, fw)
            .reshape(B, C, T * ft, H * fh, W * fw))


class Up(nn.Module):
    """Nearest up-sampling by ``(ft, fs, fs)`` then a causal conv: frame ``t`` comes from input frame ``t // ft``.

    Narrowing to ``out_channels`` happens first, by a 1x1x1 conv at the low resolution, so the up-sampled map (a
    high-resolution tensor the conv keeps for backward) has the narrow width, not the wide one.
    """

    def __init__(self, channels: int, ft: int, fs: int, out_channels: int | None = None,
                 shortcut: bool = False) -> None:
        super().__init__()
        out = out_channels or channels
        self.factors = (ft, fs, fs)
        self.proj = nn.Conv3d(channels, out, 1) if out != channels else None
        self.conv = CausalConv3d(out, out)
        self.shortcut = shortcut

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = self.conv(upsample_nearest(self.proj(x) if self.proj is not None else x, self.factors))
        if self.shortcut:  # into y piece by piece (SHORTCUT_PIECE_ELEMENTS); the conv's backward does not need y
            ft, fs, _ = self.factors
            wide = self.conv.conv.out_channels * ft * fs * fs
            n = _shortcut_frames(wide * x.shape[3] * x.shape[4])
            for t0 in range(0, x.shape[2], n):
                y[:, :, t0 * ft:(t0 + n) * ft] += channel_to_space(repeat_channels(x[:, :, t0:t0 + n], wide), ft, fs)
        return y


class VideoVAE(nn.Module):
    """Causal video VAE; see the module docstring for the layout, the time rule and the presets."""

    def __init__(self, config: VideoVAEConfig = VideoVAEConfig()) -> None:
        super().__init__()
        self.config = config
        c, n, w = config.channels, config.blocks, config.widths  # w[i]: level i's width, w[-1] == c (middle)
        levels = config.levels
        self.enc_in = CausalConv3d(config.in_channels, w[0])
        self.enc_levels = nn.ModuleList(
            nn.ModuleList([*(ResBlock(w[i]) for _ in range(n)), Down(w[i], ft, fs, w[i + 1], config.shortcuts)])
            for i, (ft, fs) in enumerate(levels))
        self.enc_mid = nn.ModuleList(ResBlock(c) for _ in range(n))
        self.enc_norm = FrameGroupNorm(_groups(c), c)
        self.enc_out = CausalConv3d(c, 2 * config.latent_channels)

        self.dec_in = CausalConv3d(config.latent_channels, c)
        self.dec_mid = nn.ModuleList(ResBlock(c) for _ in range(n))
        self.dec_levels = nn.ModuleList(
            nn.ModuleList([Up(w[i + 1], ft, fs, w[i], config.shortcuts), *(ResBlock(w[i]) for _ in range(n))])
            for i, (ft, fs) in reversed(list(enumerate(levels))))
        self.dec_norm = FrameGroupNorm(_groups(w[0]), w[0])
        self.dec_out = CausalConv3d(w[0], config.in_channels)
        # a run-time setting, not part of the weights: a curriculum phase may change it (PhaseConfig)
        self.checkpoint_levels = config.checkpoint_levels

    def param_count(self) -> int:
        """Return the number of parameters (all are trainable)."""
        return sum(p.numel() for p in self.parameters())

    def _checkpointing(self) -> bool:
        return self.config.gradient_checkpointing and self.training and torch.is_grad_enabled()

    def _segments(self) -> int:
        """Levels run as whole checkpointed segments now (``checkpoint_levels`` while checkpointing, else 0)."""
        return min(self.checkpoint_levels, len(self.enc_levels)) if self._checkpointing() else 0

    def _enc_level(self, i: int, h: torch.Tensor) -> torch.Tensor:
        if i == 0:
            h = self.enc_in(h)
        for layer in self.enc_levels[i]:
            h = self._run(layer, h)
        return h

    def _dec_level(self, j: int, h: torch.Tensor) -> torch.Tensor:
        for layer in self.dec_levels[j]:
            h = self._run(layer, h)
        return self._run(self._dec_head, h) if j == len(self.dec_levels) - 1 else h

    def _run(self, layer: Callable[[torch.Tensor], torch.Tensor], x: torch.Tensor) -> torch.Tensor:
        """Apply ``layer``, checkpointed when configured and a backward pass will follow.

        Checkpointed: ResBlocks, Up and the output heads, each a segment whose inner tensors are larger than its
        input (Up keeps its up-sampled map, a head its norm and SiLU outputs in fp32 under autocast), so only the
        input is kept. Down and the input conv are not: a one-conv segment would keep the same input anyway.
        """
        if self._checkpointing() and not isinstance(layer, Down):
            chunk, halo = self.config.checkpoint_chunk_frames, self._look_back(layer)
            if halo is not None and chunk is not None and x.shape[2] > chunk:
                return _checkpoint_in_time_chunks(layer, x, chunk, halo)
            return checkpoint(layer, x, use_reentrant=False)
        return layer(x)

    def _look_back(self, layer: Callable[[torch.Tensor], torch.Tensor]) -> int | None:
        """Frames before its first output frame that a per-frame, causal, time-preserving ``layer`` reads (a
        ResBlock: its two convs'; an output head: its conv's); None for a layer that changes the frame count."""
        if isinstance(layer, ResBlock):
            return layer.conv1.time_pad + layer.conv2.time_pad
        if layer == self._enc_head:
            return self.enc_out.time_pad
        if layer == self._dec_head:
            return self.dec_out.time_pad
        return None

    def _enc_head(self, h: torch.Tensor) -> torch.Tensor:
        moments = self.enc_out(F.silu(self.enc_norm(h)))
        if not self.config.shortcuts:
            return moments
        latent = self.config.latent_channels  # the shortcut feeds the mean only; logvar stays the conv's
        return torch.cat([moments[:, :latent] + average_channels(h, latent), moments[:, latent:]], dim=1)

    def _dec_head(self, h: torch.Tensor) -> torch.Tensor:
        return self.dec_out(F.silu(self.dec_norm(h)))

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
            x = repeat_frames(x, after=pad)
        segments = self._segments()
        h = x if self.enc_levels else self.enc_in(x)
        for i in range(len(self.enc_levels)):
            h = (checkpoint(functools.partial(self._enc_level, i), h, use_reentrant=False) if i < segments
                 else self._enc_level(i, h))
        for block in self.enc_mid:
            h = self._run(block, h)
        moments = self._run(self._enc_head, h)
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
        if cfg.shortcuts:  # in the conv's dtype: under CUDA autocast z is fp32 (exp() runs in fp32), and an fp32
            # sum here made the whole decoder's residual stream fp32, twice the memory of the bf16 one without shortcuts
            h = h + repeat_channels(z, cfg.channels).to(h.dtype)
        for block in self.dec_mid:
            h = self._run(block, h)
        levels, segments = len(self.dec_levels), self._segments()
        for j in range(levels):  # the last level also runs the output head
            h = (checkpoint(functools.partial(self._dec_level, j), h, use_reentrant=False) if j >= levels - segments
                 else self._dec_level(j, h))
        x_hat = h if levels else self._run(self._dec_head, h)
        return x_hat if num_frames is None else x_hat[:, :, :num_frames]

    def forward(self, x: torch.Tensor, sample: bool = True, generator: torch.Generator | None = None,
                eps: torch.Tensor | None = None) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """Return ``(x_hat, mean, logvar)``; ``x_hat`` has ``x``'s shape for any T >= 1.

        ``sample=True`` decodes ``mean + exp(logvar/2) * eps`` (training), with ``eps`` drawn from ``generator``
        or given (the slice of a whole batch's noise, so a micro-batch sees what it would in the batch);
        ``sample=False`` decodes the mean.
        """
        mean, logvar = self.encode(x)
        if sample and eps is not None:
            z = mean + torch.exp(0.5 * logvar) * eps.to(mean.dtype)
        else:
            z = reparameterize(mean, logvar, generator) if sample else mean
        return self.decode(z, num_frames=x.shape[2]), mean, logvar
