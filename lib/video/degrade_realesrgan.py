"""Real-ESRGAN's second-order degradation for video clips, plus a video-codec round trip (``kind: realesrgan_video``).

:func:`lib.video.degrade.degrade` calls :func:`degrade_clip` once per clip when ``DegradeConfig.kind`` is
``"realesrgan_video"``. The chain (Wang et al. 2021, "Real-ESRGAN", ``RealESRGANModel.feed_data``) on unit intensities
``[0, 1]``, HQ ``H x W`` -> LQ ``H/scale x W/scale``:

1. blur with kernel 1 -> random resize (up / down / keep, ``resize_range``; area, bilinear or bicubic) -> Gaussian
   or Poisson noise (colour or grey) -> clamp -> JPEG;
2. blur with kernel 2 (with ``second_blur_prob``) -> random resize to ``H/scale * s2`` (``resize_range2``) -> noise
   -> clamp; then, in random order (1/2 each), ``[resize to H/scale x W/scale + final sinc]`` then JPEG, or JPEG then
   ``[resize + final sinc]``; clamp and round to 8-bit levels;
3. video codec (not in Real-ESRGAN; RealBasicVSR's ``RandomVideoCompression``, Chan et al. 2022): with ``p_codec``
   the LQ clip is encoded in memory at a random bitrate with a random codec of ``codecs`` and decoded back.

Kernels (:func:`sample_params`, :func:`kernel_from_params`; Real-ESRGAN's ``random_mixed_kernels`` /
``circular_lowpass_kernel``): odd size drawn from ``kernel_size`` (7..21); with ``sinc_prob`` a circular low-pass
(sinc) kernel with cut-off ``omega_c`` drawn from ``[pi/3, pi]`` (size < 13) or ``[pi/5, pi]``; otherwise one of
iso / aniso / generalized_iso / generalized_aniso / plateau_iso / plateau_aniso (weights ``kernel_prob``), sigmas
from ``blur_sigma``, rotation from ``[-pi, pi]``, shape beta drawn half the time from ``[lo, 1]`` and half from
``[1, hi]`` of ``betag_range`` / ``betap_range``. The final sinc (with ``final_sinc_prob``) has cut-off in
``[pi/3, pi]``.

Defaults are the published values: ``options/train_realesrgan_x4plus.yml`` and ``realesrgan/data/
realesrgan_dataset.py`` of xinntao/Real-ESRGAN, ``basicsr/data/degradations.py`` of BasicSR (noise sigma in 8-bit
levels, Poisson ``vals = 2**ceil(log2(#levels))``, grey noise weights 0.2989/0.587/0.114), and for the codec step
RealBasicVSR's ``bitrate=[1e4, 1e5]`` at ``rate=1`` (so bits per frame) on 256-px patches.

Video: all parameters (kernels, resize factors and modes, noise kind/strength/grey, JPEG qualities, the order of
the last steps, codec and bitrate) are drawn ONCE per clip and shared by its frames; the noise itself is drawn per
frame (independent pixels). Deviations from Real-ESRGAN, and why:

* no USM sharpening of the GT, no training-pair pool, no random crop: those are the trainer's business, not the
  degradation's (this module only makes the LQ from the given HQ);
* JPEG is libjpeg through PIL at an integer quality (Real-ESRGAN: DiffJPEG at a float quality, same IJG tables,
  4:2:0 in both);
* blur pads by reflection like BasicSR's ``filter2D``, but falls back to edge replication when the frame is not
  larger than the kernel's radius (Real-ESRGAN never meets such small frames; 32-px test clips do);
* Poisson's ``vals`` is counted over the whole clip (one value per clip) rather than per image;
* the codec step runs on the final LQ (the brief of this project) rather than inside the first stage as in
  RealBasicVSR; its bitrate range is therefore scaled by the LQ frame area: ``bits/frame = U(codec_bitrate) *
  h * w / 256**2`` (256 px: RealBasicVSR's patch size), i.e. the same bits per pixel as RealBasicVSR's default range
  (0.15-1.5 bpp). RealBasicVSR draws from libx264, h264 (the same encoder) and mpeg4; the default here is libx264
  and libvpx-vp9 (mpeg4 available). Encoders run single-threaded with their default presets (x264 ``medium``,
  libvpx ``good``), bit-exact flags, at 25 fps with ``bits/frame * 25`` bits/s (RealBasicVSR: 1 fps, the same bits
  per frame; libx264/libvpx take kbit/s, hence 25 fps and a 1 kbit/s floor), and RGB <-> YUV 4:2:0 (BT.601,
  limited range) is done here in float64, not by swscale, so the same clip and parameters give the same bytes.
  Measured on real SSv2 frames (16 frames, 16 and 56 px LQ): x264 gives ~24-38 dB PSNR over the default range;
  libvpx-vp9 mostly undershoots the target at these sizes and stays near the 4:2:0 ceiling (~34-40 dB).

Cost (2-core CPU, 2 torch threads): ~26 ms for a ``[2, 3, 8, 64, 64]`` HQ batch at scale 4 (``simple``: ~3 ms),
~9 ms of it the codec; ~230 ms for ``[2, 3, 16, 224, 224]`` (``simple``: ~50 ms).

Determinism: per clip, :data:`DRAWS_PER_CLIP` uniforms (float64) come from the generator first, then the noise of
stage 1 and stage 2; nothing else draws. The same seed gives bit-identical LQ, and splitting a batch does not change
it. CUDA clips: blur and resize stay on the device; noise is drawn on the generator's device; JPEG and the codec go
through the CPU.
"""

