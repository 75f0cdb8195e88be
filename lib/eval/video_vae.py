"""Evaluation of the trained video VAEs on held-out validation clips, against bicubic at the same compression.

Which models: the final raw weights (``<out_dir>/final/raw/vae.safetensors``) of every video VAE trainer section
present in the params file, ``train_video_vae`` (one resolution) and ``train_curriculum`` (resolution curriculum).

Which clips: ``eval_vae.clips`` items of the manifest's validation split, chosen by ``eval_vae.seed`` (a seeded
permutation, then sorted), time-centred (``ClipSpec(start="uniform")``, stride ``eval_vae.clip_stride``), the
central full-short-side square resized to each evaluation point's resolution (exactly as in training, see
:mod:`lib.train.video_vae`). Evaluation points ``(resolution, frames)``: every curriculum phase's and the
single-resolution run's; every model is scored at every point.

What is measured, in [0, 1] intensities, outputs clamped (``lib.eval.apt``'s ``psnr`` / ``ssim``):

- ``vae``: reconstruction from the posterior mean, ``decode(mean)``; PSNR, SSIM (frames >= 11 px), and
  ``kl_per_element``, the KL of the posterior to N(0, I) per latent element (nats).
- Bicubic baselines at the same compression. The VAE keeps ``latent_channels * ceil(T/tc) * (H/sc) * (W/sc)``
  floats of a ``3 * T * H * W`` clip, i.e. ``latent_channels / (3 * tc * sc²)`` values per input value. A
  baseline keeps ``3 * ceil(T/tc) * h * w`` values: bicubic (antialiased) down to ``h x w`` per frame, the mean
  of each group of ``tc`` frames (antialiased frame subsampling; the last group padded by repeating the last
  frame, as the VAE does), then linear interpolation between group centres in time and bicubic up in space.

  - ``bicubic_grid``: ``h = H / sc``, the latent's own grid: ``3 / latent_channels`` times the VAE's values
    (fewer when latent_channels > 3).
  - ``bicubic_values``: ``h = round(H / sc * sqrt(latent_channels / 3))``, as close as an integer size gets to
    the VAE's number of values. This is the like-for-like baseline; ``psnr_gain_db`` is measured against it.

  Both are reported with their ``values_per_element``. The floats are not equally costly to store: the
  latent is unquantised float32 and a VAE's usefulness is also its latent's regularity (KL), so this is a
  reconstruction-fidelity comparison at equal value counts, not a rate-distortion claim.

Models run on the GPU when one is visible, else on the CPU. Outputs: ``strip_<stage>_<res>px_<T>f.png``
(input | VAE | bicubic at equal values; middle frame of a few clips).
"""
from __future__ import annotations

import logging
import math
import time
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Annotated, Any

import numpy as np
import torch
import torch.nn.functional as F
from annotated_types import Ge

from lib.config import Checked, ConfigError, from_dict, load_section, read_params
from lib.eval.apt import SSIM_TAPS, psnr, ssim, strip_png
from lib.models.video_vae import VideoVAE, VideoVAEConfig
from lib.models.video_vae_inference import reconstruct_mean, seam_error
from lib.ssv2.ingest import IngestSSv2Config
from lib.train.checkpoint import load_trained
from lib.train.video_vae import MODEL, VideoVAETrainConfig, from_section, kl_per_element, validation_clips
from lib.video.degrade import to_unit

log = logging.getLogger(__name__)

TRAINERS = ("train_video_vae", "train_curriculum")  # params sections (and DVC stages) of video VAE trainers


