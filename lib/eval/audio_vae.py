"""Evaluation of a trained audio VAE on held-out validation clips, against a mel baseline of the same size.

Clips: the first ``eval_audio_vae.clips`` clips (id order; null: all) of the ``audio`` folder's validation
split, whole, at ``train_audio_vae.mel.sample_rate``. For each clip, with ``x`` its log-mel (``mel`` settings of
``train_audio_vae``, ``n_mels x F`` frames):

- **VAE**: ``decode(mean)`` of the posterior mean (no sampling), cropped to ``F`` frames.
- **baseline** at the same compression: the mel energies average-pooled to ``bands`` mel bands and
  ``ceil(F / time_pool)`` frames, i.e. ``bands * frames'`` numbers, the same count as the latent's
  ``latent_channels * ceil(F / time_compression)`` (default ``time_pool = time_compression``, so
  ``bands = latent_channels``: with the defaults 8 bands at a 4x coarser hop, 125 numbers per second for both);
  pooling averages linear mel magnitudes (as a coarser filterbank and hop would), then takes the log; it is
  decoded by bilinear interpolation of those log values back to ``n_mels x F``.
- **mel_inversion**: ``x`` itself, uncompressed: how much Griffin-Lim alone loses (a floor for both).

Every candidate log-mel is floored at ``log(mel.log_floor)`` (no real feature lies below it) and inverted to a
waveform by the same mel inversion (non-negative least squares to a linear spectrogram, then
``griffin_lim_iters`` rounds of Griffin-Lim with a seeded random initial phase: deterministic, identical for
every candidate of a clip). Scores, averaged over clips:

- ``lsd_db``: log-spectral distance (:func:`lib.audio.features.log_spectral_distance`, ``n_fft`` and hop of
  ``mel``) between the inverted waveform and the **original waveform**;
- ``mel_l1``: mean ``|x_hat - x|`` of the log-mels (natural log), no inversion noise;
- ``mel_lsd_db``: the LSD formula on the log-mels themselves, in dB (``20 / (power * ln 10)`` per nat);
- ``kl_per_element``: mean KL(q(z|x) || N(0, I)) per latent element (nats), and ``kl_bits_per_second``, the
  posterior's total KL per second of audio in bits (an upper bound on the information the latent carries).
"""
from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Annotated, Any, Literal

import numpy as np
import torch
import torch.nn.functional as F
from annotated_types import Ge

from lib.audio.features import LogMel, MelConfig, log_spectral_distance, mel_to_audio
from lib.audio.folder import AudioFolderConfig, load_audio, scan_audio_folder
from lib.config import Checked, ConfigError, load_section, read_params
from lib.eval import audio_not_evaluated
from lib.io import DataError
from lib.losses.vae import kl_divergence
from lib.models.audio_vae import AudioVAE
from lib.train.audio_vae import AudioVAETrainConfig, check_sample_rate, from_section, load_vae

SPECTROGRAM_PNG = "audio_vae_spectrograms.png"


@dataclass(frozen=True)
class EvalAudioVAEConfig(Checked):
    """The ``eval_audio_vae`` section: which clips and weights, the inversion, the baseline's shape, the figure."""

    clips: Annotated[int, Ge(1)] | None = None  # first N validation clips (id order); null: all of them
    weights: Literal["ema", "raw"] = "ema"  # which of final/{ema,raw}/vae.safetensors
    griffin_lim_iters: Annotated[int, Ge(1)] = 32
    seed: int = 0  # Griffin-Lim's initial phase of clip i is drawn with seed + i
    baseline_time_pool: Annotated[int, Ge(1)] | None = None  # frames per baseline frame; null: model.time_compression
    spectrogram_clips: Annotated[int, Ge(1)] = 3  # rows of the PNG


@dataclass(frozen=True)
class Baseline:
    """The same-size mel baseline: ``bands`` mel bands, one frame per ``time_pool`` mel frames."""

    bands: int
    time_pool: int

    def describe(self, cfg: AudioVAETrainConfig) -> str:
        hop_ms = 1000 * cfg.mel.hop_length * self.time_pool / cfg.mel.sample_rate
        return (f"{self.bands} mel bands x 1 frame per {self.time_pool} frames (hop {hop_ms:g} ms), pooled from the "
                f"{cfg.mel.n_mels}-band log-mel in linear magnitude, upsampled back bilinearly in log")


