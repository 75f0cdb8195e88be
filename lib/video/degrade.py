"""Synthetic LQ clips for super-resolution training, two degradation models (``DegradeConfig.kind``).

The APT super-resolution trainer gets HQ clips ``[B, 3, T, H, W]`` from the video loader and
builds its LQ inputs here. Every clip of a batch draws its own parameters; all frames of one clip
share them, so a clip degrades like one badly encoded video rather than flickering frame to frame.

* ``kind: simple`` (the default; this module): Gaussian blur -> antialiased bicubic downsample ->
  Gaussian noise -> JPEG -> clamp, each step with its own probability and range (``blur_sigma``,
  ``noise_sigma``, ``jpeg_quality``, ``p_*``). Its ranges are this project's own (mild), not a
  published model's.
* ``kind: realesrgan_video`` (:mod:`lib.video.degrade_realesrgan`): Real-ESRGAN's second-order chain
  (Wang et al. 2021; ranges: ``options/train_realesrgan_x4plus.yml`` and ``basicsr/data/degradations.py``,
  set under ``realesrgan:``) -- two rounds of random blur kernel (Gaussian, anisotropic, generalized,
  plateau, sinc), random resize, Gaussian/Poisson colour/grey noise and JPEG, then the final resize
  to ``H/scale x W/scale`` with a sinc filter in random order with the last JPEG -- followed by a
  video-codec round trip (libx264 / libvpx-vp9 through PyAV at a random bitrate, after RealBasicVSR).
  Parameters are drawn once per clip; noise is drawn per frame. Only ``scale`` of the ``simple``
  keys applies to it. See that module's docstring for the details and the deviations from the paper.

The rest of this docstring describes ``simple``; the conventions (values, devices, determinism)
hold for both kinds.

Value conventions (chosen by dtype, and the output uses the input's convention):

* floating point tensors hold values in ``[-1, 1]`` (the loader's normalised clips);
* ``torch.uint8`` tensors hold values in ``[0, 255]``.

Internally everything works on float "unit" intensities in ``[0, 1]`` (:func:`to_unit` /
:func:`from_unit`), and **``noise_sigma`` is in those unit terms**: a fraction of the full intensity
range. ``noise_sigma=0.02`` is about 5 grey levels of 8-bit video, or a standard deviation of 0.04
in ``[-1, 1]`` tensor units.

Determinism: all randomness comes from the ``torch.Generator`` passed in, drawn clip by clip in a
fixed order (6 uniforms for the parameters, then the clip's noise; ``realesrgan_video``: its
``DRAWS_PER_CLIP`` uniforms, then the noise of its two stages; its codec step is single-threaded and
bit-exact). The same seed therefore gives
bit-identical LQ for the same clips in the same order, and splitting a batch into smaller batches
(same order, same generator) gives the same LQ too. Use :func:`validation_generator` for the
held-out set. The generator may live on another device than the clips (a CPU generator with CUDA
clips draws the noise on the CPU and copies it over: slower, but the same numbers as a CPU run).

CUDA: blur, resize and noise stay on the clips' device. JPEG has no GPU path here: each compressed
clip is quantised to uint8, copied to the CPU, encoded and decoded frame by frame with PIL (libjpeg)
and copied back. At LQ size this is cheap in absolute terms (~0.3 ms per 64x64 frame on one
core: ~10 ms of the ~58 ms a [4, 3, 8, 256, 256] batch takes on a 2-core CPU), but it is a host
sync and a device->host->device round trip per compressed clip, so on a GPU it is usually the
slowest step; set ``compression="none"`` or lower ``p_compress`` if it shows up in the trainer's
profile, or run :func:`degrade` in the data-loader workers on CPU instead.
"""

from __future__ import annotations

import dataclasses
import io
import math
from dataclasses import dataclass, field
from typing import Annotated, Any, Literal

import numpy as np
import torch
import torch.nn.functional as F
from annotated_types import Ge, Interval
from PIL import Image

from lib.config import Checked
from lib.video.degrade_realesrgan import RealESRGANConfig, VideoDegradeParams
from lib.video.degrade_realesrgan import degrade_clip as _realesrgan_clip

_DRAWS_PER_CLIP = 6  # u_blur, blur_sigma, u_noise, noise_sigma, u_compress, jpeg_quality

Sigma = Annotated[float, Ge(0)]
Quality = Annotated[int, Interval(ge=1, le=100)]
Probability = Annotated[float, Interval(ge=0, le=1)]