from __future__ import annotations

import dataclasses
import fractions
import math
from dataclasses import dataclass
from typing import Annotated, Any, Literal

import av
import numpy as np
import torch
import torch.nn.functional as F
from annotated_types import Ge, Gt, Interval, MinLen

from lib.config import Checked

KERNEL_KINDS = ("iso", "aniso", "generalized_iso", "generalized_aniso", "plateau_iso", "plateau_aniso")
RESIZE_KINDS = ("up", "down", "keep")
RESIZE_MODES = ("area", "bilinear", "bicubic")
CODECS = ("libx264", "libvpx-vp9", "mpeg4")
_DECODERS = {"libx264": "h264", "libvpx-vp9": "vp9", "mpeg4": "mpeg4"}
CODEC_REFERENCE_AREA = 256 * 256  # codec_bitrate is for frames of this many pixels (RealBasicVSR's 256-px patches)

Codec = Literal["libx264", "libvpx-vp9", "mpeg4"]
Positive = Annotated[float, Gt(0)]
NonNegative = Annotated[float, Ge(0)]
Probability = Annotated[float, Interval(ge=0, le=1)]
Quality = Annotated[int, Interval(ge=1, le=100)]
KernelSize = Annotated[int, Ge(1)]


def _weights(name: str, values: Any, n: int) -> tuple[float, ...]:
    values = tuple(float(v) for v in values)
    if len(values) != n or sum(values) <= 0:
        raise ValueError(f"{name}: must be {n} non-negative weights with a positive sum, got {values!r}")
    return values


def _pair(name: str, value: Any, kind: type = float) -> tuple[Any, Any]:
    low, high = (kind(v) for v in value)
    if low > high:
        raise ValueError(f"{name}: must be a (low, high) pair with low <= high, got {value!r}")
    return low, high


