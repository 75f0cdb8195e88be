"""Evaluation of an APT super-resolution run on held-out validation clips.

Clips: the first ``val_clips`` items of the manifest's validation split, centred in time
(``ClipSpec(start="uniform")``) and cropped in the centre (``crop x crop``), degraded with
``validation_generator(seed)``: the same LQ inputs on every run. Each candidate (``bicubic``: the
trivial baseline, bicubic upsampling of the same LQ; ``G``: raw weights; ``G_ema``: EMA weights) is
scored against HQ in unit intensities [0, 1] (outputs clamped):

- PSNR = ``10 log10(1 / MSE)`` per clip (MSE over all its pixels, channels and frames), mean over clips;
- SSIM per frame and channel with an 11-tap Gaussian window (sigma 1.5, C1 = 0.01², C2 = 0.03²),
  averaged over the valid (unpadded) window positions, then over channels, frames and clips;
  this is scikit-image's ``structural_similarity(gaussian_weights=True, sigma=1.5, use_sample_covariance=False,
  data_range=1, channel_axis=...)`` exactly (its 5-px border crop keeps the same valid positions), and
  ``psnr`` is its ``peak_signal_noise_ratio(data_range=1)`` of the whole clip (tests/unit/test_eval_apt.py);
- temporal error: per clip, the mean over the ``T − 1`` consecutive-frame transitions ``t -> t+1``, the channels
  and the pixels of ``|(out[t+1] − out[t]) − (hq[t+1] − hq[t])|``: the output's frame differences against the
  HQ frame differences (lower is better; 0 when the output changes over time exactly as HQ does, e.g. any
  constant offset; flicker and lag both raise it); then the mean over clips;
- border flicker (:func:`border_flicker`): the clip restored in temporal chunks (:func:`chunked_restore`), the
  same per-transition error ``e_t`` as above, averaged separately over the transitions that cross a chunk
  border and those inside a chunk; ``ratio = border / inside`` (1.0: the chunking adds no flicker);
- LPIPS-VGG and DISTS per frame (:mod:`lib.eval.perceptual`), mean over frames and clips, when their weights
  are given (lower is better for both).
"""
from __future__ import annotations

import math
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Annotated, Any

import numpy as np
import torch
import torch.nn.functional as F
from annotated_types import Ge
from PIL import Image
from torch import nn

from lib.config import Checked, ConfigError
from lib.data.clips import ClipSpec
from lib.data.video_dataset import SSv2ClipDataset
from lib.models.video_sr import VideoSRConfig, VideoSRGenerator
from lib.train.apt import APTConfig, center_crop, to_signed
from lib.train.checkpoint import load_trained
from lib.video.degrade import bicubic_upsample, degrade, to_unit, validation_generator

SSIM_SIGMA, SSIM_TAPS, SSIM_K1, SSIM_K2 = 1.5, 11, 0.01, 0.03


