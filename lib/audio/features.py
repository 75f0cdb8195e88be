"""Log-mel features (numpy and batched torch), Griffin-Lim mel inversion, and the log-spectral distance.

Conventions (one place, so the VAE, its data and its evaluation agree):

* magnitude mel by default (``power=1``: mel filterbank applied to |STFT|), the HiFi-GAN convention;
  ``power=2`` gives a power mel. Natural log with a floor: ``log(max(mel, log_floor))``.
* STFT: periodic Hann window of ``n_fft``, ``center=True`` with zero padding, so a wave of ``n`` samples
  has ``1 + n // hop_length`` frames and frame ``t`` is centred on sample ``t * hop_length``.
* filterbank: ``librosa.filters.mel`` (Slaney mel scale and area normalisation), shared by both versions.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Annotated

import librosa
import numpy as np
import torch
from annotated_types import Ge, Gt
from torch import nn

from lib.config import Checked


@dataclass(frozen=True)
class MelConfig(Checked):
    """``mel`` params: STFT and mel filterbank settings of every log-mel in the audio pipeline."""

    sample_rate: Annotated[int, Ge(1)] = 16000
    n_fft: Annotated[int, Ge(1)] = 1024
    hop_length: Annotated[int, Ge(1)] = 256  # <= n_fft
    n_mels: Annotated[int, Ge(1)] = 64  # <= n_fft // 2 + 1
    fmin: Annotated[float, Ge(0)] = 0.0
    fmax: float | None = None  # None: sample_rate / 2
    power: float = 1.0  # 1: magnitude mel; 2: power mel (a float, so not a Literal)
    log_floor: Annotated[float, Gt(0)] = 1e-5

    def __post_init__(self) -> None:
        super().__post_init__()
        if self.hop_length > self.n_fft:
            raise ValueError(f"need 1 <= hop_length <= n_fft, got hop_length={self.hop_length}, n_fft={self.n_fft}")
        if self.n_mels > self.n_fft // 2 + 1:
            raise ValueError(f"n_mels must be in 1..n_fft//2+1 = {self.n_fft // 2 + 1}, got {self.n_mels}")
        top = self.fmax if self.fmax is not None else self.sample_rate / 2
        if not self.fmin < top <= self.sample_rate / 2:
            raise ValueError(f"need 0 <= fmin < fmax <= sample_rate/2, got fmin={self.fmin}, fmax={self.fmax}")
        if self.power not in (1.0, 2.0):
            raise ValueError(f"power must be 1 (magnitude) or 2 (power), got {self.power}")


def n_frames(n_samples: int, hop_length: int) -> int:
    """Return the number of frames of a centred STFT of ``n_samples``: ``1 + n_samples // hop_length``."""
    return 1 + n_samples // hop_length


def mel_filterbank(cfg: MelConfig) -> np.ndarray:
    """Return the ``[n_mels, n_fft // 2 + 1]`` float32 mel filterbank of ``cfg``."""
    return librosa.filters.mel(sr=cfg.sample_rate, n_fft=cfg.n_fft, n_mels=cfg.n_mels, fmin=cfg.fmin,
                               fmax=cfg.fmax).astype(np.float32)


def mel_spectrogram(wave: np.ndarray, cfg: MelConfig) -> np.ndarray:
    """Return the (linear) mel spectrogram ``[n_mels, frames]`` of a 1-D wave."""
    return librosa.feature.melspectrogram(y=np.asarray(wave, dtype=np.float32), sr=cfg.sample_rate, n_fft=cfg.n_fft,
                                          hop_length=cfg.hop_length, window="hann", center=True, pad_mode="constant",
                                          power=cfg.power, n_mels=cfg.n_mels, fmin=cfg.fmin, fmax=cfg.fmax)


def log_mel(wave: np.ndarray, cfg: MelConfig = MelConfig()) -> np.ndarray:
    """Return ``log(max(mel, log_floor))`` of a 1-D wave as float32 ``[n_mels, 1 + len // hop_length]``."""
    if np.ndim(wave) != 1:
        raise ValueError(f"log_mel takes a 1-D wave, got shape {np.shape(wave)}; use LogMel for batches")
    return np.log(np.maximum(mel_spectrogram(wave, cfg), cfg.log_floor)).astype(np.float32)