@dataclass(frozen=True)
class RealESRGANConfig(Checked):
    """Ranges of the ``realesrgan_video`` degradation (``degrade.realesrgan`` in ``params.yaml``).

    Names follow Real-ESRGAN's ``train_realesrgan_x4plus.yml`` (a trailing ``2``: the second stage); defaults are its
    published values. ``kernel_prob`` / ``kernel_prob2`` weigh, in this order, iso, aniso, generalized_iso,
    generalized_aniso, plateau_iso, plateau_aniso (0 disables a kind); ``resize_prob`` weighs up, down, keep.
    ``blur_sigma`` is in pixels of the image it blurs, ``noise_range`` in 8-bit levels (``sigma / 255`` in unit
    intensities), ``poisson_scale_range`` multiplies the Poisson noise. ``kernel_size``: the inclusive range of odd
    kernel sizes (one drawn uniformly per kernel). ``betag_range`` / ``betap_range`` must contain 1 and
    ``resize_range`` / ``resize_range2`` must contain 1 (down draws ``[lo, 1]``, up ``[1, hi]``).

    Codec step (RealBasicVSR): with ``p_codec`` the LQ clip goes through one of ``codecs`` (drawn uniformly) at
    ``U(codec_bitrate) * h * w / 256**2`` bits per frame (``h x w``: the LQ size).
    """

    kernel_size: tuple[KernelSize, KernelSize] = (7, 21)
    kernel_prob: tuple[NonNegative, ...] = (0.45, 0.25, 0.12, 0.03, 0.12, 0.03)
    sinc_prob: Probability = 0.1
    blur_sigma: tuple[Positive, Positive] = (0.2, 3.0)
    betag_range: tuple[Positive, Positive] = (0.5, 4.0)
    betap_range: tuple[Positive, Positive] = (1.0, 2.0)
    resize_prob: tuple[NonNegative, NonNegative, NonNegative] = (0.2, 0.7, 0.1)
    resize_range: tuple[Positive, Positive] = (0.15, 1.5)
    gaussian_noise_prob: Probability = 0.5
    noise_range: tuple[NonNegative, NonNegative] = (1.0, 30.0)
    poisson_scale_range: tuple[NonNegative, NonNegative] = (0.05, 3.0)
    gray_noise_prob: Probability = 0.4
    jpeg_range: tuple[Quality, Quality] = (30, 95)

    second_blur_prob: Probability = 0.8
    kernel_prob2: tuple[NonNegative, ...] = (0.45, 0.25, 0.12, 0.03, 0.12, 0.03)
    sinc_prob2: Probability = 0.1
    blur_sigma2: tuple[Positive, Positive] = (0.2, 1.5)
    betag_range2: tuple[Positive, Positive] = (0.5, 4.0)
    betap_range2: tuple[Positive, Positive] = (1.0, 2.0)
    resize_prob2: tuple[NonNegative, NonNegative, NonNegative] = (0.3, 0.4, 0.3)
    resize_range2: tuple[Positive, Positive] = (0.3, 1.2)
    gaussian_noise_prob2: Probability = 0.5
    noise_range2: tuple[NonNegative, NonNegative] = (1.0, 25.0)
    poisson_scale_range2: tuple[NonNegative, NonNegative] = (0.05, 2.5)
    gray_noise_prob2: Probability = 0.4
    jpeg_range2: tuple[Quality, Quality] = (30, 95)
    final_sinc_prob: Probability = 0.8

    p_codec: Probability = 1.0
    codecs: Annotated[tuple[Codec, ...], MinLen(1)] = ("libx264", "libvpx-vp9")
    codec_bitrate: tuple[Positive, Positive] = (1.0e4, 1.0e5)

    def __post_init__(self):
        super().__post_init__()
        low, high = _pair("kernel_size", self.kernel_size, int)
        if low % 2 == 0 or high % 2 == 0:
            raise ValueError(f"kernel_size: both ends must be odd, got {self.kernel_size!r}")
        object.__setattr__(self, "kernel_size", (low, high))
        for name in ("kernel_prob", "kernel_prob2"):
            object.__setattr__(self, name, _weights(name, getattr(self, name), len(KERNEL_KINDS)))
        for name in ("resize_prob", "resize_prob2"):
            object.__setattr__(self, name, _weights(name, getattr(self, name), len(RESIZE_KINDS)))
        for name in ("blur_sigma", "blur_sigma2", "noise_range", "noise_range2", "poisson_scale_range",
                     "poisson_scale_range2", "codec_bitrate"):
            object.__setattr__(self, name, _pair(name, getattr(self, name)))
        for name in ("betag_range", "betag_range2", "betap_range", "betap_range2", "resize_range", "resize_range2"):
            low, high = _pair(name, getattr(self, name))
            if not low <= 1.0 <= high:
                raise ValueError(f"{name}: must contain 1 (low <= 1 <= high), got {getattr(self, name)!r}")
            object.__setattr__(self, name, (low, high))
        for name in ("jpeg_range", "jpeg_range2"):
            object.__setattr__(self, name, _pair(name, getattr(self, name), int))
        object.__setattr__(self, "codecs", tuple(self.codecs))
        for name in ("sinc_prob", "sinc_prob2", "gaussian_noise_prob", "gaussian_noise_prob2", "gray_noise_prob",
                     "gray_noise_prob2", "second_blur_prob", "final_sinc_prob", "p_codec"):
            object.__setattr__(self, name, float(getattr(self, name)))


# ----------------------------------------------------------------------------- parameters of one clip


@dataclass(frozen=True)
class KernelParams:
    """One blur kernel: ``kind`` (a :data:`KERNEL_KINDS` entry or ``"sinc"``), odd ``size``, and its shape."""

    kind: str
    size: int
    sigma_x: float = 0.0
    sigma_y: float = 0.0
    theta: float = 0.0
    beta: float = 1.0
    omega_c: float = 0.0