@dataclass(frozen=True)
class EvalAPTConfig(Checked):
    """The ``eval_apt`` section: where the report goes, the degradation seed, clips in the PNG strip, the
    border-flicker chunking and the optional LPIPS / DISTS weight files."""

    report_dir: str = "reports/eval_apt"
    seed: int = 0  # validation_generator(seed): the held-out degradations
    strip_clips: Annotated[int, Ge(1)] = 4
    batch_size: Annotated[int, Ge(1)] = 4  # clips per forward pass
    # border flicker: the same validation clips at flicker_clip_frames frames (null: train_apt.clip_frames),
    # restored in chunks of flicker_chunk_frames that overlap by flicker_overlap frames (see chunked_restore)
    flicker_clip_frames: Annotated[int, Ge(3)] | None = None
    flicker_chunk_frames: Annotated[int, Ge(2)] = 2
    flicker_overlap: Annotated[int, Ge(0)] = 0
    lpips_weights: str | None = None  # LPIPS-VGG lin weights (lib.eval.perceptual); null: LPIPS not computed
    dists_weights: str | None = None  # DISTS alpha/beta; null: DISTS not computed
    vgg16_weights: str | None = None  # torchvision vgg16 state dict for both; null: the torch hub cache file

    def __post_init__(self) -> None:
        super().__post_init__()
        if self.flicker_chunk_frames - self.flicker_overlap < 2:
            raise ValueError(f"flicker_overlap: {self.flicker_overlap} leaves chunks of "
                             f"{self.flicker_chunk_frames} frames less than 2 new frames each (no transition "
                             f"inside a chunk); set flicker_overlap <= {self.flicker_chunk_frames - 2}")

    def check_flicker_frames(self, frames: int) -> None:
        """Raise ConfigError unless chunks of ``flicker_chunk_frames`` leave a chunk border in ``frames``-frame
        clips (``frames`` is flicker_clip_frames or train_apt.clip_frames)."""
        step = self.flicker_chunk_frames - self.flicker_overlap
        if frames <= step:
            raise ConfigError(f"eval_apt.flicker_chunk_frames: chunks that advance {step} frames leave no chunk "
                              f"border in {frames}-frame clips; set eval_apt.flicker_clip_frames above {step} "
                              f"(or lower flicker_chunk_frames / raise flicker_overlap)")


# ----------------------------------------------------------------------------- metrics


# Elements of float64 scratch a metric holds at once: scoring whole 1024 px x 49 frame clips in one float64 pass
# took tens of GiB per temporary (eval_vae was killed by the host's OOM killer on the GPU machine).
METRIC_CHUNK_ELEMENTS = 1 << 25


def psnr(x: torch.Tensor, y: torch.Tensor, data_range: float = 1.0) -> torch.Tensor:
    """Return the PSNR in dB of each clip ``[B, ...]`` (MSE over all its elements, in float64, a slice of
    :data:`METRIC_CHUNK_ELEMENTS` at a time); inf where equal."""
    if x.shape != y.shape:
        raise ValueError(f"psnr: need two tensors of one shape, got {list(x.shape)}, {list(y.shape)}")
    xf, yf = x.reshape(len(x), -1), y.reshape(len(y), -1)
    sse = torch.zeros(len(x), dtype=torch.float64, device=x.device)
    for i in range(0, xf.shape[1], METRIC_CHUNK_ELEMENTS):
        sl = slice(i, i + METRIC_CHUNK_ELEMENTS)
        sse += (xf[:, sl].double() - yf[:, sl].double()).square().sum(1)
    return 10 * torch.log10(data_range**2 / (sse / xf.shape[1]))