def baseline_shape(cfg: AudioVAETrainConfig, time_pool: int | None) -> Baseline:
    """Return the baseline whose numbers per second equal the latent's:
    ``bands / time_pool == latent_channels / time_compression``; ConfigError when ``bands`` is not a whole
    number in ``1..n_mels``."""
    tc, latent = cfg.model.time_compression, cfg.model.latent_channels
    pool = tc if time_pool is None else time_pool
    bands, rest = divmod(latent * pool, tc)
    if rest or not 1 <= bands <= cfg.mel.n_mels:
        raise ConfigError(f"eval_audio_vae.baseline_time_pool: {pool} gives {latent * pool / tc:g} baseline mel bands "
                          f"(latent_channels {latent} x pool / time_compression {tc}); pick a pool that makes it a "
                          f"whole number in 1..{cfg.mel.n_mels} (null uses time_compression)")
    return Baseline(bands, pool)


# ----------------------------------------------------------------------------- representations


def floor_log_mel(logmel: torch.Tensor, mel: MelConfig) -> torch.Tensor:
    """Clamp a log-mel to ``>= log(log_floor)``, the lowest value a real feature can take."""
    return logmel.clamp_min(math.log(mel.log_floor))


def baseline_log_mel(logmel: torch.Tensor, baseline: Baseline) -> tuple[torch.Tensor, torch.Tensor]:
    """Return ``(code, decoded)`` for a log-mel ``[n_mels, F]``: ``code`` ``[bands, ceil(F / time_pool)]`` is the
    log of the average-pooled mel magnitudes, ``decoded`` ``[n_mels, F]`` its bilinear upsampling."""
    n_mels, frames = logmel.shape
    size = (baseline.bands, -(-frames // baseline.time_pool))
    code = F.adaptive_avg_pool2d(logmel.double().exp()[None, None], size).log()
    decoded = F.interpolate(code, size=(n_mels, frames), mode="bilinear", align_corners=False)
    return code[0, 0].float(), decoded[0, 0].float()


@torch.no_grad()
def vae_log_mel(vae: AudioVAE, logmel: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Return ``(decoded [n_mels, F], kl [latent_channels, F'])``: the posterior mean decoded, and the KL of
    every latent element."""
    mean, logvar = vae.encode(logmel[None])
    return vae.decode(mean, num_frames=logmel.shape[1])[0], kl_divergence(mean, logvar)[0]


def mel_distances(estimate: torch.Tensor, target: torch.Tensor, mel: MelConfig) -> dict[str, float]:
    """Return ``mel_l1`` (nats) and ``mel_lsd_db`` between two log-mels ``[n_mels, F]``."""
    diff = (estimate.double() - target.double())
    db = 20.0 / (mel.power * math.log(10.0))
    return {"mel_l1": float(diff.abs().mean()), "mel_lsd_db": float((db * diff).square().mean(0).sqrt().mean())}


# ----------------------------------------------------------------------------- evaluation


def validation_clips(folder: AudioFolderConfig, sample_rate: int, clips: int | None) -> list[tuple[str, np.ndarray]]:
    """Return ``(id, wave)`` of the first ``clips`` validation clips of ``folder`` (all when None), whole."""
    files = scan_audio_folder(folder).files
    rows = files[files["split"] == "validation"]
    if rows.empty:
        raise DataError(f"{folder.root}: no validation clips (splits: {sorted(set(files['split']))}); check "
                        f"audio.split_fractions or the split file")
    rows = rows if clips is None else rows.iloc[:clips]
    return [(str(i), load_audio(p, sample_rate)) for i, p in zip(rows["id"], rows["abs_path"], strict=False)]


def evaluate(vae: AudioVAE, cfg: AudioVAETrainConfig, clips: list[tuple[str, np.ndarray]], baseline: Baseline, *,
             n_iter: int = 32, seed: int = 0) -> tuple[dict[str, Any], list[dict[str, Any]]]:
    """Score the VAE, the baseline and the uncompressed mel on ``clips``; return ``(metrics, examples)``.

    ``examples`` holds, per clip, its id and the three log-mels ``original``, ``vae``, ``baseline`` (for figures).
    """
    mel = cfg.mel
    to_mel = LogMel(mel)
    names = ("mel_inversion", "vae", "baseline")
    scores: dict[str, dict[str, list[float]]] = {n: {"lsd_db": [], "mel_l1": [], "mel_lsd_db": []} for n in names}
    kl_sum, kl_count, seconds = 0.0, 0, 0.0
    examples = []
    for k, (clip_id, wave) in enumerate(clips):
        with torch.no_grad():
            x = to_mel(torch.from_numpy(wave))
        decoded, kl = vae_log_mel(vae, x)
        kl_sum, kl_count = kl_sum + float(kl.double().sum()), kl_count + kl.numel()
        seconds += wave.size / mel.sample_rate
        candidates = {"mel_inversion": x, "vae": floor_log_mel(decoded, mel),
                      "baseline": floor_log_mel(baseline_log_mel(x, baseline)[1], mel)}
        for name, logmel in candidates.items():
            audio = mel_to_audio(logmel.numpy(), mel, n_iter=n_iter, length=wave.size, seed=seed + k)
            scores[name]["lsd_db"].append(log_spectral_distance(wave, audio, n_fft=mel.n_fft,
                                                                hop_length=mel.hop_length))
            for key, value in mel_distances(logmel, x, mel).items():
                scores[name][key].append(value)
        examples.append({"id": clip_id, "original": x, "vae": candidates["vae"], "baseline": candidates["baseline"]})
    metrics: dict[str, Any] = {name: {key: float(np.mean(v)) for key, v in s.items()} for name, s in scores.items()}
    metrics["vae"]["kl_per_element"] = kl_sum / kl_count
    metrics["vae"]["kl_bits_per_second"] = kl_sum / math.log(2.0) / seconds
    metrics["vae_lsd_gain_db"] = metrics["baseline"]["lsd_db"] - metrics["vae"]["lsd_db"]
    metrics["clips"], metrics["seconds"] = len(clips), round(seconds, 3)
    return metrics, examples


def spectrogram_png(path: str | Path, examples: list[Mapping[str, Any]], mel: MelConfig, clips: int) -> Path:
    """Write ``original | VAE | baseline`` log-mel spectrograms (dB, one colour scale per row) of the first
    ``clips`` examples; return the path."""
    from lib.report import new_figure, save_figure

    rows = examples[:clips]
    fig = new_figure(12, 2.4 * max(1, len(rows)))
    db = 20.0 / (mel.power * math.log(10.0))
    seconds_per_frame = mel.hop_length / mel.sample_rate
    for r, ex in enumerate(rows):
        top = float(ex["original"].max()) * db
        for c, (key, title) in enumerate((("original", "original"), ("vae", "VAE"), ("baseline", "baseline"))):
            ax = fig.add_subplot(len(rows), 3, 3 * r + c + 1)
            image = ex[key].numpy() * db
            ax.imshow(image, origin="lower", aspect="auto", cmap="magma", vmin=top - 80.0, vmax=top,
                      extent=(0, image.shape[1] * seconds_per_frame, 0, image.shape[0]))
            ax.set_title(f"{title} (clip {ex['id']})", fontsize=9)
            ax.set_xlabel("s", fontsize=8)
            if c == 0:
                ax.set_ylabel("mel band", fontsize=8)
            ax.tick_params(labelsize=7)
    return save_figure(fig, Path(path))


def render_section(metrics: Mapping[str, Any], png: str | None) -> str:
    """Return the markdown section of the audio VAE (a table of the three representations and the figure)."""
    m, fps = metrics, metrics["floats_per_second"]
    b = m["baseline"]
    rows = [("original log-mel, uncompressed", "mel_inversion", fps["mel"]),
            (f"VAE latent ({m['weights']} weights), decoded", "vae", fps["latent"]),
            (f"baseline: {b['bands']} mel bands, 1 frame per {b['time_pool']}", "baseline", fps["baseline"])]
    intro = (f"{m['clips']} held-out validation clips ({m['seconds']:.1f} s) of `{m['audio_root']}`. Every log-mel "
             f"is inverted with the same NNLS + Griffin-Lim ({m['griffin_lim_iters']} iterations, seeded); LSD is "
             f"measured against the original waveform. Mel L1 / mel LSD compare the log-mels directly (no inversion). "
             f"Baseline: {b['description']}.")
    lines = ["## Audio VAE", "", intro, "",
             "| representation | numbers / s | LSD (dB) | mel L1 (nats) | mel LSD (dB) |",
             "| --- | ---: | ---: | ---: | ---: |"]
    for label, key, count in rows:
        s = m[key]
        lines.append(f"| {label} | {count:g} | {s['lsd_db']:.3f} | {s['mel_l1']:.4f} | {s['mel_lsd_db']:.3f} |")
    verdict = "lower (better)" if m["vae_lsd_gain_db"] > 0 else "not lower"
    summary = (f"At {fps['latent']:g} numbers per second ({fps['mel'] / fps['latent']:g}x fewer than the log-mel), "
               f"the VAE's LSD is {verdict} than the same-size baseline's by {abs(m['vae_lsd_gain_db']):.3f} dB. "
               f"KL: {m['vae']['kl_per_element']:.4f} nats per latent element "
               f"({m['vae']['kl_bits_per_second']:.0f} bits per second of audio).")
    lines += ["", summary, ""]
    if png:
        lines += [f"![audio spectrograms]({png})", "", "Columns: original | VAE | baseline (log-mel, dB).", ""]
    return "\n".join(lines)


def evaluate_audio_vae(params_path: str | Path, report_dir: Path) -> tuple[dict, str]:
    """Evaluate the trained audio VAE of ``params_path`` (sections train_audio_vae, audio, eval_audio_vae);
    write the spectrogram PNG into ``report_dir``; return ``(metrics, markdown section)``. A null
    ``train_audio_vae`` section returns ``({"skipped": ...}, a section saying so)``.

    Weights: ``<train_audio_vae.out_dir>/final/{ema,raw}/vae.safetensors`` (``eval_audio_vae.weights``).
    """
    params_path, report_dir = Path(params_path), Path(report_dir)
    section = read_params(params_path).get("train_audio_vae")
    if section is None:  # as for the video trainers: a null section is not evaluated (e.g. a GPU video-only run)
        return audio_not_evaluated()
    cfg = from_section(section, f"{params_path}: train_audio_vae")
    folder = load_section(params_path, "audio", AudioFolderConfig)
    ev = load_section(params_path, "eval_audio_vae", EvalAudioVAEConfig)
    check_sample_rate(cfg, folder, str(params_path))
    baseline = baseline_shape(cfg, ev.baseline_time_pool)
    weights = Path(cfg.train.out_dir) / "final" / ev.weights / "vae.safetensors"
    if ev.weights == "ema" and not weights.is_file() and not cfg.ema:
        raise ConfigError(f"{params_path}: eval_audio_vae.weights is 'ema' but train_audio_vae.ema is false; "
                          f"set eval_audio_vae.weights: raw")
    vae = load_vae(weights, cfg.model)
    clips = validation_clips(folder, cfg.mel.sample_rate, ev.clips)
    metrics, examples = evaluate(vae, cfg, clips, baseline, n_iter=ev.griffin_lim_iters, seed=ev.seed)
    metrics["baseline"] = {"description": baseline.describe(cfg), "bands": baseline.bands,
                           "time_pool": baseline.time_pool, **metrics["baseline"]}
    metrics.update({
        "audio_root": folder.root, "weights": ev.weights, "griffin_lim_iters": ev.griffin_lim_iters, "seed": ev.seed,
        "floats_per_second": {"mel": cfg.mel_floats_per_second, "latent": cfg.latent_floats_per_second,
                              "baseline": baseline.bands * cfg.mel.sample_rate
                              / (cfg.mel.hop_length * baseline.time_pool)},
    })
    png = spectrogram_png(report_dir / SPECTROGRAM_PNG, examples, cfg.mel, ev.spectrogram_clips)
    return metrics, render_section(metrics, png.name)


__all__ = ["SPECTROGRAM_PNG", "Baseline", "EvalAudioVAEConfig", "baseline_log_mel", "baseline_shape",
           "evaluate", "evaluate_audio_vae", "floor_log_mel", "mel_distances", "render_section",
           "spectrogram_png", "vae_log_mel", "validation_clips"]