class LogMel(nn.Module):
    """Batched log-mel on any device: ``[B, samples]`` (or ``[samples]``) -> ``[B, n_mels, frames]``.

    Same STFT, filterbank and floor as :func:`log_mel`, so features computed on GPU in a training step
    match those computed with librosa elsewhere (to float32 rounding).
    """

    def __init__(self, cfg: MelConfig = MelConfig()):
        super().__init__()
        self.cfg = cfg
        self.register_buffer("fb", torch.from_numpy(mel_filterbank(cfg)), persistent=False)
        self.register_buffer("window", torch.hann_window(cfg.n_fft, periodic=True), persistent=False)

    def forward(self, wave: torch.Tensor) -> torch.Tensor:
        """Return the log-mel of ``wave`` (float32 STFT whatever the input dtype, for a stable log)."""
        squeeze = wave.dim() == 1
        x = wave.unsqueeze(0) if squeeze else wave
        spec = torch.stft(x.float(), self.cfg.n_fft, hop_length=self.cfg.hop_length, win_length=self.cfg.n_fft,
                          window=self.window, center=True, pad_mode="constant", return_complex=True).abs()
        if self.cfg.power != 1.0:
            spec = spec.pow(self.cfg.power)
        out = torch.log(torch.clamp(torch.matmul(self.fb, spec), min=self.cfg.log_floor))
        return out[0] if squeeze else out


def mel_to_audio(logmel: np.ndarray, cfg: MelConfig = MelConfig(), *, n_iter: int = 32,
                 length: int | None = None, seed: int | None = None) -> np.ndarray:
    """Invert a log-mel to a wave with Griffin-Lim (librosa): the "mel inversion" baseline of evaluation.

    The mel is mapped back to a linear spectrogram by non-negative least squares, then ``n_iter`` rounds
    of Griffin-Lim estimate phase (starting from a random phase drawn from ``seed``: give one for
    reproducible scores); ``length`` trims or pads the result to a known sample count.
    """
    stft = librosa.feature.inverse.mel_to_stft(np.exp(np.asarray(logmel, dtype=np.float32)), sr=cfg.sample_rate,
                                               n_fft=cfg.n_fft, power=cfg.power, fmin=cfg.fmin, fmax=cfg.fmax)
    wave = librosa.griffinlim(stft, n_iter=n_iter, hop_length=cfg.hop_length, n_fft=cfg.n_fft, window="hann",
                              center=True, pad_mode="constant", length=length, random_state=seed)
    return wave.astype(np.float32)


def log_spectral_distance(ref_wave: np.ndarray, est_wave: np.ndarray, *, n_fft: int = 1024, hop_length: int = 256,
                          eps: float = 1e-10) -> float:
    """Return the log-spectral distance in dB between two 1-D waves, cut to the shorter length.

    ``LSD = mean_t sqrt(mean_f (10 log10(P_ref + eps) - 10 log10(P_est + eps))^2)`` with ``P = |STFT|^2``
    (Hann window, centred frames). 0 for identical waves; a gain of ``g`` gives ``|20 log10 g|`` where the
    reference has energy well above ``eps``.
    """
    ref = np.asarray(ref_wave, dtype=np.float64)
    est = np.asarray(est_wave, dtype=np.float64)
    if ref.ndim != 1 or est.ndim != 1:
        raise ValueError(f"log_spectral_distance takes 1-D waves, got shapes {ref.shape} and {est.shape}")
    n = min(ref.size, est.size)
    if n == 0:
        raise ValueError("log_spectral_distance needs non-empty waves")
    p_ref = np.abs(librosa.stft(ref[:n], n_fft=n_fft, hop_length=hop_length, center=True, pad_mode="constant")) ** 2
    p_est = np.abs(librosa.stft(est[:n], n_fft=n_fft, hop_length=hop_length, center=True, pad_mode="constant")) ** 2
    diff = 10.0 * np.log10(p_ref + eps) - 10.0 * np.log10(p_est + eps)
    return float(np.mean(np.sqrt(np.mean(diff ** 2, axis=0))))