@dataclass(frozen=True)
class EvalVAEConfig(Checked):
    """The ``eval_vae`` section: report folder, held-out clip choice, strip size (the audio evaluator reads its
    own section, ``eval_audio_vae``)."""

    report_dir: str = "reports/eval_vae"
    seed: int = 0  # picks the validation clips (seeded permutation of the split)
    clips: Annotated[int, Ge(1)] = 8
    clip_stride: Annotated[int, Ge(1)] = 2
    strip_clips: Annotated[int, Ge(1)] = 3
    batch_size: Annotated[int, Ge(1)] = 2  # clips per forward pass
    # At the largest point, how clips too large for memory are run (lib.models.video_vae_inference): temporal
    # chunks of chunk_frames input frames (exact; a multiple of each model's temporal_compression; null: whole
    # clips), and spatial tiles of `tile` px overlapping by tile_overlap (approximate: null scores whole frames).
    # Either way the first clip is also run whole, and the report gives the difference and the tile seam error.
    chunk_frames: Annotated[int, Ge(1)] | None = None
    tile: Annotated[int, Ge(1)] | None = None
    tile_overlap: Annotated[int, Ge(0)] = 0


def point_name(resolution: int, frames: int) -> str:
    """``"64px_8f"``: the metrics key of an evaluation point."""
    return f"{resolution}px_{frames}f"


def load_vae(path: str | Path, config: VideoVAEConfig, stage: str = "train_video_vae") -> VideoVAE:
    """Return a :class:`VideoVAE` with the weights of ``path`` (strict keys), in eval mode."""
    return load_trained(VideoVAE(config), path, stage)


# ----------------------------------------------------------------------------- baseline


def baseline_size(resolution: int, cfg: VideoVAEConfig, equal_values: bool) -> int:
    """Side of the baseline's low-resolution frames: ``resolution / sc`` (latent grid) or the side whose
    ``3 * side²`` is closest to the latent's ``latent_channels * (resolution / sc)²`` values (at least 1)."""
    grid = resolution // cfg.spatial_compression
    return grid if not equal_values else max(1, round(grid * math.sqrt(cfg.latent_channels / cfg.in_channels)))


def bicubic_codec(x: torch.Tensor, size: int, tc: int) -> torch.Tensor:
    """The baseline: ``x [B, C, T, H, W]`` in [-1, 1] -> bicubic down to ``size x size``, mean over groups of
    ``tc`` frames, linear up in time (group centres), bicubic up to ``H x W``; clamped to [-1, 1]."""
    B, C, T, H, W = x.shape
    frames = x.transpose(1, 2).reshape(B * T, C, H, W)
    low = F.interpolate(frames, size=(size, size), mode="bicubic", align_corners=False, antialias=True)
    low = low.reshape(B, T, C, size, size).transpose(1, 2)  # [B, C, T, s, s]
    pad = -T % tc
    if pad:
        low = F.pad(low, (0, 0, 0, 0, 0, pad), mode="replicate")
    groups = low.reshape(B, C, -1, tc, size, size).mean(3)  # [B, C, ceil(T/tc), s, s]
    if tc > 1:  # align_corners=False maps output t to group (t + 0.5) / tc - 0.5: the group centres
        groups = F.interpolate(groups, size=(groups.shape[2] * tc, size, size), mode="trilinear", align_corners=False)
    groups = groups[:, :, :T]
    up = F.interpolate(groups.transpose(1, 2).reshape(B * T, C, size, size), size=(H, W), mode="bicubic",
                       align_corners=False)
    return up.reshape(B, T, C, H, W).transpose(1, 2).clamp(-1.0, 1.0)


def values_per_element(resolution: int, frames: int, cfg: VideoVAEConfig, channels: int, side: int) -> float:
    """Stored values per input value of a ``channels x ceil(T/tc) x side x side`` code of a 3-channel clip."""
    kept = channels * math.ceil(frames / cfg.temporal_compression) * side * side
    return kept / (cfg.in_channels * frames * resolution * resolution)


# ----------------------------------------------------------------------------- scoring


def _score(out: torch.Tensor, ref: torch.Tensor) -> dict[str, float | None]:
    u_out, u_ref = to_unit(out), to_unit(ref)
    s = float(ssim(u_out, u_ref).mean()) if min(ref.shape[-2:]) >= SSIM_TAPS else None
    return {"psnr": float(psnr(u_out, u_ref).mean()), "ssim": s}


