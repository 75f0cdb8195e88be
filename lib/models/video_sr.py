"""One-step video super-resolution generator (the G of SeedVR2-style adversarial post-training).

LQ video ``[B, 3, T, h, w]`` in [-1, 1] -> HQ video ``[B, 3, T, h*scale, w*scale]``, in one forward pass:

  lq ──► Conv3d ──► ResBlock3D × blocks ──► Conv3d ──(+ head skip)──► per-frame Conv2d ► PixelShuffle ► Conv2d ──┐
   └──────────────────────────────────────── per-frame bicubic upsample ───────────────────────────────────────(+)──► hq

The last conv is zero-initialised, so an untrained model returns exactly the bicubic upsampling of its
input and training only has to learn a residual. The output is not clamped (bicubic overshoots a little
beyond [-1, 1]); clamp when writing frames, not inside the loss.

Presets (param counts from :meth:`VideoSRGenerator.param_count`, ``text_dim=0``):

- ``VideoSRConfig()`` — channels 32, blocks 4: 400,579 params, trains on 2 CPU cores in minutes.
- ``GPU_PRESET = VideoSRConfig(channels=128, blocks=16)``: 16,977,667 params (~17 M), for a single GPU.
  With ``text_dim=384`` (MiniLM embeddings) FiLM adds ``blocks * (384 + 1) * 2 * channels`` params.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Annotated

import torch
import torch.nn.functional as F
from annotated_types import Ge
from torch import nn

from lib.config import Checked


@dataclass(frozen=True)
class VideoSRConfig(Checked):
    """Generator shape: upscaling factor, trunk width and depth, and text-embedding size (0 = no text)."""

    scale: Annotated[int, Ge(1)] = 4  # spatial upscaling factor; time is not upsampled
    channels: Annotated[int, Ge(1)] = 32  # trunk width
    blocks: Annotated[int, Ge(0)] = 4  # residual blocks in the trunk
    text_dim: Annotated[int, Ge(0)] = 0  # size of the text embedding fed to FiLM; 0 disables text conditioning


GPU_PRESET = VideoSRConfig(channels=128, blocks=16)


class ResBlock3D(nn.Module):
    """``x + Conv3d(FiLM(SiLU(Conv3d(x))))``; FiLM (per-channel scale/shift from text) only when ``text_dim > 0``."""

    def __init__(self, channels: int, text_dim: int = 0) -> None:
        super().__init__()
        self.conv1 = nn.Conv3d(channels, channels, kernel_size=3, padding=1)
        self.conv2 = nn.Conv3d(channels, channels, kernel_size=3, padding=1)
        self.film = nn.Linear(text_dim, 2 * channels) if text_dim > 0 else None
        if self.film is not None:  # zero-init: text starts as a no-op (scale 1, shift 0)
            nn.init.zeros_(self.film.weight)
            nn.init.zeros_(self.film.bias)

    def forward(self, x: torch.Tensor, text: torch.Tensor | None = None) -> torch.Tensor:
        """Return the block output, same shape as ``x`` ``[B, C, T, h, w]``; ``text`` is ``[B, text_dim]`` or None."""
        h = F.silu(self.conv1(x))
        if self.film is not None and text is not None:
            scale, shift = self.film(text).chunk(2, dim=1)  # each [B, C]
            h = h * (1 + scale[:, :, None, None, None]) + shift[:, :, None, None, None]
        return x + self.conv2(h)


class VideoSRGenerator(nn.Module):
    """One-step LQ -> HQ video super-resolution; see the module docstring for the layout and presets."""

    def __init__(self, config: VideoSRConfig = VideoSRConfig()) -> None:
        super().__init__()
        self.config = config
        c, s = config.channels, config.scale
        self.head = nn.Conv3d(3, c, kernel_size=3, padding=1)
        self.blocks = nn.ModuleList(ResBlock3D(c, config.text_dim) for _ in range(config.blocks))
        self.body = nn.Conv3d(c, c, kernel_size=3, padding=1)
        self.up = nn.Conv2d(c, c * s * s, kernel_size=3, padding=1)
        self.shuffle = nn.PixelShuffle(s)
        self.tail = nn.Conv2d(c, 3, kernel_size=3, padding=1)
        nn.init.zeros_(self.tail.weight)  # untrained model == bicubic upsampling
        nn.init.zeros_(self.tail.bias)

    def param_count(self) -> int:
        """Return the number of parameters (all are trainable)."""
        return sum(p.numel() for p in self.parameters())

    def forward(self, lq: torch.Tensor, text: torch.Tensor | None = None) -> torch.Tensor:
        """Return the HQ video ``[B, 3, T, h*scale, w*scale]`` for ``lq`` ``[B, 3, T, h, w]`` in [-1, 1].

        ``text`` is an optional ``[B, text_dim]`` embedding; passing one to a model built with
        ``text_dim=0`` raises, so a misconfigured run fails instead of silently ignoring its prompts.
        """
        if lq.ndim != 5 or lq.shape[1] != 3:
            raise ValueError(f"VideoSRGenerator: lq must be [B, 3, T, h, w], got {list(lq.shape)}")
        if text is not None:
            if self.config.text_dim == 0:
                raise ValueError("VideoSRGenerator: got text but VideoSRConfig.text_dim is 0; "
                                 "set text_dim to the embedding size or pass text=None")
            if text.shape != (lq.shape[0], self.config.text_dim):
                raise ValueError(f"VideoSRGenerator: text must be [B, text_dim] = "
                                 f"{[lq.shape[0], self.config.text_dim]}, got {list(text.shape)}")
        B, _, T, h, w = lq.shape
        s = self.config.scale

        feat = self.head(lq)  # [B, C, T, h, w]
        x = feat
        for block in self.blocks:
            x = block(x, text)
        x = self.body(x) + feat  # [B, C, T, h, w]

        # per frame in 2D: [B, C, T, h, w] -> [B*T, C, h, w]
        x = x.transpose(1, 2).reshape(B * T, -1, h, w)
        x = self.shuffle(self.up(x))  # [B*T, C, h*s, w*s]
        residual = self.tail(F.silu(x))  # [B*T, 3, h*s, w*s]
        frames = lq.transpose(1, 2).reshape(B * T, 3, h, w)
        base = F.interpolate(frames, scale_factor=s, mode="bicubic", align_corners=False)  # [B*T, 3, h*s, w*s]
        out = base + residual
        return out.reshape(B, T, 3, h * s, w * s).transpose(1, 2)  # [B, 3, T, h*s, w*s]
