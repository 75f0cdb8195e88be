"""Evaluation of an APT super-resolution run on held-out validation clips.

Clips: the first ``val_clips`` items of the manifest's validation split, centred in time
(``ClipSpec(start="uniform")``) and cropped in the centre (``crop x crop``), degraded with
``validation_generator(seed)``: the same LQ inputs on every run. Each candidate (``bicubic``: the
trivial baseline, bicubic upsampling of the same LQ; ``G``: raw weights; ``G_ema``: EMA weights) is
scored against HQ in unit intensities [0, 1] (outputs clamped):

- PSNR = ``10 log10(1 / MSE)`` per clip (MSE over all its pixels, channels and frames), mean over clips;
- SSIM per frame and channel with an 11-tap Gaussian window (sigma 1.5, C1 = 0.01², C2 = 0.03²),
  averaged over the valid (unpadded) window positions, then over channels, frames and clips;
- temporal error ``mean |Δ_t out − Δ_t hq|`` over consecutive frames (lower is better; flicker).
"""
from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Annotated, Any

import numpy as np
import torch
import torch.nn.functional as F
from annotated_types import Ge
from PIL import Image
from torch import nn

from lib.config import Checked
from lib.data.clips import ClipSpec
from lib.data.video_dataset import SSv2ClipDataset
from lib.models.video_sr import VideoSRConfig, VideoSRGenerator
from lib.train.apt import APTConfig, center_crop, to_signed
from lib.train.checkpoint import load_trained
from lib.video.degrade import bicubic_upsample, degrade, to_unit, validation_generator

SSIM_SIGMA, SSIM_TAPS, SSIM_K1, SSIM_K2 = 1.5, 11, 0.01, 0.03


@dataclass(frozen=True)
class EvalAPTConfig(Checked):
    """The ``eval_apt`` section: where the report goes, the degradation seed, clips in the PNG strip."""

    report_dir: str = "reports/eval_apt"
    seed: int = 0  # validation_generator(seed): the held-out degradations
    strip_clips: Annotated[int, Ge(1)] = 4
    batch_size: Annotated[int, Ge(1)] = 4  # clips per forward pass


# ----------------------------------------------------------------------------- metrics


def psnr(x: torch.Tensor, y: torch.Tensor, data_range: float = 1.0) -> torch.Tensor:
    """Return the PSNR in dB of each clip ``[B, ...]`` (MSE over all its elements); inf where equal."""
    mse = (x.double() - y.double()).square().flatten(1).mean(1)
    return 10 * torch.log10(data_range**2 / mse)


def ssim_frames(x: torch.Tensor, y: torch.Tensor, data_range: float = 1.0) -> torch.Tensor:
    """Return the SSIM of each frame pair ``[N, C, H, W]`` -> ``[N]`` (Gaussian window, mean over channels).

    Needs ``H, W >= 11``. Statistics use the Gaussian-weighted (population) moments, as in Wang et al. 2004.
    """
    if x.shape != y.shape or x.ndim != 4:
        raise ValueError("ssim_frames: need two [N, C, H, W] tensors of one shape, "
                         f"got {list(x.shape)}, {list(y.shape)}")
    if min(x.shape[-2:]) < SSIM_TAPS:
        raise ValueError(f"ssim_frames: frames must be >= {SSIM_TAPS} px a side, got {list(x.shape[-2:])}")
    n, c, h, w = x.shape
    k = _ssim_taps()
    win = (k[:, None] * k[None, :])[None, None]  # [1, 1, 11, 11]
    x, y = x.double().reshape(n * c, 1, h, w), y.double().reshape(n * c, 1, h, w)

    def blur(t: torch.Tensor) -> torch.Tensor:
        return F.conv2d(t, win)

    mx, my = blur(x), blur(y)
    vx, vy, cxy = blur(x * x) - mx**2, blur(y * y) - my**2, blur(x * y) - mx * my
    c1, c2 = (SSIM_K1 * data_range) ** 2, (SSIM_K2 * data_range) ** 2
    ssim_map = ((2 * mx * my + c1) * (2 * cxy + c2)) / ((mx**2 + my**2 + c1) * (vx + vy + c2))
    return ssim_map.reshape(n, c, -1).mean(dim=(1, 2))