@dataclass(frozen=True)
class InferencePlan:
    """How one point's clips are run: temporal chunks and/or spatial tiles (None: whole clips)."""

    chunk_frames: int | None = None
    tile: int | None = None
    tile_overlap: int = 0


@torch.no_grad()
def reconstruct(model: VideoVAE, x: torch.Tensor, batch_size: int,
                plan: InferencePlan = InferencePlan()) -> tuple[torch.Tensor, float]:
    """Return ``(decode(mean) clamped to [-1, 1], KL per latent element)`` for clips ``x``, in batches on the
    model's device, run as ``plan`` says; the reconstruction comes back on ``x``'s device."""
    device = next(model.parameters()).device
    outs, kls, n = [], 0.0, 0
    for i in range(0, len(x), batch_size):
        chunk = x[i:i + batch_size].to(device)
        x_hat, mean, logvar = reconstruct_mean(model, chunk, chunk_frames=plan.chunk_frames, tile=plan.tile,
                                               overlap=plan.tile_overlap)
        outs.append(x_hat.clamp(-1, 1).to(x.device))
        kls += kl_per_element(mean, logvar) * len(chunk)
        n += len(chunk)
    return torch.cat(outs), kls / n


def _whole_or_none(model: VideoVAE, clip: torch.Tensor) -> tuple[torch.Tensor | None, str | None]:
    """``(decode(mean) of the whole clip, None)``, or ``(None, why)`` when the whole clip does not fit the
    accelerator's memory (the point chunks and tiles exist for: fp32 1024 px x 49 frames needs ~69 GiB)."""
    try:
        return reconstruct_mean(model, clip)[0], None
    except torch.OutOfMemoryError as err:
        if torch.cuda.is_available():
            torch.cuda.empty_cache()
        return None, f"out of memory: {str(err).splitlines()[0][:160]}"