@dataclass(frozen=True)
class VideoDegradeParams:
    """What one clip was degraded with by ``realesrgan_video`` (``None``: the step was skipped)."""

    kernel1: KernelParams
    resize1: float
    mode1: str
    noise1: str  # "gaussian" | "poisson"
    noise1_level: float  # sigma in 8-bit levels, or the Poisson scale
    gray1: bool
    jpeg1: int
    kernel2: KernelParams | None
    resize2: float
    mode2: str
    noise2: str
    noise2_level: float
    gray2: bool
    jpeg2: int
    sinc_first: bool  # True: [resize + sinc] then JPEG; False: JPEG then [resize + sinc]
    final_mode: str
    final_sinc: KernelParams | None
    codec: str | None
    codec_bitrate: float | None  # bits per frame at 256 x 256 (before the scaling to the LQ size)

    def as_dict(self) -> dict[str, Any]:
        """Plain (nested) dict for loggers."""
        return dataclasses.asdict(self)


class _Draws:
    """The clip's uniforms, handed out in a fixed order; :meth:`done` checks that all were used."""

    def __init__(self, values: list[float]):
        self.values = values
        self.i = 0

    def u(self) -> float:
        value = self.values[self.i]
        self.i += 1
        return value

    def uniform(self, low: float, high: float) -> float:
        return low + (high - low) * self.u()

    def integer(self, low: int, high: int) -> int:
        """Uniform integer in ``[low, high]`` inclusive."""
        return min(high, low + int(self.u() * (high - low + 1)))

    def choice(self, weights: tuple[float, ...]) -> int:
        target = self.u() * sum(weights)
        acc = 0.0
        for i, w in enumerate(weights):
            acc += w
            if target < acc and w > 0:
                return i
        return max(i for i, w in enumerate(weights) if w > 0)

    def done(self) -> None:
        if self.i != len(self.values):
            raise AssertionError(f"used {self.i} of {len(self.values)} draws")


_KERNEL_DRAWS = 9  # size, sinc?, omega, kind, sigma_x, sigma_y, theta, beta branch, beta
DRAWS_PER_CLIP = 2 * _KERNEL_DRAWS + 3 + 7 + 8 + 2 + 3  # kernels, final sinc, stage 1, stage 2, final, codec


