"""VAE losses: closed-form KL with warm-up, reconstruction, VGG perceptual, and multi-resolution spectral terms.

Reductions are means (per pixel, per latent element) so the balance between terms does not change with
clip size or latent size; ``beta`` therefore weighs a per-element KL against a per-pixel reconstruction.

Like :class:`lib.losses.gan.APTLoss`, :class:`VideoVAELoss` and :class:`AudioVAELoss` return
``(loss, stats)``; the caller runs backward and the optimiser step.

Spectral terms:

- :func:`multi_resolution_stft_loss` works on waveforms (Parallel WaveGAN / auraloss definition).
- The audio VAE reconstructs log-mel frames, not waveforms, and there is no vocoder here, so an STFT of its
  output does not exist. :class:`AudioVAELoss` instead applies the same formula (spectral convergence +
  log-magnitude L1) to the mel magnitudes ``exp(log-mel)`` at several time resolutions, made by average
  pooling the frames over ``stft_pools`` (1 = the frames themselves). Spectral convergence is a relative
  error on linear magnitudes, so it weighs loud frames/bins more than the log-domain reconstruction does;
  pooling adds a coarser, energy-envelope view. It is called ``stft`` in the weights only to mirror the
  waveform term; it is not an STFT. See :func:`multi_resolution_mel_loss`.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Annotated, Literal

import torch
import torch.nn.functional as F
from annotated_types import Ge, MinLen
from torch import nn

from lib.config import Checked
from lib.models.vgg import DEFAULT_LAYERS, VGG16_LAYERS, load_vgg16_features

# Upper bound on log-mel values before exp(): exp(20) ~ 5e8, far above real mel energies; keeps an
# untrained decoder's outliers from turning the spectral term into inf.
MAX_LOG_MAGNITUDE = 20.0


# --------------------------------------------------------------------------------------------------- KL


def kl_divergence(mean: torch.Tensor, logvar: torch.Tensor) -> torch.Tensor:
    """Return KL(N(mean, exp(logvar)) || N(0, 1)) per element: ``0.5 * (mean² + exp(logvar) - 1 - logvar)``."""
    return 0.5 * (mean.square() + logvar.exp() - 1.0 - logvar)


def reduce_kl(kl: torch.Tensor, reduction: str = "mean") -> torch.Tensor:
    """Reduce a per-element KL ``[B, ...]``.

    - ``"mean"``: mean over every latent element (what the VAE losses here use; size independent);
    - ``"sum"``: sum over a sample's latent elements, mean over the batch: the per-sample KL in nats,
      the ELBO's KL term.
    """
    if reduction == "mean":
        return kl.mean()
    if reduction == "sum":
        return kl.flatten(1).sum(1).mean()
    raise ValueError(f"reduce_kl: reduction must be 'mean' or 'sum', got {reduction!r}")


def kl_weight(step: int, beta: float, warmup_steps: int) -> float:
    """Return the KL weight at optimiser step ``step``: linear from 0 at step 0 to ``beta`` at ``warmup_steps``.

    ``warmup_steps = 0`` means no warm-up (``beta`` from the start). Warm-up lets the decoder learn to use
    the latent before the KL pulls the posterior onto the prior (posterior-collapse mitigation).
    """
    if step < 0 or warmup_steps < 0 or beta < 0:
        raise ValueError(f"kl_weight: step, beta and warmup_steps must be >= 0, got {step}, {beta}, {warmup_steps}")
    if warmup_steps == 0:
        return float(beta)
    return float(beta) * min(1.0, step / warmup_steps)


def _recon(kind: str, x_hat: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
    return F.l1_loss(x_hat, x) if kind == "l1" else F.mse_loss(x_hat, x)


# --------------------------------------------------------------------------------------------------- video


@dataclass(frozen=True)
class VideoVAELossWeights(Checked):
    """Video VAE loss: reconstruction kind, KL weight and warm-up, VGG perceptual weight and weights file."""

    recon: Literal["l1", "l2"] = "l1"  # mean per pixel
    beta: Annotated[float, Ge(0)] = 1e-4  # KL weight (KL is a mean per latent element)
    kl_warmup_steps: Annotated[int, Ge(0)] = 0
    perceptual: Annotated[float, Ge(0)] = 0.0  # 0 turns the VGG term off (and nothing is loaded)
    perceptual_weights: str | None = None  # torchvision vgg16 state dict; None = torch hub cache
    perceptual_layers: tuple[str, ...] = DEFAULT_LAYERS  # VGG16 ReLU outputs compared (lib.models.vgg.VGG16_LAYERS)

    def __post_init__(self) -> None:
        super().__post_init__()
        unknown = [name for name in self.perceptual_layers if name not in VGG16_LAYERS]
        if unknown or not self.perceptual_layers:
            raise ValueError(f"perceptual_layers: unknown or empty {unknown or []}; "
                             f"choose from {list(VGG16_LAYERS)}")


def perceptual_distance(vgg: nn.Module, x_hat: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
    """Return the mean over layers of the mean L1 distance between VGG features of ``x_hat`` and ``x``.

    Videos ``[B, 3, T, H, W]`` are folded to frames ``[B*T, 3, H, W]``. L1, not LPIPS's normalised L2 with
    learned per-channel weights: those weights are a second download with their own license. The target
    side runs without a graph; gradients reach ``x_hat`` only.
    """
    if x.ndim == 5:
        x, x_hat = (v.transpose(1, 2).flatten(0, 1) for v in (x, x_hat))
    with torch.no_grad():
        target = vgg(x)
    feats = vgg(x_hat)
    return torch.stack([F.l1_loss(f, t) for f, t in zip(feats, target, strict=False)]).mean()


def _recon_kl(who: str, prefix: str, recon_kind: str, beta: float, warmup_steps: int, x: torch.Tensor,
              x_hat: torch.Tensor, mean: torch.Tensor, logvar: torch.Tensor,
              step: int) -> tuple[torch.Tensor, dict[str, float]]:
    """The part every VAE loss shares: ``recon + kl_weight(step) * KL`` (KL per latent element) and its stats."""
    if x.shape != x_hat.shape:
        raise ValueError(f"{who}: x_hat is {list(x_hat.shape)} but x is {list(x.shape)}")
    recon = _recon(recon_kind, x_hat, x)
    kl = reduce_kl(kl_divergence(mean, logvar), "mean")
    weight = kl_weight(step, beta, warmup_steps)
    stats = {f"{prefix}/recon": recon.item(), f"{prefix}/kl": kl.item(), f"{prefix}/kl_weight": weight,
             f"{prefix}/logvar": logvar.detach().mean().item()}
    return recon + weight * kl, stats


class VideoVAELoss(nn.Module):
    """``recon(x_hat, x) + kl_weight(step) * KL + perceptual * VGG-L1``.

    Call as ``loss_fn(x, x_hat, mean, logvar, step)`` with videos ``[B, C, T, H, W]`` in [-1, 1].

    The VGG is loaded at construction when ``perceptual > 0``, so missing weights fail before training starts
    (:class:`lib.models.vgg.PerceptualWeightsMissing`); it is a submodule, so ``.to(device)`` moves it.
    """

    def __init__(self, weights: VideoVAELossWeights = VideoVAELossWeights()) -> None:
        super().__init__()
        self.weights = weights
        self.vgg = (load_vgg16_features(weights.perceptual_weights, weights.perceptual_layers)
                    if weights.perceptual > 0 else None)

    def forward(self, x: torch.Tensor, x_hat: torch.Tensor, mean: torch.Tensor, logvar: torch.Tensor,
                step: int) -> tuple[torch.Tensor, dict[str, float]]:
        """Return the total loss and float stats (``vae/*``) for optimiser step ``step``."""
        w = self.weights
        loss, stats = _recon_kl("VideoVAELoss", "vae", w.recon, w.beta, w.kl_warmup_steps, x, x_hat, mean, logvar, step)
        if self.vgg is not None:
            if x.shape[1] != 3:
                raise ValueError(f"VideoVAELoss: the perceptual term needs RGB (3 channels), got {x.shape[1]}; "
                                 f"set perceptual: 0")
            perc = perceptual_distance(self.vgg, x_hat, x)
            loss = loss + w.perceptual * perc
            stats["vae/perceptual"] = perc.item()
        stats["vae/loss"] = loss.item()
        return loss, stats


# --------------------------------------------------------------------------------------------------- spectral


def spectral_terms(x_mag: torch.Tensor, y_mag: torch.Tensor, eps: float = 1e-7) -> tuple[torch.Tensor, torch.Tensor]:
    """Return ``(spectral convergence, log-magnitude L1)`` of prediction magnitudes ``x_mag`` vs target ``y_mag``.

    ``SC = ||y - x||_F / ||y||_F`` over the whole batch (auraloss); ``mag = mean |log y - log x|``.
    Magnitudes must be > 0 (callers floor them).
    """
    sc = torch.linalg.vector_norm(y_mag - x_mag) / torch.linalg.vector_norm(y_mag).clamp_min(eps)
    mag = F.l1_loss(torch.log(x_mag), torch.log(y_mag))
    return sc, mag


def stft_magnitude(x: torch.Tensor, fft_size: int, hop_size: int, win_length: int,
                   eps: float = 1e-7) -> torch.Tensor:
    """Return ``sqrt(max(|STFT(x)|², eps))`` ``[N, fft_size//2 + 1, frames]`` of waveforms ``[N, L]``.

    Hann window (periodic, torch's default), ``center=True`` with reflect padding. The floor keeps log and the
    gradient of sqrt finite in silence.
    """
    window = torch.hann_window(win_length, device=x.device, dtype=x.dtype)
    spec = torch.stft(x, fft_size, hop_length=hop_size, win_length=win_length, window=window, center=True,
                      pad_mode="reflect", return_complex=True)
    return torch.sqrt((spec.real.square() + spec.imag.square()).clamp_min(eps))


def multi_resolution_stft_loss(x: torch.Tensor, y: torch.Tensor,
                               fft_sizes: tuple[int, ...] = (512, 1024, 2048),
                               hop_sizes: tuple[int, ...] | None = None,
                               win_lengths: tuple[int, ...] | None = None,
                               eps: float = 1e-7) -> torch.Tensor:
    """Return ``mean_r [SC_r + logmag_r]`` between prediction ``x`` and target ``y`` waveforms.

    Waveforms are ``[L]``, ``[B, L]`` or ``[B, C, L]`` (leading dims are folded into the batch).
    ``hop_sizes`` defaults to ``fft_size // 4`` and ``win_lengths`` to ``fft_size``. The defaults suit
    ~1 s at 16-48 kHz; reflect padding needs ``L > fft_size // 2``, so pass smaller ``fft_sizes`` for short
    clips (e.g. ``(64, 128, 256)`` for a few hundred samples).
    """
    if x.shape != y.shape:
        raise ValueError(f"multi_resolution_stft_loss: x is {list(x.shape)} but y is {list(y.shape)}")
    hop_sizes = tuple(n // 4 for n in fft_sizes) if hop_sizes is None else tuple(hop_sizes)
    win_lengths = tuple(fft_sizes) if win_lengths is None else tuple(win_lengths)
    if not (len(fft_sizes) == len(hop_sizes) == len(win_lengths) >= 1):
        raise ValueError(f"multi_resolution_stft_loss: fft_sizes, hop_sizes and win_lengths need the same non-zero "
                         f"length, got {len(fft_sizes)}, {len(hop_sizes)}, {len(win_lengths)}")
    length = x.shape[-1]
    if length <= max(fft_sizes) // 2:
        raise ValueError(f"multi_resolution_stft_loss: signal of {length} samples is too short for fft_size "
                         f"{max(fft_sizes)} (reflect padding needs > fft_size // 2); pass smaller fft_sizes")
    x2, y2 = x.reshape(-1, length), y.reshape(-1, length)
    total = x.new_zeros(())
    for n_fft, hop, win in zip(fft_sizes, hop_sizes, win_lengths, strict=False):
        if win > n_fft:
            raise ValueError(f"multi_resolution_stft_loss: win_length {win} > fft_size {n_fft}")
        sc, mag = spectral_terms(stft_magnitude(x2, n_fft, hop, win, eps), stft_magnitude(y2, n_fft, hop, win, eps),
                                 eps)
        total = total + sc + mag
    return total / len(fft_sizes)


def multi_resolution_mel_loss(logmel_hat: torch.Tensor, logmel: torch.Tensor, pools: tuple[int, ...] = (1, 2, 4),
                              eps: float = 1e-7) -> torch.Tensor:
    """Return ``mean_r [SC_r + logmag_r]`` on mel magnitudes ``exp(log-mel)`` average-pooled over time by ``r``.

    ``logmel*`` are ``[B, n_mels, frames]`` natural-log mel energies, as ``lib.audio.features`` makes them
    (magnitude or power; with power the log term is twice the magnitude's, and SC weighs loud bins more).
    Each pooling ``r`` averages ``r`` consecutive frames (a trailing partial window is averaged over what is
    there), standing in for the longer analysis windows of the waveform loss.
    Log-mels are clamped to ``<= MAX_LOG_MAGNITUDE`` before ``exp``.
    """
    if logmel_hat.shape != logmel.shape or logmel.ndim != 3:
        raise ValueError(f"multi_resolution_mel_loss: need two [B, n_mels, frames] tensors of one shape, got "
                         f"{list(logmel_hat.shape)} and {list(logmel.shape)}")
    if not pools or min(pools) < 1:
        raise ValueError(f"multi_resolution_mel_loss: pools must be non-empty and >= 1, got {pools}")
    mag_hat = logmel_hat.clamp(max=MAX_LOG_MAGNITUDE).exp()
    mag = logmel.clamp(max=MAX_LOG_MAGNITUDE).exp()
    total = logmel.new_zeros(())
    for r in pools:
        if r > 1:
            mag_hat_r = F.avg_pool1d(mag_hat, r, r, ceil_mode=True)
            mag_r = F.avg_pool1d(mag, r, r, ceil_mode=True)
        else:
            mag_hat_r, mag_r = mag_hat, mag
        sc, lm = spectral_terms(mag_hat_r.clamp_min(eps), mag_r.clamp_min(eps), eps)
        total = total + sc + lm
    return total / len(pools)


# --------------------------------------------------------------------------------------------------- audio


@dataclass(frozen=True)
class AudioVAELossWeights(Checked):
    """Audio VAE loss: log-mel reconstruction kind, KL weight and warm-up, multi-resolution spectral weight."""

    recon: Literal["l1", "l2"] = "l1"  # on log-mel, mean per bin
    beta: Annotated[float, Ge(0)] = 1e-4
    kl_warmup_steps: Annotated[int, Ge(0)] = 0
    stft: Annotated[float, Ge(0)] = 1.0  # weight of multi_resolution_mel_loss (the log-mel analogue of MR-STFT)
    # time poolings (frames) of the spectral term
    stft_pools: Annotated[tuple[Annotated[int, Ge(1)], ...], MinLen(1)] = (1, 2, 4)


class AudioVAELoss:
    """``recon(log-mel) + kl_weight(step) * KL + stft * multi_resolution_mel_loss``; see the module docstring.

    Call as ``loss_fn(x, x_hat, mean, logvar, step)`` with ``x``, ``x_hat`` log-mels ``[B, n_mels, frames]``.
    """

    def __init__(self, weights: AudioVAELossWeights = AudioVAELossWeights()) -> None:
        self.weights = weights

    def __call__(self, x: torch.Tensor, x_hat: torch.Tensor, mean: torch.Tensor, logvar: torch.Tensor,
                 step: int) -> tuple[torch.Tensor, dict[str, float]]:
        """Return the total loss and float stats (``avae/*``) for optimiser step ``step``."""
        w = self.weights
        loss, stats = _recon_kl("AudioVAELoss", "avae", w.recon, w.beta, w.kl_warmup_steps, x, x_hat, mean, logvar,
                                step)
        if w.stft > 0:
            spec = multi_resolution_mel_loss(x_hat, x, w.stft_pools)
            loss = loss + w.stft * spec
            stats["avae/stft"] = spec.item()
        stats["avae/loss"] = loss.item()
        return loss, stats