def ssim_frames(x: torch.Tensor, y: torch.Tensor, data_range: float = 1.0) -> torch.Tensor:
    """Return the SSIM of each frame pair ``[N, C, H, W]`` -> ``[N]`` (Gaussian window, mean over channels).

    Needs ``H, W >= 11``. Statistics use the Gaussian-weighted (population) moments, as in Wang et al. 2004. The
    window is separable, so it is applied as two 11-tap passes; frames are scored a batch at a time (each
    frame's SSIM is its own), so memory stays bounded at any clip size.
    """
    if x.shape != y.shape or x.ndim != 4:
        raise ValueError("ssim_frames: need two [N, C, H, W] tensors of one shape, "
                         f"got {list(x.shape)}, {list(y.shape)}")
    if min(x.shape[-2:]) < SSIM_TAPS:
        raise ValueError(f"ssim_frames: frames must be >= {SSIM_TAPS} px a side, got {list(x.shape[-2:])}")
    n, c, h, w = x.shape
    k = _ssim_taps().to(x.device)
    rows, cols = k.view(1, 1, SSIM_TAPS, 1), k.view(1, 1, 1, SSIM_TAPS)

    def blur(t: torch.Tensor) -> torch.Tensor:
        return F.conv2d(F.conv2d(t, rows), cols)

    c1, c2 = (SSIM_K1 * data_range) ** 2, (SSIM_K2 * data_range) ** 2
    per = max(1, METRIC_CHUNK_ELEMENTS // (c * h * w))  # frames a batch
    out = []
    for i in range(0, n, per):
        xb = x[i:i + per].double().reshape(-1, 1, h, w)
        yb = y[i:i + per].double().reshape(-1, 1, h, w)
        mx, my = blur(xb), blur(yb)
        vx, vy, cxy = blur(xb * xb) - mx**2, blur(yb * yb) - my**2, blur(xb * yb) - mx * my
        ssim_map = ((2 * mx * my + c1) * (2 * cxy + c2)) / ((mx**2 + my**2 + c1) * (vx + vy + c2))
        out.append(ssim_map.reshape(-1, c, ssim_map.shape[-2] * ssim_map.shape[-1]).mean(dim=(1, 2)))
    return torch.cat(out)


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


def transition_errors(out: torch.Tensor, hq: torch.Tensor) -> torch.Tensor:
    """Return ``e[b, t] = mean over C, H, W of |(out[t+1] − out[t]) − (hq[t+1] − hq[t])|`` of clips
    ``[B, C, T, H, W]`` -> ``[B, T − 1]`` (float64): how far each frame-to-frame change of the output is from
    the HQ one."""
    if out.shape != hq.shape or out.ndim != 5:
        raise ValueError(f"transition_errors: need two [B, C, T, H, W] clips of one shape, "
                         f"got {list(out.shape)}, {list(hq.shape)}")
    d_out, d_hq = out.double().diff(dim=2), hq.double().diff(dim=2)
    return (d_out - d_hq).abs().mean(dim=(1, 3, 4))


def temporal_error(out: torch.Tensor, hq: torch.Tensor) -> torch.Tensor:
    """Return the temporal error of each clip ``[B, C, T, H, W]`` -> ``[B]`` (float64; 0 when T == 1).

    It is the frame-difference error against the HQ frame differences: the mean, over the ``T − 1`` transitions
    ``t -> t+1`` and all channels and pixels, of ``|(out[t+1] − out[t]) − (hq[t+1] − hq[t])|`` (the mean of
    :func:`transition_errors` over ``t``). A constant offset between ``out`` and ``hq`` scores 0; flicker or
    motion lag raise it.
    """
    if out.shape[2] < 2:
        return torch.zeros(out.shape[0], dtype=torch.float64)
    return transition_errors(out, hq).mean(1)


# ----------------------------------------------------------------------------- chunked restoration and flicker


def chunk_plan(frames: int, chunk_frames: int, overlap: int = 0) -> list[tuple[int, int, int, int]]:
    """Return the chunks of a ``frames``-frame clip as ``(lo, hi, a, b)``: the restorer sees frames ``[lo, hi)``
    and its output is kept for ``[a, b)``.

    The scheme ("cut", no blending): the clip is split into disjoint owned segments of ``step = chunk_frames −
    overlap`` frames, ``[a, b) = [k·step, (k+1)·step)`` (the last one shorter); each is restored from the window
    ``[a − overlap // 2, b + overlap − overlap // 2)`` cut to ``[0, frames)`` (``overlap // 2`` frames of past and
    the rest of future context, where the clip has them; at most ``chunk_frames`` frames), and only the segment's
    frames of that output are kept: the overlap is context, cut, never blended. Every output frame comes from
    exactly one chunk, so a chunk border is the transition ``a − 1 -> a`` of every segment after the first.
    ``overlap = 0``: plain disjoint chunks of ``chunk_frames`` frames.
    """
    step = chunk_frames - overlap
    if chunk_frames < 1 or overlap < 0 or step < 1:
        raise ValueError(f"chunk_plan: need chunk_frames >= 1 and 0 <= overlap < chunk_frames, "
                         f"got chunk_frames={chunk_frames}, overlap={overlap}")
    plan = []
    for a in range(0, frames, step):
        b = min(a + step, frames)
        plan.append((max(a - overlap // 2, 0), min(b + overlap - overlap // 2, frames), a, b))
    return plan


def chunked_restore(fn: Callable[[torch.Tensor], torch.Tensor], lq: torch.Tensor, chunk_frames: int,
                    overlap: int = 0) -> torch.Tensor:
    """Return ``fn`` applied to ``lq [B, C, T, h, w]`` chunk by chunk along time (:func:`chunk_plan`), the kept
    frames concatenated: ``[B, C', T, H, W]``. ``fn(lq_chunk) -> out_chunk`` keeps the number of frames."""
    parts = []
    for lo, hi, a, b in chunk_plan(lq.shape[2], chunk_frames, overlap):
        out = fn(lq[:, :, lo:hi])
        if out.shape[2] != hi - lo:
            raise ValueError(f"chunked_restore: fn turned {hi - lo} frames into {out.shape[2]}")
        parts.append(out[:, :, a - lo:b - lo])
    return torch.cat(parts, dim=2)


def border_transitions(frames: int, chunk_frames: int, overlap: int = 0) -> torch.Tensor:
    """Return a bool ``[frames − 1]``: True for each transition ``t -> t+1`` that crosses a chunk border."""
    mask = torch.zeros(max(frames - 1, 0), dtype=torch.bool)
    for _, _, a, _ in chunk_plan(frames, chunk_frames, overlap)[1:]:
        mask[a - 1] = True
    return mask


def flicker_stats(errors: torch.Tensor, border: torch.Tensor) -> dict[str, float | None]:
    """Return ``{border, inside, ratio}`` from per-clip transition errors ``[B, T − 1]`` and the border mask
    ``[T − 1]``: the means over clips and border (inside) transitions; ``ratio = border / inside`` (``1.0`` when
    both are 0, None when only ``inside`` is)."""
    if not border.any() or border.all():
        raise ValueError("flicker_stats: need both chunk-border and inside-chunk transitions; "
                         f"border mask {border.tolist()}")
    b, i = float(errors[:, border].mean()), float(errors[:, ~border].mean())
    ratio = b / i if i > 0 else (1.0 if b == 0 else None)
    return {"border": b, "inside": i, "ratio": ratio}


def border_flicker(fn: Callable[[torch.Tensor], torch.Tensor], lq: torch.Tensor, hq: torch.Tensor,
                   chunk_frames: int, overlap: int = 0) -> dict[str, Any]:
    """Restore ``lq`` with ``fn`` in temporal chunks and measure the extra flicker at the chunk borders.

    ``out = chunked_restore(fn, lq, chunk_frames, overlap)`` (compared with ``hq`` in the units ``fn`` returns);
    ``e_t`` per clip = :func:`transition_errors` ``(out, hq)``; returns ``{chunk_frames, overlap, border, inside,
    ratio, border_transitions, inside_transitions}`` where ``border`` (``inside``) is the mean of ``e_t`` over the
    clips and the transitions that cross (do not cross) a chunk border, and ``ratio = border / inside``: 1.0
    means chunking adds no flicker; a per-frame restorer gives 1.0 up to how the content differs between the two
    sets of transitions. The mean of ``e_t`` over all transitions is ``temporal_error(out, hq)``.
    """
    T = lq.shape[2]
    mask = border_transitions(T, chunk_frames, overlap)
    out = chunked_restore(fn, lq, chunk_frames, overlap)
    return {"chunk_frames": chunk_frames, "overlap": overlap, **flicker_stats(transition_errors(out, hq), mask),
            "border_transitions": int(mask.sum()), "inside_transitions": int((~mask).sum())}


# ----------------------------------------------------------------------------- data and models


def _validation_set(cfg: APTConfig, manifest: str | Path, backend: str) -> tuple[SSv2ClipDataset, int]:
    ds = SSv2ClipDataset(manifest, "validation", clip=ClipSpec(cfg.clip_frames, cfg.clip_stride, "uniform"),
                         seed=cfg.train.seed, backend=backend)
    return ds, min(cfg.val_clips, len(ds))


def validation_clips(cfg: APTConfig, manifest: str | Path, seed: int,
                     backend: str = "decord") -> tuple[torch.Tensor, torch.Tensor]:
    """Return ``(hq, lq)`` of the first ``cfg.val_clips`` validation clips, float [-1, 1], deterministic
    (decoded with ``backend``: the run's loader backend).

    ``hq`` is ``[N, 3, clip_frames, crop, crop]`` (time-centred clip, centre crop); ``lq`` is
    ``degrade(hq)`` with ``validation_generator(seed)``.
    """
    ds, n = _validation_set(cfg, manifest, backend)
    hq = torch.stack([center_crop(to_signed(ds[(i, 0)]["video"]), cfg.crop) for i in range(n)])
    return hq, degrade(hq, cfg.degrade, validation_generator(seed))


def validation_ids(cfg: APTConfig, manifest: str | Path) -> list[str]:
    """Return the video ids of :func:`validation_clips`' clips, in order (for their text embeddings)."""
    ds, n = _validation_set(cfg, manifest, "decord")  # opens no video
    return [str(i) for i in ds.ids[:n]]


def load_generator(path: str | Path, config: VideoSRConfig) -> VideoSRGenerator:
    """Return a :class:`VideoSRGenerator` with the weights of a ``.safetensors`` file (strict keys), in eval mode."""
    return load_trained(VideoSRGenerator(config), path, "train_apt")


@torch.no_grad()
def upscale(model: nn.Module, lq: torch.Tensor, batch_size: int, text: torch.Tensor | None = None) -> torch.Tensor:
    """Return ``model(lq)`` (``model(lq, text)`` when ``text`` ``[N, text_dim]`` is given) in batches, clamped
    to [-1, 1]. Each batch runs on the model's device and comes back to ``lq``'s (the clips stay in host memory;
    on a GPU machine eval_apt puts the generators on the GPU)."""
    device = next(model.parameters()).device
    parts = []
    for i in range(0, len(lq), batch_size):
        x = lq[i:i + batch_size].to(device)
        out = model(x) if text is None else model(x, text[i:i + batch_size].to(device))
        parts.append(out.to(lq.device, lq.dtype))
    return torch.cat(parts).clamp(-1, 1)


@torch.no_grad()
def clip_scores(metric: Callable[[torch.Tensor, torch.Tensor], torch.Tensor], out: torch.Tensor, ref: torch.Tensor,
                batch_size: int = 16) -> torch.Tensor:
    """Return a per-image ``metric(x, y) -> [N]`` (LPIPS, DISTS of :mod:`lib.eval.perceptual`) per clip
    ``[B, 3, T, H, W]`` in [0, 1] -> ``[B]`` (float64): the mean over the clip's frames."""
    B, C, T, H, W = out.shape
    frames = lambda v: v.transpose(1, 2).reshape(B * T, C, H, W)  # noqa: E731
    a, b = frames(out), frames(ref)
    scores = torch.cat([metric(a[i:i + batch_size], b[i:i + batch_size]) for i in range(0, B * T, batch_size)])
    return scores.double().reshape(B, T).mean(1)


def score(out: torch.Tensor, hq: torch.Tensor) -> dict[str, float]:
    """Return mean ``psnr``, ``ssim`` and ``temporal_error`` of ``out`` vs ``hq`` (both [-1, 1] clips)."""
    u_out, u_hq = to_unit(out), to_unit(hq)
    return {"psnr": float(psnr(u_out, u_hq).mean()), "ssim": float(ssim(u_out, u_hq).mean()),
            "temporal_error": float(temporal_error(u_out, u_hq).mean())}


def evaluate(generators: Mapping[str, nn.Module], hq: torch.Tensor, lq: torch.Tensor, scale: int,
             batch_size: int = 4, text: torch.Tensor | None = None, *,
             flicker_chunk_frames: int | None = None, flicker_overlap: int = 0,
             flicker_clips: tuple[torch.Tensor, torch.Tensor] | None = None,
             perceptual: Mapping[str, Callable[[torch.Tensor, torch.Tensor], torch.Tensor]] | None = None,
             ) -> tuple[dict[str, Any], dict[str, torch.Tensor]]:
    """Score bicubic and every generator on ``(hq, lq)`` (generators get ``text`` when given); return
    ``(metrics, outputs)``.

    ``metrics`` = ``{"clips": N, "bicubic": {...}, "<name>": {..., "psnr_gain_db", "ssim_gain"}}``
    (gains are over bicubic); ``outputs`` = name -> upscaled clips in [-1, 1]. With ``flicker_chunk_frames``,
    every candidate also gets ``flicker`` (:func:`border_flicker` in [0, 1] intensities, outputs clamped) on
    ``flicker_clips`` ``(hq, lq)`` (default: the same clips); ``perceptual`` (name -> LPIPS / DISTS module of
    :func:`lib.eval.perceptual.perceptual_metrics`) adds ``<name>`` = its mean over frames and clips
    (:func:`clip_scores`).
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
    if perceptual:
        for name, out in outputs.items():
            for metric_name, metric in perceptual.items():
                metrics[name][metric_name] = float(clip_scores(metric, to_unit(out), to_unit(hq)).mean())
    if flicker_chunk_frames is not None:
        f_hq, f_lq = flicker_clips if flicker_clips is not None else (hq, lq)
        restorers: dict[str, Callable[[torch.Tensor], torch.Tensor]] = {
            "bicubic": lambda x: to_unit(bicubic_upsample(x, scale))}
        for name, model in generators.items():
            restorers[name] = lambda x, m=model: to_unit(upscale(m, x, batch_size, text))
        for name, fn in restorers.items():
            metrics[name]["flicker"] = border_flicker(fn, f_lq, to_unit(f_hq), flicker_chunk_frames, flicker_overlap)
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


PERCEPTUAL_LABELS = {"lpips": "LPIPS", "dists": "DISTS"}  # metric keys of lib.eval.perceptual.perceptual_metrics


def _num(value: Any, fmt: str) -> str:
    return "—" if value is None else format(value, fmt)


def render_report(metrics: Mapping[str, Any], train_section: Mapping[str, Any], strip_name: str,
                  columns: list[str]) -> str:
    """Return report.md: the metrics table (candidates vs bicubic), the chunk-border flicker table, what each
    metric means, LPIPS / DISTS or why they were not computed, the run's settings and the strip."""
    names = [name for name in ("bicubic", "G", "G_ema") if name in metrics]
    perceptual = [(key, label) for key, label in PERCEPTUAL_LABELS.items()
                  if all(key in metrics[name] for name in names)]
    lines = ["# eval_apt: APT video super-resolution on held-out validation clips", "",
             f"{metrics['clips']} validation clips, {metrics['frames']} frames, HQ crop {metrics['crop']} px, "
             f"x{metrics['scale']}; degradations from `validation_generator({metrics['seed']})`. "
             "Outputs clamped to [-1, 1]; metrics in [0, 1] intensities.", "",
             "| model | PSNR (dB) | Δ PSNR vs bicubic | SSIM | Δ SSIM | temporal error (lower is better) |"
             + "".join(f" {label} (lower is better) |" for _, label in perceptual),
             "| --- | ---: | ---: | ---: | ---: | ---: |" + " ---: |" * len(perceptual)]
    for name in names:
        m = metrics[name]
        gain = "—" if name == "bicubic" else f"{m['psnr_gain_db']:+.3f}"
        sgain = "—" if name == "bicubic" else f"{m['ssim_gain']:+.4f}"
        lines.append(f"| {name} | {m['psnr']:.3f} | {gain} | {m['ssim']:.4f} | {sgain} | {m['temporal_error']:.5f} |"
                     + "".join(f" {m[key]:.4f} |" for key, _ in perceptual))
    lines += ["", "- **PSNR**: 10·log10(1 / MSE) per clip over all pixels, channels and frames, mean over clips.",
              "- **SSIM**: per frame and channel, 11-tap Gaussian window (σ 1.5), valid window positions only "
              "(= scikit-image's `structural_similarity(gaussian_weights=True, sigma=1.5, "
              "use_sample_covariance=False)`), mean over channels, frames and clips.",
              "- **temporal error**: mean |(out[t+1] − out[t]) − (hq[t+1] − hq[t])| over the consecutive-frame "
              "transitions, channels and pixels: how far the output's frame-to-frame changes are from HQ's "
              "(flicker and lag raise it; a constant offset does not)."]
    for key, label in perceptual:
        lines.append(f"- **{label}**: " + ("learned perceptual distance: unit-normalised VGG16 features at 5 "
                     "depths, squared difference weighted per channel, averaged over pixels and summed; per frame, "
                     "mean over frames and clips." if key == "lpips" else "1 − weighted VGG16 texture (feature "
                     "means) and structure (feature correlations) similarity over 6 depths; per frame, mean over "
                     "frames and clips."))
    for note in metrics.get("not_computed", {}).values():
        lines.append(f"- **{note}**")
    flicker = [name for name in names if "flicker" in metrics[name]]
    if flicker:
        f0 = metrics[flicker[0]]["flicker"]
        lines += ["", f"## Chunk-border flicker ({metrics.get('flicker_frames', '?')}-frame clips restored in "
                  f"chunks of {f0['chunk_frames']} frames, overlap {f0['overlap']})", "",
                  "| model | border error | inside error | border flicker ratio |", "| --- | ---: | ---: | ---: |"]
        for name in flicker:
            f = metrics[name]["flicker"]
            lines.append(f"| {name} | {f['border']:.5f} | {f['inside']:.5f} | {_num(f['ratio'], '.3f')} |")
        lines += ["", "Each clip is restored chunk by chunk (each chunk sees up to "
                  f"{f0['chunk_frames']} frames and keeps {f0['chunk_frames'] - f0['overlap']} of them; overlap "
                  "frames give context and are cut, not blended); for every transition t→t+1, "
                  "e_t = mean |(out[t+1] − out[t]) − (hq[t+1] − hq[t])|. "
                  f"**border** is the mean e_t over the {f0['border_transitions']} transition(s) per clip that cross "
                  f"a chunk border, **inside** over the {f0['inside_transitions']} inside a chunk, and the **ratio** "
                  "border / inside: 1.0 means chunked inference adds no flicker. Bicubic works frame by frame, so "
                  "its ratio differs from 1 only through the content of those transitions: read G's ratio "
                  "against it."]
    lines += ["", f"Training run: {train_section.get('steps')} steps, batch {train_section.get('batch_size')}, "
              f"out_dir `{train_section.get('out_dir')}`.", "",
              f"![strip]({strip_name})", "", f"Columns: {' | '.join(columns)} (middle frame of each clip).", ""]
    if math.isfinite(metrics.get("G", {}).get("psnr_gain_db", math.nan)):
        verdict = "beats" if metrics["G"]["psnr_gain_db"] > 0 else "does not beat"
        lines.append(f"G (raw) {verdict} bicubic in PSNR on these clips.")
    return "\n".join(lines) + "\n"


__all__ = ["EvalAPTConfig", "border_flicker", "border_transitions", "chunk_plan", "chunked_restore", "clip_scores",
           "evaluate", "flicker_stats", "load_generator", "psnr", "render_report", "score", "ssim",
           "ssim_frames", "strip_png", "temporal_error", "transition_errors", "upscale", "validation_clips"]