@dataclass(frozen=True)
class DegradeConfig(Checked):
    """How HQ clips are degraded into LQ ones (a ``params.yaml`` section via ``lib.config.from_dict``).

    ``scale``: integer downsampling factor (H and W of the clips must be divisible by it).
    ``blur_sigma``: Gaussian blur sigma range in HQ pixels, drawn uniformly per clip.
    ``noise_sigma``: additive Gaussian noise std range in unit intensities ([0, 1] range, see the
    module docstring), drawn uniformly per clip; independent per pixel and channel.
    ``jpeg_quality``: inclusive PIL JPEG quality range (1..100), drawn uniformly per clip.
    ``compression``: ``"jpeg"`` or ``"none"`` (no compression step at all).
    ``p_blur`` / ``p_noise`` / ``p_compress``: probability that a clip gets that step.
    ``kind``: ``"simple"`` (the keys above) or ``"realesrgan_video"`` (Real-ESRGAN's second-order chain and
    a video codec, ranges in ``realesrgan``, a :class:`~lib.video.degrade_realesrgan.RealESRGANConfig`;
    of the keys above only ``scale`` applies).
    """

    scale: Annotated[int, Ge(1)] = 4
    blur_sigma: tuple[Sigma, Sigma] = (0.2, 1.5)
    noise_sigma: tuple[Sigma, Sigma] = (0.0, 0.03)
    jpeg_quality: tuple[Quality, Quality] = (40, 95)
    compression: Literal["jpeg", "none"] = "jpeg"
    p_blur: Probability = 1.0
    p_noise: Probability = 0.8
    p_compress: Probability = 0.7
    kind: Literal["simple", "realesrgan_video"] = "simple"
    realesrgan: RealESRGANConfig = field(default_factory=RealESRGANConfig)

    def __post_init__(self):
        super().__post_init__()
        # Normalise lists (e.g. straight from YAML) to tuples and ints to floats, so the frozen config stays
        # hashable and equal configs compare equal.
        for name, kind in (("blur_sigma", float), ("noise_sigma", float), ("jpeg_quality", int)):
            low, high = (kind(v) for v in getattr(self, name))
            if low > high:
                raise ValueError(f"{name}: must be a (low, high) pair with low <= high, got {getattr(self, name)!r}")
            object.__setattr__(self, name, (low, high))
        for name in ("p_blur", "p_noise", "p_compress"):
            object.__setattr__(self, name, float(getattr(self, name)))


@dataclass(frozen=True)
class DegradeParams:
    """The parameters one clip was degraded with; ``0.0`` / ``None`` where the step was skipped."""

    blur_sigma: float
    noise_sigma: float
    jpeg_quality: int | None

    def as_dict(self) -> dict[str, Any]:
        """Plain dict for loggers."""
        return dataclasses.asdict(self)


# ----------------------------------------------------------------------------- conventions


def to_unit(x: torch.Tensor) -> torch.Tensor:
    """Clip tensor in its storage convention -> float unit intensities in ``[0, 1]``.

    ``uint8`` is read as ``[0, 255]``; floating point as ``[-1, 1]``. Half/bfloat16 are promoted
    to float32, float64 stays float64. No clamping is done.
    """
    if x.dtype == torch.uint8:
        return x.to(torch.float32) / 255.0
    if not x.is_floating_point():
        raise TypeError(f"clips must be uint8 [0, 255] or floating point [-1, 1], got {x.dtype}")
    x = x.to(torch.promote_types(x.dtype, torch.float32))
    return (x + 1.0) * 0.5


def from_unit(u: torch.Tensor, dtype: torch.dtype) -> torch.Tensor:
    """Unit intensities ``[0, 1]`` -> the storage convention of ``dtype`` (clamped; uint8 is rounded)."""
    u = u.clamp(0.0, 1.0)
    if dtype == torch.uint8:
        return torch.round(u * 255.0).to(torch.uint8)
    if not dtype.is_floating_point:
        raise TypeError(f"clips must be uint8 or floating point, got {dtype}")
    return (u * 2.0 - 1.0).to(dtype)


# ----------------------------------------------------------------------------- building blocks


def gaussian_kernel1d(sigma: float, *, dtype=torch.float32, device=None) -> torch.Tensor:
    """Normalised 1-D Gaussian taps, radius ``ceil(3 * sigma)`` (at least 1); ``[1.]`` for sigma <= 0."""
    if sigma <= 0:
        return torch.ones(1, dtype=dtype, device=device)
    radius = max(1, math.ceil(3.0 * sigma))
    t = torch.arange(-radius, radius + 1, dtype=torch.float64)
    k = torch.exp(-0.5 * (t / sigma) ** 2)
    return (k / k.sum()).to(dtype=dtype, device=device)


_MATMUL_BLUR_MAX_SIDE = 512


def _blur_matrix(length: int, k: torch.Tensor) -> torch.Tensor:
    """``[length, length]`` banded matrix M with ``M @ v`` = ``v`` convolved with ``k``, replicate padding."""
    r = (k.numel() - 1) // 2
    idx = torch.arange(length, device=k.device)
    src = (idx[:, None] + torch.arange(-r, r + 1, device=k.device)[None, :]).clamp(0, length - 1)
    m = torch.zeros(length, length, dtype=torch.float64, device=k.device)
    m.scatter_add_(1, src, k.to(torch.float64).expand(length, -1).contiguous())
    return m