def _odd_size(d: _Draws, size_range: tuple[int, int]) -> int:
    low, high = size_range
    return low + 2 * d.integer(0, (high - low) // 2)


def _sample_kernel(d: _Draws, size_range, sinc_prob, kernel_prob, sigma, betag, betap) -> KernelParams:
    """Real-ESRGAN's kernel draw (``realesrgan_dataset.py`` + ``random_mixed_kernels``); always 9 draws."""
    size = _odd_size(d, size_range)
    is_sinc = d.u() < sinc_prob
    omega = d.uniform(math.pi / 3, math.pi) if size < 13 else d.uniform(math.pi / 5, math.pi)
    kind = KERNEL_KINDS[d.choice(kernel_prob)]
    sigma_x, sigma_y, theta = d.uniform(*sigma), d.uniform(*sigma), d.uniform(-math.pi, math.pi)
    low_branch = d.u() < 0.5
    u_beta = d.u()
    if is_sinc:
        return KernelParams("sinc", size, omega_c=omega)
    if kind.endswith("iso") and not kind.endswith("aniso"):
        sigma_y, theta = sigma_x, 0.0
    beta = 1.0
    if kind.startswith(("generalized", "plateau")):
        low, high = betag if kind.startswith("generalized") else betap
        beta = low + (1.0 - low) * u_beta if low_branch else 1.0 + (high - 1.0) * u_beta
    return KernelParams(kind, size, sigma_x, sigma_y, theta, beta)


def _sample_resize(d: _Draws, weights, scale_range) -> tuple[float, str]:
    kind = RESIZE_KINDS[d.choice(weights)]
    u = d.u()
    mode = RESIZE_MODES[d.integer(0, len(RESIZE_MODES) - 1)]
    if kind == "up":
        return 1.0 + (scale_range[1] - 1.0) * u, mode
    if kind == "down":
        return scale_range[0] + (1.0 - scale_range[0]) * u, mode
    return 1.0, mode


def _sample_noise(d: _Draws, gaussian_prob, sigma_range, poisson_range, gray_prob) -> tuple[str, float, bool]:
    gaussian = d.u() < gaussian_prob
    u = d.u()
    gray = d.u() < gray_prob
    if gaussian:
        return "gaussian", sigma_range[0] + (sigma_range[1] - sigma_range[0]) * u, gray
    return "poisson", poisson_range[0] + (poisson_range[1] - poisson_range[0]) * u, gray


def sample_params(cfg: RealESRGANConfig, draws: list[float]) -> VideoDegradeParams:
    """Turn :data:`DRAWS_PER_CLIP` uniforms in ``[0, 1)`` into one clip's parameters (no other randomness)."""
    if len(draws) != DRAWS_PER_CLIP:
        raise ValueError(f"expected {DRAWS_PER_CLIP} draws, got {len(draws)}")
    d = _Draws(list(draws))
    k1 = _sample_kernel(d, cfg.kernel_size, cfg.sinc_prob, cfg.kernel_prob, cfg.blur_sigma, cfg.betag_range,
                        cfg.betap_range)
    k2 = _sample_kernel(d, cfg.kernel_size, cfg.sinc_prob2, cfg.kernel_prob2, cfg.blur_sigma2, cfg.betag_range2,
                        cfg.betap_range2)
    final_sinc = d.u() < cfg.final_sinc_prob
    final_size = _odd_size(d, cfg.kernel_size)
    final_omega = d.uniform(math.pi / 3, math.pi)
    resize1, mode1 = _sample_resize(d, cfg.resize_prob, cfg.resize_range)
    noise1, level1, gray1 = _sample_noise(d, cfg.gaussian_noise_prob, cfg.noise_range, cfg.poisson_scale_range,
                                          cfg.gray_noise_prob)
    jpeg1 = d.integer(*cfg.jpeg_range)
    blur2 = d.u() < cfg.second_blur_prob
    resize2, mode2 = _sample_resize(d, cfg.resize_prob2, cfg.resize_range2)
    noise2, level2, gray2 = _sample_noise(d, cfg.gaussian_noise_prob2, cfg.noise_range2, cfg.poisson_scale_range2,
                                          cfg.gray_noise_prob2)
    jpeg2 = d.integer(*cfg.jpeg_range2)
    sinc_first = d.u() < 0.5
    final_mode = RESIZE_MODES[d.integer(0, len(RESIZE_MODES) - 1)]
    use_codec = d.u() < cfg.p_codec
    codec = cfg.codecs[d.integer(0, len(cfg.codecs) - 1)]
    bitrate = d.uniform(*cfg.codec_bitrate)
    d.done()
    return VideoDegradeParams(
        kernel1=k1, resize1=resize1, mode1=mode1, noise1=noise1, noise1_level=level1, gray1=gray1, jpeg1=jpeg1,
        kernel2=k2 if blur2 else None, resize2=resize2, mode2=mode2, noise2=noise2, noise2_level=level2, gray2=gray2,
        jpeg2=jpeg2, sinc_first=sinc_first, final_mode=final_mode,
        final_sinc=KernelParams("sinc", final_size, omega_c=final_omega) if final_sinc else None,
        codec=codec if use_codec else None, codec_bitrate=bitrate if use_codec else None)


# ----------------------------------------------------------------------------- kernels


def mesh_grid(size: int) -> tuple[torch.Tensor, torch.Tensor]:
    """``(xx, yy)`` float64 ``[size, size]`` pixel offsets from the centre (x along columns, y along rows)."""
    ax = torch.arange(size, dtype=torch.float64) - (size - 1) / 2
    yy, xx = torch.meshgrid(ax, ax, indexing="ij")
    return xx, yy


def _quadratic_form(size: int, sigma_x: float, sigma_y: float, theta: float) -> torch.Tensor:
    """``d^T Sigma^-1 d`` on the grid, ``Sigma = R(theta) diag(sigma_x^2, sigma_y^2) R(theta)^T``."""
    xx, yy = mesh_grid(size)
    c, s = math.cos(theta), math.sin(theta)
    u = c * xx + s * yy
    v = -s * xx + c * yy
    return (u / sigma_x) ** 2 + (v / sigma_y) ** 2


def gaussian_kernel(size: int, sigma_x: float, sigma_y: float | None = None, theta: float = 0.0) -> torch.Tensor:
    """Normalised bivariate Gaussian (BasicSR ``bivariate_Gaussian``); isotropic when ``sigma_y`` is None."""
    q = _quadratic_form(size, sigma_x, sigma_x if sigma_y is None else sigma_y, theta)
    k = torch.exp(-0.5 * q)
    return k / k.sum()


def generalized_gaussian_kernel(size: int, sigma_x: float, sigma_y: float | None = None, theta: float = 0.0,
                                beta: float = 1.0) -> torch.Tensor:
    """Normalised ``exp(-0.5 * q**beta)`` (BasicSR ``bivariate_generalized_Gaussian``); beta 1 is the Gaussian."""
    q = _quadratic_form(size, sigma_x, sigma_x if sigma_y is None else sigma_y, theta)
    k = torch.exp(-0.5 * q.pow(beta))
    return k / k.sum()


def plateau_kernel(size: int, sigma_x: float, sigma_y: float | None = None, theta: float = 0.0,
                   beta: float = 1.0) -> torch.Tensor:
    """Normalised ``1 / (1 + q**beta)`` (BasicSR ``bivariate_plateau``)."""
    q = _quadratic_form(size, sigma_x, sigma_x if sigma_y is None else sigma_y, theta)
    k = 1.0 / (q.pow(beta) + 1.0)
    return k / k.sum()


def sinc_kernel(size: int, omega_c: float) -> torch.Tensor:
    """Normalised circular low-pass kernel ``omega_c J1(omega_c r) / (2 pi r)`` (BasicSR ``circular_lowpass_kernel``);
    ``omega_c`` is the cut-off in radians per pixel (pi: Nyquist)."""
    xx, yy = mesh_grid(size)
    r = torch.sqrt(xx**2 + yy**2)
    safe = torch.where(r == 0, torch.ones_like(r), r)
    k = omega_c * torch.special.bessel_j1(omega_c * safe) / (2 * math.pi * safe)
    k = torch.where(r == 0, torch.full_like(r, omega_c**2 / (4 * math.pi)), k)
    return k / k.sum()


def kernel_from_params(p: KernelParams) -> torch.Tensor:
    """The float64 ``[size, size]`` kernel that ``p`` describes."""
    if p.kind == "sinc":
        return sinc_kernel(p.size, p.omega_c)
    if p.kind in ("iso", "aniso"):
        return gaussian_kernel(p.size, p.sigma_x, p.sigma_y, p.theta)
    if p.kind.startswith("generalized"):
        return generalized_gaussian_kernel(p.size, p.sigma_x, p.sigma_y, p.theta, p.beta)
    if p.kind.startswith("plateau"):
        return plateau_kernel(p.size, p.sigma_x, p.sigma_y, p.theta, p.beta)
    raise ValueError(f"unknown kernel kind {p.kind!r}")


def filter2d(frames: torch.Tensor, kernel: torch.Tensor) -> torch.Tensor:
    """Filter every channel of ``frames [N, C, H, W]`` with one ``[k, k]`` kernel (odd k; correlation, as BasicSR's
    ``filter2D``), reflect padding, or edge replication where the frame is not larger than the kernel's radius."""
    n, c, h, w = frames.shape
    k = kernel.shape[-1]
    r = k // 2
    if k == 1:
        return frames * kernel.reshape(()).to(frames.dtype)
    x = frames.reshape(1, n * c, h, w)
    mode = "reflect" if r < min(h, w) else "replicate"
    x = F.pad(x, (r, r, r, r), mode=mode)
    # one depthwise conv over all frames and channels: ~5x faster on CPU than a batch of 1-channel convs
    weight = kernel.to(device=frames.device, dtype=frames.dtype).view(1, 1, k, k).expand(n * c, 1, k, k)
    x = F.conv2d(x, weight, groups=n * c)
    return x.reshape(n, c, h, w)


# ----------------------------------------------------------------------------- resize, noise, codec


def _resize(frames: torch.Tensor, size: tuple[int, int], mode: str) -> torch.Tensor:
    if tuple(frames.shape[-2:]) == tuple(size):
        return frames
    if mode == "area":
        return F.interpolate(frames, size=size, mode="area")
    return F.interpolate(frames, size=size, mode=mode, align_corners=False)


def _gray(x: torch.Tensor) -> torch.Tensor:
    w = torch.tensor([0.2989, 0.587, 0.114], dtype=x.dtype, device=x.device).view(1, 3, 1, 1)
    return (x * w).sum(dim=1, keepdim=True)


def add_noise(x: torch.Tensor, kind: str, level: float, gray: bool, generator, gen_device) -> torch.Tensor:
    """Add Real-ESRGAN's Gaussian (``level``: sigma in 8-bit levels) or Poisson (``level``: scale) noise to the clip
    ``x [T, 3, h, w]`` (unit floats), drawn per frame and pixel (one grey field for all channels if ``gray``), and
    clamp to ``[0, 1]``."""
    t, c, h, w = x.shape
    if kind == "gaussian":
        shape = (t, 1 if gray else c, h, w)
        noise = torch.randn(shape, generator=generator, device=gen_device, dtype=x.dtype).to(x.device)
        noise = noise * (level / 255.0)
    else:
        levels = torch.clamp(torch.round((_gray(x) if gray else x) * 255.0), 0, 255)
        img = levels / 255.0
        distinct = int((torch.bincount(levels.flatten().to(torch.int64), minlength=256) > 0).sum())
        vals = 2.0 ** math.ceil(math.log2(max(1, distinct)))
        counts = torch.poisson((img * vals).to(gen_device), generator=generator).to(x.device)
        noise = (counts / vals - img) * level
    return (x + noise).clamp(0.0, 1.0)


_YUV = np.array([[65.481, 128.553, 24.966], [-37.797, -74.203, 112.0], [112.0, -93.786, -18.214]])
_YUV_OFFSET = np.array([16.0, 128.0, 128.0])


def _rgb_to_yuv420(frames: np.ndarray) -> np.ndarray:
    """``[T, H, W, 3]`` uint8 RGB (H, W even) -> PyAV's packed ``yuv420p`` arrays ``[T, 3H/2, W]`` (BT.601, limited
    range; chroma: mean of each 2x2 block)."""
    t, h, w, _ = frames.shape
    yuv = frames.astype(np.float64) / 255.0 @ _YUV.T + _YUV_OFFSET
    chroma = yuv[..., 1:].reshape(t, h // 2, 2, w // 2, 2, 2).mean(axis=(2, 4))
    planes = [yuv[..., 0].reshape(t, -1), chroma[..., 0].reshape(t, -1), chroma[..., 1].reshape(t, -1)]
    return np.clip(np.round(np.concatenate(planes, axis=1)), 0, 255).astype(np.uint8).reshape(t, h * 3 // 2, w)


def _yuv420_to_rgb(packed: np.ndarray) -> np.ndarray:
    """Inverse of :func:`_rgb_to_yuv420` (chroma upsampled bilinearly): ``[T, 3H/2, W]`` -> ``[T, H, W, 3]`` uint8."""
    t, h3, w = packed.shape
    h = h3 * 2 // 3
    flat = packed.reshape(t, -1).astype(np.float64)
    y = flat[:, : h * w].reshape(t, h, w)
    chroma = flat[:, h * w:].reshape(t, 2, h // 2, w // 2)
    up = F.interpolate(torch.from_numpy(chroma), size=(h, w), mode="bilinear", align_corners=False).numpy()
    yuv = np.stack([y, up[:, 0], up[:, 1]], axis=-1) - _YUV_OFFSET
    rgb = yuv @ np.linalg.inv(_YUV).T
    return np.clip(np.round(rgb * 255.0), 0, 255).astype(np.uint8)


CODEC_FPS = 25
MIN_BIT_RATE = 1000  # bits/s: libx264 and libvpx take kbit/s and refuse 0


def codec_roundtrip(frames: np.ndarray, codec: str, bits_per_frame: float) -> np.ndarray:
    """Encode RGB uint8 ``frames [T, H, W, 3]`` with ``codec`` at ``bits_per_frame`` in memory, decode back.

    The stream runs at :data:`CODEC_FPS` fps with a target of ``bits_per_frame * fps`` bits/s, at least
    :data:`MIN_BIT_RATE` (so at least 40 bits per frame; tiny frames overshoot such targets anyway). Single-threaded
    with bit-exact flags, encoder defaults otherwise (x264 ``medium``, libvpx ``good``), so the output depends only
    on the input and the arguments. Odd sizes are padded to even by edge replication for 4:2:0 and cropped back.
    """
    if codec not in _DECODERS:
        raise ValueError(f"codec must be one of {sorted(_DECODERS)}, got {codec!r}")
    t, h, w, _ = frames.shape
    he, we = h + h % 2, w + w % 2
    if (he, we) != (h, w):
        frames = np.pad(frames, ((0, 0), (0, he - h), (0, we - w), (0, 0)), mode="edge")
    enc = av.CodecContext.create(codec, "w")
    enc.width, enc.height, enc.pix_fmt = we, he, "yuv420p"
    enc.time_base = fractions.Fraction(1, CODEC_FPS)
    enc.framerate = fractions.Fraction(CODEC_FPS, 1)
    enc.bit_rate = max(MIN_BIT_RATE, round(bits_per_frame * CODEC_FPS))
    enc.thread_count = 1
    enc.flags |= av.codec.context.Flags.bitexact
    packets = []
    yuv = _rgb_to_yuv420(frames)
    for i in range(t):
        vf = av.VideoFrame.from_ndarray(yuv[i], format="yuv420p")
        vf.pts = i
        packets.extend(enc.encode(vf))
    packets.extend(enc.encode(None))
    dec = av.CodecContext.create(_DECODERS[codec], "r")
    dec.thread_count = 1
    decoded = []
    for packet in [*packets, None]:
        for frame in dec.decode(packet):
            if frame.format.name != "yuv420p":
                frame = frame.reformat(format="yuv420p")
            decoded.append(frame.to_ndarray())
    if len(decoded) != t:
        raise RuntimeError(f"{codec}: encoded {t} frames but decoded {len(decoded)}")
    return _yuv420_to_rgb(np.stack(decoded))[:, :h, :w]


def _codec_step(x: torch.Tensor, codec: str, bits_per_frame: float) -> torch.Tensor:
    u8 = torch.round(x.clamp(0.0, 1.0) * 255.0).to(torch.uint8).permute(0, 2, 3, 1).cpu().numpy()
    out = codec_roundtrip(np.ascontiguousarray(u8), codec, bits_per_frame)
    return torch.from_numpy(out).to(x.device).permute(0, 3, 1, 2).to(x.dtype) / 255.0


# ----------------------------------------------------------------------------- the chain


def degrade_clip(x: torch.Tensor, cfg: RealESRGANConfig, lq_size: tuple[int, int], generator: torch.Generator | None,
                 gen_device: torch.device) -> tuple[torch.Tensor, VideoDegradeParams]:
    """Degrade one clip ``x [T, 3, H, W]`` (unit floats) to ``[T, 3, *lq_size]`` (unit floats on the 8-bit grid).

    Draws :data:`DRAWS_PER_CLIP` uniforms, then the noise, from ``generator`` (on ``gen_device``).
    """
    from lib.video.degrade import jpeg_roundtrip as jpeg  # degrade imports this module: import here, not at the top

    draws = torch.rand(DRAWS_PER_CLIP, generator=generator, device=gen_device, dtype=torch.float64).tolist()
    p = sample_params(cfg, draws)
    _t, _c, h, w = x.shape
    lh, lw = lq_size
    # first stage
    x = filter2d(x, kernel_from_params(p.kernel1))
    x = _resize(x, (max(1, int(h * p.resize1)), max(1, int(w * p.resize1))), p.mode1)
    x = add_noise(x, p.noise1, p.noise1_level, p.gray1, generator, gen_device)
    x = jpeg(x.clamp(0.0, 1.0), p.jpeg1)
    # second stage
    if p.kernel2 is not None:
        x = filter2d(x, kernel_from_params(p.kernel2))
    x = _resize(x, (max(1, int(lh * p.resize2)), max(1, int(lw * p.resize2))), p.mode2)
    x = add_noise(x, p.noise2, p.noise2_level, p.gray2, generator, gen_device)

    def resize_and_sinc(y: torch.Tensor) -> torch.Tensor:
        y = _resize(y, (lh, lw), p.final_mode)
        return filter2d(y, kernel_from_params(p.final_sinc)) if p.final_sinc is not None else y

    if p.sinc_first:
        x = jpeg(resize_and_sinc(x).clamp(0.0, 1.0), p.jpeg2)
    else:
        x = resize_and_sinc(jpeg(x.clamp(0.0, 1.0), p.jpeg2))
    x = torch.clamp(torch.round(x * 255.0), 0, 255) / 255.0
    if p.codec is not None:
        x = _codec_step(x, p.codec, p.codec_bitrate * lh * lw / CODEC_REFERENCE_AREA)
    return x, p


__all__ = [
    "CODECS",
    "CODEC_FPS",
    "CODEC_REFERENCE_AREA",
    "DRAWS_PER_CLIP",
    "KERNEL_KINDS",
    "KernelParams",
    "RealESRGANConfig",
    "VideoDegradeParams",
    "add_noise",
    "codec_roundtrip",
    "degrade_clip",
    "filter2d",
    "gaussian_kernel",
    "generalized_gaussian_kernel",
    "kernel_from_params",
    "mesh_grid",
    "plateau_kernel",
    "sample_params",
    "sinc_kernel",
]
