"""Video discriminators for adversarial post-training: a 3D PatchGAN and a whole-clip classifier.

Both take a video ``[B, 3, T, H, W]`` in [-1, 1] and return ``(logits, features)``: ``features`` is the
list of intermediate activations (after each LeakyReLU, coarsening in space) used for feature matching.
Every conv / linear layer is spectral-normalised (``torch.nn.utils.parametrizations.spectral_norm``, one power
iteration per training-mode forward), unless built with ``spectral=False``. No normalisation layers, so R1 is
well defined per sample.
"""
from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn
from torch.nn.utils.parametrizations import spectral_norm

LEAK = 0.2  # LeakyReLU slope, as in PatchGAN / StyleGAN


class PatchDiscriminator3D(nn.Module):
    """3D PatchGAN: one real/fake logit per space-time patch.

    Layers (k = kernel (t, h, w), s = stride, p = padding 1 everywhere), with ``kernel=4`` (pix2pix's layout):

    - ``n_down`` convs k(3,4,4) s(1,2,2): halve H and W, keep T; width doubles from ``channels``
      (capped at ``max_channels``);
    - one conv k(3,4,4) s1: H -> H - 1 (the PatchGAN stride-1 k4 layer);
    - logits conv k3 s1 -> 1 channel: keeps the shape.

    ``kernel=3`` uses k(3,3,3) throughout (the kernels cuDNN's tensor-core paths are tuned for; the k4 ones were
    the slow layers in the GPU profile), so the stride-1 layer keeps H. ``stem="space_to_depth"`` replaces the
    first strided conv's input by a 2x2 pixel-unshuffle (3 -> 12 channels at half size) and makes that conv
    stride 1: the 3-channel full-resolution layer, the other slow one, goes away. Both keep the number of layers
    and feature maps (feature matching unchanged). ``spectral=False`` drops the spectral norm of every layer (the
    StyleGAN / SeedVR2 way: the R1 / R2 penalties alone keep D smooth); with it on, D's logits move slowly under
    those penalties (benchmarks/apt_disc_probe.py).

    Output shape: ``[B, 3, T, H, W] -> [B, 1, T, H // 2**n_down - 1, W // 2**n_down - 1]`` with ``kernel=4``,
    ``[B, 1, T, H // 2**n_down, W // 2**n_down]`` with ``kernel=3``; e.g. ``[2, 3, 8, 64, 64] -> [2, 1, 8, 15, 15]``
    with the defaults. Needs ``H, W >= 2 * 2**n_down`` (even H, W with the space-to-depth stem). Time is not
    strided, so every frame gets its own logits.
    """

    def __init__(self, in_channels: int = 3, channels: int = 32, n_down: int = 2, max_channels: int = 256,
                 kernel: int = 4, stem: str = "conv", spectral: bool = True) -> None:
        super().__init__()
        norm = spectral_norm if spectral else (lambda layer: layer)
        if n_down < 1:
            raise ValueError(f"PatchDiscriminator3D: n_down must be >= 1, got {n_down}")
        if kernel not in (3, 4):
            raise ValueError(f"PatchDiscriminator3D: kernel must be 3 or 4, got {kernel}")
        if stem not in ("conv", "space_to_depth"):
            raise ValueError(f"PatchDiscriminator3D: stem must be 'conv' or 'space_to_depth', got {stem!r}")
        self.n_down, self.kernel, self.stem = n_down, kernel, stem
        k = (3, kernel, kernel)
        convs = []
        c_in, c_out = in_channels, channels
        for i in range(n_down):
            if i == 0 and stem == "space_to_depth":  # the unshuffle already halved H and W
                convs.append(norm(nn.Conv3d(4 * c_in, c_out, kernel_size=3, stride=1, padding=1)))
            else:
                convs.append(norm(nn.Conv3d(c_in, c_out, kernel_size=k, stride=(1, 2, 2), padding=1)))
            c_in, c_out = c_out, min(2 * c_out, max_channels)
        convs.append(norm(nn.Conv3d(c_in, c_out, kernel_size=k, stride=1, padding=1)))
        self.convs = nn.ModuleList(convs)
        self.to_logits = norm(nn.Conv3d(c_out, 1, kernel_size=3, padding=1))

    def output_shape(self, shape: tuple[int, ...] | torch.Size) -> tuple[int, ...]:
        """Return the logits shape ``(B, 1, T, H', W')`` for an input of shape ``(B, C, T, H, W)``."""
        B, _, T, H, W = shape
        trim = 1 if self.kernel == 4 else 0
        return (B, 1, T, H // 2**self.n_down - trim, W // 2**self.n_down - trim)

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, list[torch.Tensor]]:
        """Return ``(logits [B, 1, T, H', W'], features)``; see the class docstring for ``H'``, ``W'``."""
        if x.ndim != 5:
            raise ValueError(f"PatchDiscriminator3D: input must be [B, C, T, H, W], got {list(x.shape)}")
        min_hw = 2 * 2**self.n_down
        if min(x.shape[-2:]) < min_hw:
            raise ValueError(f"PatchDiscriminator3D: H and W must be >= {min_hw} for n_down={self.n_down}, "
                             f"got {list(x.shape[-2:])}; lower n_down or crop larger")
        if self.stem == "space_to_depth":
            if x.shape[-1] % 2 or x.shape[-2] % 2:
                raise ValueError(f"PatchDiscriminator3D: the space_to_depth stem needs even H and W, got "
                                 f"{list(x.shape[-2:])}; crop to an even size")
            B, C, T, H, W = x.shape  # [B, C, T, H, W] -> [B, 4C, T, H/2, W/2]
            x = F.pixel_unshuffle(x.transpose(1, 2).reshape(B * T, C, H, W), 2)
            x = x.reshape(B, T, 4 * C, H // 2, W // 2).transpose(1, 2)
        features = []
        for conv in self.convs:
            x = F.leaky_relu(conv(x), LEAK)  # [B, C_i, T, H / 2**i, W / 2**i]
            features.append(x)
        return self.to_logits(x), features


class VideoDiscriminator(nn.Module):
    """Whole-clip discriminator: one logit per video.

    ``n_down3d`` Conv3d k3 s2 p1 (halve T, H, W; rounding up) -> mean over time -> ``n_down2d`` Conv2d
    k3 s2 p1 -> global average pool -> Linear -> ``[B, 1]``. Works for any ``T, H, W >= 1``.
    """

    def __init__(self, in_channels: int = 3, channels: int = 32, n_down3d: int = 2, n_down2d: int = 2,
                 max_channels: int = 256, spectral: bool = True) -> None:
        super().__init__()
        norm = spectral_norm if spectral else (lambda layer: layer)
        convs3d, convs2d = [], []
        c_in, c_out = in_channels, channels
        for _ in range(n_down3d):
            convs3d.append(norm(nn.Conv3d(c_in, c_out, kernel_size=3, stride=2, padding=1)))
            c_in, c_out = c_out, min(2 * c_out, max_channels)
        for _ in range(n_down2d):
            convs2d.append(norm(nn.Conv2d(c_in, c_out, kernel_size=3, stride=2, padding=1)))
            c_in, c_out = c_out, min(2 * c_out, max_channels)
        self.convs3d = nn.ModuleList(convs3d)
        self.convs2d = nn.ModuleList(convs2d)
        self.to_logits = norm(nn.Linear(c_in, 1))

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, list[torch.Tensor]]:
        """Return ``(logits [B, 1], features)``: features are the 3D then the 2D activations."""
        if x.ndim != 5:
            raise ValueError(f"VideoDiscriminator: input must be [B, C, T, H, W], got {list(x.shape)}")
        features = []
        for conv in self.convs3d:
            x = F.leaky_relu(conv(x), LEAK)  # [B, C_i, T_i, H_i, W_i]
            features.append(x)
        x = x.mean(dim=2)  # [B, C, H', W']: reduce time
        for conv in self.convs2d:
            x = F.leaky_relu(conv(x), LEAK)  # [B, C_j, H_j, W_j]
            features.append(x)
        return self.to_logits(x.mean(dim=(2, 3))), features  # [B, 1]