def gaussian_blur(frames: torch.Tensor, sigma: float) -> torch.Tensor:
    """Separable Gaussian blur of every channel of ``frames [N, C, H, W]`` (float), replicate padding.

    ``sigma <= 0`` returns the input unchanged. Frames up to 512 px a side are blurred as
    ``Mh @ x @ Mw^T`` with banded (Toeplitz, replicate-edge) matrices: the same separable
    convolution, but one BLAS call instead of depthwise ``conv2d``, ~10x faster on CPU for
    256x256 frames. Larger frames use two 1-D ``conv2d`` passes.
    """
    if sigma <= 0:
        return frames
    _n, _c, h, w = frames.shape
    if max(h, w) <= _MATMUL_BLUR_MAX_SIDE:
        k = gaussian_kernel1d(sigma, dtype=torch.float64, device=frames.device)
        mh = _blur_matrix(h, k).to(frames.dtype)
        mw = _blur_matrix(w, k).to(frames.dtype)
        return torch.matmul(torch.matmul(mh, frames), mw.T)
    return _gaussian_blur_conv(frames, sigma)


def _gaussian_blur_conv(frames: torch.Tensor, sigma: float) -> torch.Tensor:
    n, c, h, w = frames.shape
    k = gaussian_kernel1d(sigma, dtype=frames.dtype, device=frames.device)
    r = (k.numel() - 1) // 2
    x = frames.reshape(n * c, 1, h, w)
    x = F.conv2d(F.pad(x, (r, r, 0, 0), mode="replicate"), k.view(1, 1, 1, -1))
    x = F.conv2d(F.pad(x, (0, 0, r, r), mode="replicate"), k.view(1, 1, -1, 1))
    return x.reshape(n, c, h, w)


def _resize_bicubic(frames: torch.Tensor, size: tuple[int, int]) -> torch.Tensor:
    if tuple(frames.shape[-2:]) == tuple(size):
        return frames
    return F.interpolate(frames, size=size, mode="bicubic", align_corners=False, antialias=True)


def jpeg_roundtrip(frames_unit: torch.Tensor, quality: int) -> torch.Tensor:
    """JPEG-encode and decode ``frames_unit [N, 3, H, W]`` (unit floats) with PIL at ``quality``.

    Frames are quantised to uint8 and moved to the CPU for PIL (default 4:2:0 chroma subsampling),
    then returned as unit floats on the original device and dtype.
    """
    u8 = torch.round(frames_unit.clamp(0.0, 1.0) * 255.0).to(torch.uint8)
    arr = u8.permute(0, 2, 3, 1).cpu().numpy()  # [N, H, W, 3]
    out = np.empty_like(arr)
    for i in range(arr.shape[0]):
        buf = io.BytesIO()
        Image.fromarray(arr[i]).save(buf, format="JPEG", quality=int(quality))
        buf.seek(0)
        with Image.open(buf) as im:
            out[i] = np.asarray(im.convert("RGB"))
    back = torch.from_numpy(out).to(frames_unit.device).permute(0, 3, 1, 2)
    return back.to(frames_unit.dtype) / 255.0


def _check_clips(x: torch.Tensor, name: str) -> None:
    if x.dim() != 5 or x.shape[1] != 3:
        raise ValueError(f"{name} must be [B, 3, T, H, W], got shape {tuple(x.shape)}")


def _sample_params(cfg: DegradeConfig, generator: torch.Generator | None, device) -> DegradeParams:
    u = torch.rand(_DRAWS_PER_CLIP, generator=generator, device=device, dtype=torch.float64).tolist()
    blur = 0.0
    if u[0] < cfg.p_blur:
        lo, hi = cfg.blur_sigma
        blur = lo + (hi - lo) * u[1]
    noise = 0.0
    if u[2] < cfg.p_noise:
        lo, hi = cfg.noise_sigma
        noise = lo + (hi - lo) * u[3]
    quality = None
    if cfg.compression == "jpeg" and u[4] < cfg.p_compress:
        lo, hi = cfg.jpeg_quality
        quality = min(hi, lo + int(u[5] * (hi - lo + 1)))
    return DegradeParams(blur_sigma=float(blur), noise_sigma=float(noise), jpeg_quality=quality)


# ----------------------------------------------------------------------------- public API


def validation_generator(seed: int = 0, device: str | torch.device = "cpu") -> torch.Generator:
    """A freshly seeded ``torch.Generator`` for the held-out set: create one per validation pass.

    Keep the validation clips' order fixed and the LQ inputs are identical on every pass (and do
    not depend on the batch size). A CPU generator (the default) also gives the same noise for
    CPU and CUDA clips.
    """
    g = torch.Generator(device=device)
    g.manual_seed(int(seed))
    return g