def _ssim_taps() -> torch.Tensor:
    """The 11 normalised Gaussian taps (sigma 1.5) of the SSIM window."""
    t = torch.arange(SSIM_TAPS, dtype=torch.float64) - (SSIM_TAPS - 1) / 2
    k = torch.exp(-0.5 * (t / SSIM_SIGMA) ** 2)
    return k / k.sum()


def ssim(x: torch.Tensor, y: torch.Tensor, data_range: float = 1.0) -> torch.Tensor:
    """Return the mean per-frame SSIM of each clip ``[B, C, T, H, W]`` -> ``[B]``."""
    B, C, T, H, W = x.shape
    frames = lambda v: v.transpose(1, 2).reshape(B * T, C, H, W)  # noqa: E731
    return ssim_frames(frames(x), frames(y), data_range).reshape(B, T).mean(1)


def temporal_error(out: torch.Tensor, hq: torch.Tensor) -> torch.Tensor:
    """Return ``mean |Δ_t out − Δ_t hq|`` of each clip ``[B, C, T, H, W]`` -> ``[B]`` (0 when T == 1)."""
    if out.shape[2] < 2:
        return torch.zeros(out.shape[0], dtype=torch.float64)
    d_out, d_hq = out.double().diff(dim=2), hq.double().diff(dim=2)
    return (d_out - d_hq).abs().flatten(1).mean(1)


# ----------------------------------------------------------------------------- data and models


def _validation_set(cfg: APTConfig, manifest: str | Path) -> tuple[SSv2ClipDataset, int]:
    ds = SSv2ClipDataset(manifest, "validation", clip=ClipSpec(cfg.clip_frames, cfg.clip_stride, "uniform"),
                         seed=cfg.train.seed)
    return ds, min(cfg.val_clips, len(ds))