def probe_inference(model: VideoVAE, clip: torch.Tensor, plan: InferencePlan) -> dict[str, Any]:
    """Run one clip ``[1, C, T, S, S]`` whole, in ``plan``'s temporal chunks, and in spatial tiles (``plan.tile``,
    or half the side when None); return how far chunks and tiles land from the whole run (unclamped decode).

    When the whole clip does not fit in memory, ``whole`` says so and the tiles are compared with the chunked run
    instead (``tiles_vs: "chunked"``; chunked equals whole within float noise, tests/unit/test_video_vae_inference)."""
    device = next(model.parameters()).device
    clip = clip.to(device)
    sc, side = model.config.spatial_compression, clip.shape[-1]
    whole, why = _whole_or_none(model, clip)
    out: dict[str, Any] = {"chunk_frames": plan.chunk_frames, "whole": why or "ran", "tiles_vs": "whole"}
    if plan.chunk_frames is not None:
        chunked = reconstruct_mean(model, clip, chunk_frames=plan.chunk_frames)[0]
        if whole is None:
            whole, out["tiles_vs"] = chunked, "chunked"
        else:
            out["chunked_max_abs_vs_whole"] = float((chunked - whole).abs().max())
    if whole is None:  # no reference to measure tiles against: raise the error the whole run met
        raise torch.OutOfMemoryError(f"eval_vae: one whole {tuple(clip.shape)} clip does not fit ({why}); set "
                                     f"eval_vae.chunk_frames (a multiple of temporal_compression)")
    tile = plan.tile or max(sc, side // 2 // sc * sc)
    overlap = plan.tile_overlap if plan.tile else max(0, tile // 2 // sc * sc)
    if tile < side:
        tiled = reconstruct_mean(model, clip, chunk_frames=plan.chunk_frames, tile=tile, overlap=overlap)[0]
        out["tiled"] = {"tile": tile, "overlap": overlap, **seam_error(whole, tiled, tile=tile, overlap=overlap),
                        "psnr_whole": _score(whole.clamp(-1, 1), clip)["psnr"],
                        "psnr_tiled": _score(tiled.clamp(-1, 1), clip)["psnr"]}
    return out


def evaluate_model(model: VideoVAE, clips: Mapping[tuple[int, int], torch.Tensor], batch_size: int,
                   plans: Mapping[tuple[int, int], InferencePlan] | None = None
                   ) -> tuple[dict[str, Any], dict[tuple[int, int], dict[str, torch.Tensor]]]:
    """Score ``model`` and both bicubic baselines at every point of ``clips`` (run as ``plans`` says, whole by
    default); return ``(metrics, outputs)``. A point with a plan also gets ``inference`` (:func:`probe_inference`)."""
    cfg = model.config
    plans = plans or {}
    metrics: dict[str, Any] = {}
    outputs: dict[tuple[int, int], dict[str, torch.Tensor]] = {}
    for (res, frames), x in clips.items():
        plan = plans.get((res, frames), InferencePlan())
        t0 = time.perf_counter()
        x_hat, kl = reconstruct(model, x, batch_size, plan)
        t1 = time.perf_counter()
        entry: dict[str, Any] = {"vae": {**_score(x_hat, x), "kl_per_element": kl,
                                         "values_per_element": values_per_element(res, frames, cfg,
                                                                                  cfg.latent_channels,
                                                                                  res // cfg.spatial_compression)}}
        if (res, frames) in plans:
            entry["inference"] = probe_inference(model, x[:1], plan)
        outs = {"input": x, "VAE": x_hat}
        for name, equal in (("bicubic_grid", False), ("bicubic_values", True)):
            side = baseline_size(res, cfg, equal)
            y = bicubic_codec(x, side, cfg.temporal_compression)
            entry[name] = {**_score(y, x), "side": side,
                           "values_per_element": values_per_element(res, frames, cfg, cfg.in_channels, side)}
            outs[name] = y
        entry["psnr_gain_db"] = entry["vae"]["psnr"] - entry["bicubic_values"]["psnr"]
        log.info("%s: %d clips, VAE %.2f dB vs bicubic %.2f dB (%+.2f); reconstruct %.1f s, the rest %.1f s",
                 point_name(res, frames), len(x), entry["vae"]["psnr"], entry["bicubic_values"]["psnr"],
                 entry["psnr_gain_db"], t1 - t0, time.perf_counter() - t1)
        metrics[point_name(res, frames)] = entry
        outputs[(res, frames)] = outs
    return metrics, outputs


def choose_clips(manifest: str | Path, count: int, seed: int) -> list[int]:
    """Indices of ``count`` validation items picked by ``seed`` (sorted)."""
    import pandas as pd

    n = int((pd.read_parquet(manifest, columns=["split"])["split"] == "validation").sum())
    if n == 0:
        raise ConfigError(f"{manifest}: no validation clips to evaluate on; check ingest_ssv2 / synth_ssv2 splits")
    return sorted(np.random.default_rng(seed).permutation(n)[:min(count, n)].tolist())


def evaluate_video_vae(params_path: str | Path, report_dir: Path,
                       backend: str = "decord") -> tuple[dict[str, Any], str]:
    """Evaluate every configured video VAE trainer's final weights; write strip PNGs into ``report_dir``.
    Clips are decoded with ``backend`` (the run's loader backend).

    Returns ``(metrics, markdown)``: ``metrics`` = ``{"clips", "seed", "points", "<stage>": {"model": ...,
    "<res>px_<T>f": {"vae": {psnr, ssim, kl_per_element, values_per_element}, "bicubic_grid": {...},
    "bicubic_values": {...}, "psnr_gain_db"}}}``; ``markdown`` is a report section (tables + strips).
    """
    params = read_params(params_path)
    cfg = from_dict(EvalVAEConfig, params.get("eval_vae") or {}, f"{params_path}: eval_vae")
    runs: dict[str, VideoVAETrainConfig] = {name: from_section(params[name], f"{params_path}: {name}")
                                            for name in TRAINERS if params.get(name) is not None}
    if not runs:
        raise ConfigError(f"{params_path}: none of the sections {', '.join(TRAINERS)}; add one (see README) "
                          f"or drop the video part of eval_vae")
    manifest = Path(load_section(params_path, "ingest_ssv2", IngestSSv2Config).out) / "manifest.parquet"
    indices = choose_clips(manifest, cfg.clips, cfg.seed)
    points = sorted({p for run in runs.values() for p in run.points()})
    clips = {p: validation_clips(manifest, p[0], p[1], cfg.clip_stride, len(indices), indices, backend=backend)
             for p in points}

    report_dir = Path(report_dir)
    metrics: dict[str, Any] = {"clips": len(indices), "seed": cfg.seed, "points": [point_name(*p) for p in points]}
    for stage, run in runs.items():
        model = load_vae(Path(run.train.out_dir) / "final" / "raw" / f"{MODEL}.safetensors", run.model, stage)
        model.to("cuda" if torch.cuda.is_available() else "cpu")
        m = run.model
        if cfg.chunk_frames is not None and cfg.chunk_frames % m.temporal_compression:
            raise ConfigError(f"{params_path}: eval_vae.chunk_frames: {cfg.chunk_frames} is not a multiple of "
                              f"{stage}.model.temporal_compression={m.temporal_compression}; use a multiple of it")
        for name in ("tile", "tile_overlap"):
            value = getattr(cfg, name)
            if value and value % m.spatial_compression:
                raise ConfigError(f"{params_path}: eval_vae.{name}: {value} is not a multiple of "
                                  f"{stage}.model.spatial_compression={m.spatial_compression}; use a multiple of it")
        largest = max(points)  # the one that would not fit whole: chunks and tiles there
        plans = {largest: InferencePlan(cfg.chunk_frames, cfg.tile, cfg.tile_overlap)}
        scores, outputs = evaluate_model(model, clips, cfg.batch_size, plans)
        metrics[stage] = {"model": {"params": model.param_count(), "latent_channels": m.latent_channels,
                                    "temporal_compression": m.temporal_compression,
                                    "spatial_compression": m.spatial_compression,
                                    "trained_at": [point_name(*p) for p in run.points()]}, **scores}
        for (res, frames), outs in outputs.items():
            strip_png(report_dir / f"strip_{stage}_{point_name(res, frames)}.png",
                      {"input": outs["input"], "VAE": outs["VAE"], "bicubic": outs["bicubic_values"]},
                      cfg.strip_clips, zoom=max(1, 128 // res))
    return metrics, render_markdown(metrics, runs, points)


def _fmt(value: float | None, digits: int = 2) -> str:
    return "–" if value is None else f"{value:.{digits}f}"


def psnr_verdict(gains_db: list[float]) -> str:
    """One sentence: whether the VAE beats bicubic at equal values at every size, at none, or at some."""
    lo, hi = min(gains_db), max(gains_db)
    if lo > 0:
        return f"**Verdict:** the VAE beats bicubic (equal values) at every size, by {lo:.2f} to {hi:.2f} dB."
    if hi < 0:
        return f"**Verdict:** the VAE loses to bicubic (equal values) at every size, by {-hi:.2f} to {-lo:.2f} dB."
    wins = sum(g > 0 for g in gains_db)
    return (f"**Verdict:** the VAE beats bicubic (equal values) at {wins} of {len(gains_db)} sizes "
            f"(Δ from {lo:+.2f} to {hi:+.2f} dB).")


def inference_md(stage_metrics: Mapping[str, Any], points: list[tuple[int, int]]) -> list[str]:
    """Lines saying how the largest point was run and how far chunks and tiles land from a whole run."""
    lines = []
    for p in points:
        probe = stage_metrics[point_name(*p)].get("inference")
        if probe is None:
            continue
        ref = probe.get("tiles_vs", "whole")
        if probe["chunk_frames"] is None:
            chunks = "whole clips"
        elif ref == "chunked":
            chunks = (f"temporal chunks of {probe['chunk_frames']} frames (one whole clip did not fit: "
                      f"{probe['whole']})")
        else:
            chunks = (f"temporal chunks of {probe['chunk_frames']} frames (max |chunked - whole| = "
                      f"{probe['chunked_max_abs_vs_whole']:.1e} on the first clip)")
        lines += ["", f"At {p[0]} px, {p[1]} f the scores above come from {chunks}."]
        tiled = probe.get("tiled")
        if tiled:
            lines.append(f"Spatial tiles of {tiled['tile']} px overlapping by {tiled['overlap']} px, on the first "
                         f"clip: PSNR {tiled['psnr_tiled']:.2f} dB tiled vs {tiled['psnr_whole']:.2f} {ref}; "
                         f"|tiled - {ref}| mean {tiled['all_mean_abs']:.3f} (near seams {tiled['seam_mean_abs']:.3f}, "
                         f"away {tiled['away_mean_abs']:.3f}), max {tiled['all_max_abs']:.3f}, against a mean "
                         f"|output| of {tiled['scale']:.3f}. Each tile normalises with its own statistics "
                         f"(per-frame GroupNorm), so tiles cost accuracy everywhere, not only at seams.")
    return lines


def render_markdown(metrics: Mapping[str, Any], runs: Mapping[str, VideoVAETrainConfig],
                    points: list[tuple[int, int]]) -> str:
    """Return the video section of eval_vae's report.md."""
    lines = ["## Video VAE", "",
             (f"{metrics['clips']} held-out validation clips (seed {metrics['seed']}), time-centred, centre square "
             "resized to each resolution; reconstruction from the posterior mean; PSNR/SSIM in [0, 1] units. "
             "Baselines keep the same kind of code: bicubic down in space, mean of each group of `tc` frames, "
             "then back up (linear in time, bicubic in space). `bicubic (equal values)` keeps as close to the "
             "VAE's number of latent values as an integer frame size allows; `bicubic (latent grid)` keeps 3 "
             "channels on the latent's own grid. Δ is VAE minus bicubic (equal values)."), ""]
    for stage, run in runs.items():
        m = metrics[stage]["model"]
        trained = ", ".join(metrics[stage]["model"]["trained_at"])
        lines += [f"### {stage}", "",
                  (f"{m['params']:,} params, latent {m['latent_channels']} ch, x{m['temporal_compression']} time, "
                  f"x{m['spatial_compression']} space; trained at {trained} "
                  f"({run.train.steps} steps max, out_dir `{run.train.out_dir}`)."), "",
                  ("| clip size | VAE PSNR | VAE SSIM | KL / latent elem | bicubic (equal values) PSNR | SSIM | "
                  "values/elem VAE : bicubic | bicubic (latent grid) PSNR | Δ PSNR (dB) |"),
                  "| --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: |"]
        for p in points:
            e = metrics[stage][point_name(*p)]
            v, b, g = e["vae"], e["bicubic_values"], e["bicubic_grid"]
            lines.append(f"| {p[0]} px, {p[1]} f | {_fmt(v['psnr'])} | {_fmt(v['ssim'], 3)} | "
                         f"{_fmt(v['kl_per_element'], 3)} | {_fmt(b['psnr'])} | {_fmt(b['ssim'], 3)} | "
                         f"{v['values_per_element']:.4f} : {b['values_per_element']:.4f} | {_fmt(g['psnr'])} | "
                         f"{e['psnr_gain_db']:+.2f} |")
        gains = [metrics[stage][point_name(*p)]["psnr_gain_db"] for p in points]
        lines += ["", psnr_verdict(gains)]
        lines += inference_md(metrics[stage], points)
        lines += [""] + [f"![{stage} {p[0]} px](strip_{stage}_{point_name(*p)}.png)" for p in points] + [
            "", "Strips: input | VAE | bicubic (equal values), middle frame.", ""]
    return "\n".join(lines)


__all__ = [
    "TRAINERS",
    "EvalVAEConfig",
    "baseline_size",
    "bicubic_codec",
    "choose_clips",
    "evaluate_model",
    "evaluate_video_vae",
    "inference_md",
    "psnr_verdict",
    "probe_inference",
    "InferencePlan",
    "load_vae",
    "point_name",
    "reconstruct",
    "render_markdown",
    "values_per_element",
]