def degrade_with_params(
    hq: torch.Tensor, cfg: DegradeConfig, generator: torch.Generator | None = None
) -> tuple[torch.Tensor, list[DegradeParams] | list[VideoDegradeParams]]:
    """Degrade HQ clips ``[B, 3, T, H, W]`` into LQ ``[B, 3, T, H/scale, W/scale]``, with the params.

    Per clip, in order: Gaussian blur (sigma drawn per clip, same for all frames) -> antialiased
    bicubic downsample by ``cfg.scale`` -> additive Gaussian noise (unit-intensity sigma per clip,
    independent per pixel) -> JPEG round trip per frame at a per-clip quality -> clamp to the valid
    range. The output keeps the input's dtype and convention (uint8 ``[0, 255]`` or float
    ``[-1, 1]``, see the module docstring) and device. ``generator=None`` uses torch's global RNG
    (not reproducible). Returns ``(lq, params)`` with one :class:`DegradeParams` per clip.

    ``cfg.kind == "realesrgan_video"``: the chain of :mod:`lib.video.degrade_realesrgan` instead, same
    shapes and conventions, one :class:`~lib.video.degrade_realesrgan.VideoDegradeParams` per clip.
    """
    _check_clips(hq, "hq")
    b, _c, _t, h, w = hq.shape
    s = cfg.scale
    if h % s or w % s:
        raise ValueError(f"clip size {h}x{w} is not divisible by scale {s}; crop the HQ clips first")
    gen_device = generator.device if generator is not None else torch.device("cpu")
    frames = to_unit(hq).permute(0, 2, 1, 3, 4)  # [B, T, 3, H, W]
    if cfg.kind == "realesrgan_video":
        clips, video_params = [], []
        for i in range(b):
            x, p = _realesrgan_clip(frames[i], cfg.realesrgan, (h // s, w // s), generator, gen_device)
            clips.append(x)
            video_params.append(p)
        lq = torch.stack(clips).permute(0, 2, 1, 3, 4).contiguous()
        return from_unit(lq, hq.dtype), video_params
    out_frames = []
    params: list[DegradeParams] = []
    for i in range(b):
        p = _sample_params(cfg, generator, gen_device)
        x = frames[i]  # [T, 3, H, W]
        x = gaussian_blur(x, p.blur_sigma)
        x = _resize_bicubic(x, (h // s, w // s))
        if p.noise_sigma > 0:
            noise = torch.randn(x.shape, generator=generator, device=gen_device, dtype=x.dtype)
            x = (x + noise.to(x.device) * p.noise_sigma).clamp(0.0, 1.0)
        if p.jpeg_quality is not None:
            x = jpeg_roundtrip(x, p.jpeg_quality)
        out_frames.append(x)
        params.append(p)
    lq = torch.stack(out_frames).permute(0, 2, 1, 3, 4).contiguous()  # [B, 3, T, h, w]
    return from_unit(lq, hq.dtype), params


def degrade(hq: torch.Tensor, cfg: DegradeConfig, generator: torch.Generator | None = None) -> torch.Tensor:
    """Degrade HQ clips ``[B, 3, T, H, W]`` to LQ ``[B, 3, T, H/scale, W/scale]`` (see :func:`degrade_with_params`)."""
    return degrade_with_params(hq, cfg, generator)[0]


def bicubic_upsample(lq: torch.Tensor, scale: int) -> torch.Tensor:
    """The trivial SR baseline: bicubic upsampling of LQ clips ``[B, 3, T, h, w]`` by ``scale``.

    Returns ``[B, 3, T, h*scale, w*scale]`` in the input's dtype and convention, clamped to range.
    """
    _check_clips(lq, "lq")
    if isinstance(scale, bool) or not isinstance(scale, int) or scale < 1:
        raise ValueError(f"scale must be an int >= 1, got {scale!r}")
    b, c, t, h, w = lq.shape
    frames = to_unit(lq).permute(0, 2, 1, 3, 4).reshape(b * t, c, h, w)
    if scale > 1:
        frames = F.interpolate(frames, size=(h * scale, w * scale), mode="bicubic", align_corners=False)
    up = frames.reshape(b, t, c, h * scale, w * scale).permute(0, 2, 1, 3, 4).contiguous()
    return from_unit(up, lq.dtype)


__all__ = [
    "DegradeConfig",
    "DegradeParams",
    "RealESRGANConfig",
    "VideoDegradeParams",
    "bicubic_upsample",
    "degrade",
    "degrade_with_params",
    "from_unit",
    "gaussian_blur",
    "gaussian_kernel1d",
    "jpeg_roundtrip",
    "to_unit",
    "validation_generator",
]