def validation_clips(cfg: APTConfig, manifest: str | Path, seed: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Return ``(hq, lq)`` of the first ``cfg.val_clips`` validation clips, float [-1, 1], deterministic.

    ``hq`` is ``[N, 3, clip_frames, crop, crop]`` (time-centred clip, centre crop); ``lq`` is
    ``degrade(hq)`` with ``validation_generator(seed)``.
    """
    ds, n = _validation_set(cfg, manifest)
    hq = torch.stack([center_crop(to_signed(ds[(i, 0)]["video"]), cfg.crop) for i in range(n)])
    return hq, degrade(hq, cfg.degrade, validation_generator(seed))


def validation_ids(cfg: APTConfig, manifest: str | Path) -> list[str]:
    """Return the video ids of :func:`validation_clips`' clips, in order (for their text embeddings)."""
    ds, n = _validation_set(cfg, manifest)
    return [str(i) for i in ds.ids[:n]]


def load_generator(path: str | Path, config: VideoSRConfig) -> VideoSRGenerator:
    """Return a :class:`VideoSRGenerator` with the weights of a ``.safetensors`` file (strict keys), in eval mode."""
    return load_trained(VideoSRGenerator(config), path, "train_apt")


@torch.no_grad()
def upscale(model: nn.Module, lq: torch.Tensor, batch_size: int, text: torch.Tensor | None = None) -> torch.Tensor:
    """Return ``model(lq)`` (``model(lq, text)`` when ``text`` ``[N, text_dim]`` is given) in batches, clamped
    to [-1, 1]."""
    parts = [model(lq[i:i + batch_size]) if text is None else model(lq[i:i + batch_size], text[i:i + batch_size])
             for i in range(0, len(lq), batch_size)]
    return torch.cat(parts).clamp(-1, 1)


def score(out: torch.Tensor, hq: torch.Tensor) -> dict[str, float]:
    """Return mean ``psnr``, ``ssim`` and ``temporal_error`` of ``out`` vs ``hq`` (both [-1, 1] clips)."""
    u_out, u_hq = to_unit(out), to_unit(hq)
    return {"psnr": float(psnr(u_out, u_hq).mean()), "ssim": float(ssim(u_out, u_hq).mean()),
            "temporal_error": float(temporal_error(u_out, u_hq).mean())}


def evaluate(generators: Mapping[str, nn.Module], hq: torch.Tensor, lq: torch.Tensor, scale: int,
             batch_size: int = 4, text: torch.Tensor | None = None) -> tuple[dict[str, Any], dict[str, torch.Tensor]]:
    """Score bicubic and every generator on ``(hq, lq)`` (generators get ``text`` when given); return
    ``(metrics, outputs)``.

    ``metrics`` = ``{"clips": N, "bicubic": {...}, "<name>": {..., "psnr_gain_db", "ssim_gain"}}``
    (gains are over bicubic); ``outputs`` = name -> upscaled clips in [-1, 1].
    """
    outputs = {"bicubic": bicubic_upsample(lq, scale)}
    for name, model in generators.items():
        outputs[name] = upscale(model, lq, batch_size, text)
    metrics: dict[str, Any] = {"clips": int(hq.shape[0])}
    for name, out in outputs.items():
        metrics[name] = score(out, hq)
    for name in generators:
        metrics[name]["psnr_gain_db"] = metrics[name]["psnr"] - metrics["bicubic"]["psnr"]
        metrics[name]["ssim_gain"] = metrics[name]["ssim"] - metrics["bicubic"]["ssim"]
    return metrics, outputs


# ----------------------------------------------------------------------------- report


def _frame_u8(clip: torch.Tensor, t: int) -> np.ndarray:
    """Frame ``t`` of ``clip [3, T, H, W]`` in [-1, 1] as uint8 ``[H, W, 3]``."""
    return (to_unit(clip[:, t]).clamp(0, 1) * 255).round().to(torch.uint8).permute(1, 2, 0).numpy()


def strip_png(path: str | Path, columns: Mapping[str, torch.Tensor], clips: int, zoom: int = 2) -> Path:
    """Write a PNG with one row per clip (middle frame) and one column per entry of ``columns``
    (all ``[N, 3, T, H, W]`` at HQ size); return its path. Columns are separated by 2 px of white."""
    names = list(columns)
    n = min(clips, next(iter(columns.values())).shape[0])
    rows = []
    for i in range(n):
        T = columns[names[0]].shape[2]
        tiles = [_frame_u8(columns[name][i], T // 2) for name in names]
        gap = np.full((tiles[0].shape[0], 2, 3), 255, np.uint8)
        rows.append(np.concatenate([x for tile in tiles for x in (tile, gap)][:-1], axis=1))
        rows.append(np.full((2, rows[-1].shape[1], 3), 255, np.uint8))
    image = Image.fromarray(np.concatenate(rows[:-1], axis=0))
    image = image.resize((image.width * zoom, image.height * zoom), Image.NEAREST)
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    image.save(path)
    return path


def render_report(metrics: Mapping[str, Any], train_section: Mapping[str, Any], strip_name: str,
                  columns: list[str]) -> str:
    """Return report.md: the metrics table (candidates vs bicubic), the run's settings and the strip."""
    lines = ["# eval_apt: APT video super-resolution on held-out validation clips", "",
             f"{metrics['clips']} validation clips, {metrics['frames']} frames, HQ crop {metrics['crop']} px, "
             f"x{metrics['scale']}; degradations from `validation_generator({metrics['seed']})`. "
             "Outputs clamped to [-1, 1]; metrics in [0, 1] intensities.", "",
             "| model | PSNR (dB) | Δ PSNR vs bicubic | SSIM | Δ SSIM | temporal error (lower is better) |",
             "| --- | ---: | ---: | ---: | ---: | ---: |"]
    for name in ("bicubic", "G", "G_ema"):
        if name not in metrics:
            continue
        m = metrics[name]
        gain = "—" if name == "bicubic" else f"{m['psnr_gain_db']:+.3f}"
        sgain = "—" if name == "bicubic" else f"{m['ssim_gain']:+.4f}"
        lines.append(f"| {name} | {m['psnr']:.3f} | {gain} | {m['ssim']:.4f} | {sgain} | {m['temporal_error']:.5f} |")
    lines += ["", f"Training run: {train_section.get('steps')} steps, batch {train_section.get('batch_size')}, "
              f"out_dir `{train_section.get('out_dir')}`.", "",
              f"![strip]({strip_name})", "", f"Columns: {' | '.join(columns)} (middle frame of each clip).", ""]
    if math.isfinite(metrics.get("G", {}).get("psnr_gain_db", math.nan)):
        verdict = "beats" if metrics["G"]["psnr_gain_db"] > 0 else "does not beat"
        lines.append(f"G (raw) {verdict} bicubic in PSNR on these clips.")
    return "\n".join(lines) + "\n"


__all__ = ["EvalAPTConfig", "evaluate", "load_generator", "psnr", "render_report", "score", "ssim",
           "ssim_frames", "strip_png", "temporal_error", "upscale", "validation_clips"]
