"""Memory-bounded inference for :class:`~lib.models.video_vae.VideoVAE`: temporal chunks and spatial tiles.

- Temporal chunks are exact. Every conv over time is causal, so a chunk needs only the last ``kernel_t - 1``
  frames each :class:`~lib.models.video_vae.CausalConv3d` saw before it; :func:`streaming` keeps those.
  ``Down`` is a stride-``ft`` kernel-``ft`` conv with no temporal padding, and ``Up`` is nearest interpolation,
  so chunks of a multiple of ``tc`` input frames (any number of latent frames) stay aligned at every level.
- Spatial tiles are approximate: :class:`~lib.models.video_vae.FrameGroupNorm` normalises with whole-frame
  statistics, which a tile does not see. Overlapping tiles are blended with linear ramps to hide the
  difference; :func:`seam_error` measures what is left.

All of it is inference only: it runs under ``torch.no_grad()`` (the streaming caches hold activations of
earlier chunks, which a backward pass through one chunk could not reach) and does not change the model's
train/eval mode.
"""
from __future__ import annotations

from collections.abc import Callable, Iterator
from contextlib import contextmanager
from fractions import Fraction

import torch
from torch import nn

from lib.models.video_vae import CausalConv3d, VideoVAE, latent_shape, repeat_frames

__all__ = ["blend_tiles", "decode_chunked", "decode_tiled", "encode_chunked", "encode_tiled", "reconstruct_mean",
           "seam_error", "streaming", "tile_starts"]


@contextmanager
def streaming(model: nn.Module) -> Iterator[nn.Module]:
    """Put every :class:`CausalConv3d` of ``model`` into streaming mode for one clip (or one tile of it).

    Caches are cleared on entry and on exit, also on an exception, so a later plain forward is unaffected.
    Calls inside the block must be consecutive chunks of the same clip, in order.
    """
    convs = [m for m in model.modules() if isinstance(m, CausalConv3d)]
    if any(c.streaming for c in convs):
        raise RuntimeError("streaming: the model is already streaming; nested streams would share one cache")
    for conv in convs:
        conv.set_streaming(True)
    try:
        yield model
    finally:
        for conv in convs:
            conv.set_streaming(False)


def _positive(name: str, value: int, fix: str) -> None:
    if not isinstance(value, int) or value < 1:
        raise ValueError(f"{name} must be a positive integer, got {value!r}; {fix}")


@torch.no_grad()
def encode_chunked(model: VideoVAE, x: torch.Tensor, chunk_frames: int) -> tuple[torch.Tensor, torch.Tensor]:
    """``model.encode(x)`` computed ``chunk_frames`` input frames at a time; equal up to float rounding.

    ``chunk_frames`` must be a multiple of ``temporal_compression`` so each chunk holds whole frame groups.
    T is padded at the end by repeating the last frame, as ``VideoVAE.encode`` does.
    """
    tc = model.config.temporal_compression
    _positive("chunk_frames", chunk_frames, f"use a multiple of temporal_compression={tc}")
    if chunk_frames % tc:
        raise ValueError(f"chunk_frames={chunk_frames} must be a multiple of temporal_compression={tc} so chunks "
                         f"hold whole frame groups; use e.g. {max(tc, chunk_frames // tc * tc)}")
    if x.ndim != 5:
        raise ValueError(f"encode_chunked: x must be [B, C, T, H, W], got {list(x.shape)}")
    latent_shape(model.config, *x.shape[2:])  # T >= 1, H and W divisible by spatial_compression
    pad = -x.shape[2] % tc
    if pad:
        x = repeat_frames(x, after=pad)
    with streaming(model):
        moments = [model.encode(chunk) for chunk in x.split(chunk_frames, dim=2)]  # each: (mean, logvar)
    means, logvars = zip(*moments, strict=True)
    return torch.cat(means, dim=2), torch.cat(logvars, dim=2)


@torch.no_grad()
def decode_chunked(model: VideoVAE, z: torch.Tensor, chunk_latents: int,
                   num_frames: int | None = None) -> torch.Tensor:
    """``model.decode(z, num_frames)`` computed ``chunk_latents`` latent frames at a time; equal up to rounding."""
    _positive("chunk_latents", chunk_latents, "the number of latent frames decoded at once")
    if z.ndim != 5 or z.shape[2] < 1:
        raise ValueError(f"decode_chunked: z must be [B, C, T', H', W'] with T' >= 1, got {list(z.shape)}")
    tc = model.config.temporal_compression
    full = z.shape[2] * tc
    if num_frames is not None and not full - tc < num_frames <= full:
        raise ValueError(f"decode_chunked: num_frames={num_frames} does not fit {full // tc} latent frames with "
                         f"temporal_compression={tc}; expected {full - tc + 1}..{full}")
    with streaming(model):
        x_hat = torch.cat([model.decode(chunk) for chunk in z.split(chunk_latents, dim=2)], dim=2)
    return x_hat if num_frames is None else x_hat[:, :, :num_frames]


def tile_starts(size: int, tile: int, overlap: int) -> list[int]:
    """Start of each tile along an axis of ``size``: step ``tile - overlap``, the last one flush with the end.

    A tile at least as large as ``size`` gives one tile ``[0]`` (then clipped to ``size``).
    """
    _positive("tile", tile, "the tile side")
    if not 0 <= overlap < tile:
        raise ValueError(f"overlap={overlap} must lie in 0..{tile - 1} (below tile={tile}) so tiles advance")
    if tile >= size:
        return [0]
    return [*range(0, size - tile, tile - overlap), size - tile]


def _ramp(starts: list[int], tile: int, index: int) -> torch.Tensor:
    """1D blend weight of tile ``index``: 1 inside, a linear ramp over its overlap with each neighbour.

    Ramps go ``1/(L+1) .. L/(L+1)`` over an overlap of ``L``, so two neighbours sum to exactly 1 there and no
    weight is 0; frame borders are not ramped (nothing to blend with).
    """
    start, end = starts[index], starts[index] + tile
    w = torch.ones(end - start, dtype=torch.float64)
    lo = starts[index - 1] + tile - start if index > 0 else 0  # overlap with the previous tile
    hi = end - starts[index + 1] if index + 1 < len(starts) else 0  # overlap with the next tile
    if lo:
        w[:lo] = torch.minimum(w[:lo], torch.arange(1, lo + 1, dtype=torch.float64) / (lo + 1))
    if hi:
        w[-hi:] = torch.minimum(w[-hi:], torch.arange(hi, 0, -1, dtype=torch.float64) / (hi + 1))
    return w


def _scaled(value: int, scale: Fraction, what: str) -> int:
    out = value * scale
    if out.denominator != 1:
        raise ValueError(f"{what}={value} times the output scale {scale} is not a whole number of output pixels; "
                         f"use a multiple of {scale.denominator}")
    return int(out)


@torch.no_grad()
def blend_tiles(fn: Callable[[torch.Tensor], torch.Tensor], x: torch.Tensor, tile: int, overlap: int,
                scale: int | Fraction = 1) -> torch.Tensor:
    """Apply ``fn`` to overlapping ``tile`` x ``tile`` windows of ``x [..., H, W]`` and blend the results.

    ``fn`` maps a window ``[..., h, w]`` to ``[..., h*scale, w*scale]`` (other dims free, the same for every
    window); ``scale`` is e.g. ``spatial_compression`` for a decoder, ``Fraction(1, sc)`` for an encoder.
    Windows cover ``x`` exactly (the last one flush with the edge). Outputs are weighted by separable linear
    ramps, normalised so the weights sum to 1 at every pixel: a pointwise ``fn`` is reproduced exactly up to
    rounding, and one window covering the frame returns ``fn(x)`` unchanged.
    """
    scale = Fraction(scale)
    H, W = x.shape[-2:]
    ys, xs = tile_starts(H, tile, overlap), tile_starts(W, tile, overlap)
    th, tw = min(tile, H), min(tile, W)
    if len(ys) == len(xs) == 1:
        return fn(x)
    oys, oxs = [_scaled(s, scale, "tile start") for s in ys], [_scaled(s, scale, "tile start") for s in xs]
    oth, otw = _scaled(th, scale, "tile"), _scaled(tw, scale, "tile")
    out_h, out_w = _scaled(H, scale, "H"), _scaled(W, scale, "W")
    out = weight = None
    for i, y0 in enumerate(ys):
        wy = _ramp(oys, oth, i)
        for j, x0 in enumerate(xs):
            y = fn(x[..., y0:y0 + th, x0:x0 + tw])
            if y.shape[-2:] != (oth, otw):
                raise ValueError(f"blend_tiles: fn returned {list(y.shape)} for a {th}x{tw} window; expected "
                                 f"{oth}x{otw} spatially (scale={scale})")
            if out is None:
                # accumulate in at least fp32: bf16 sums of several weighted windows lose precision
                out = y.new_zeros((*y.shape[:-2], out_h, out_w), dtype=torch.promote_types(y.dtype, torch.float32))
                weight = torch.zeros(out_h, out_w, dtype=torch.float64, device=y.device)
            w = wy[:, None].to(y.device) * _ramp(oxs, otw, j)[None, :].to(y.device)
            oy, ox = oys[i], oxs[j]
            out[..., oy:oy + oth, ox:ox + otw] += y * w.to(out.dtype)
            weight[oy:oy + oth, ox:ox + otw] += w
    return (out / weight.to(out.dtype)).to(y.dtype)


def _check_pixels(name: str, value: int, sc: int) -> None:
    if value % sc:
        raise ValueError(f"{name}={value} must be a multiple of spatial_compression={sc} (pixels per latent "
                         f"pixel); use {max(sc, value // sc * sc)} or {(value // sc + 1) * sc}")


@torch.no_grad()
def encode_tiled(model: VideoVAE, x: torch.Tensor, tile: int, overlap: int,
                 chunk_frames: int | None = None) -> tuple[torch.Tensor, torch.Tensor]:
    """``model.encode(x)`` over overlapping ``tile``-pixel windows (``overlap`` pixels), blended; approximate.

    ``tile`` and ``overlap`` must be multiples of ``spatial_compression`` so windows map to whole latent
    pixels. ``chunk_frames`` also splits each window in time (exact, see :func:`encode_chunked`).
    Mean and log-variance are blended alike.
    """
    sc = model.config.spatial_compression
    if x.ndim != 5:
        raise ValueError(f"encode_tiled: x must be [B, C, T, H, W], got {list(x.shape)}")
    latent_shape(model.config, *x.shape[2:])  # H and W divisible by spatial_compression, so windows are too
    _positive("tile", tile, f"the window side in pixels, a multiple of spatial_compression={sc}")
    _check_pixels("tile", tile, sc)
    _check_pixels("overlap", overlap, sc)
    tile_starts(x.shape[-1], tile, overlap)  # validates overlap < tile before any work

    def fn(window: torch.Tensor) -> torch.Tensor:
        mean, logvar = model.encode(window) if chunk_frames is None else encode_chunked(model, window, chunk_frames)
        return torch.cat([mean, logvar], dim=1)

    mean, logvar = blend_tiles(fn, x, tile, overlap, Fraction(1, sc)).chunk(2, dim=1)
    return mean, logvar


@torch.no_grad()
def decode_tiled(model: VideoVAE, z: torch.Tensor, tile_latent: int, overlap_latent: int,
                 chunk_latents: int | None = None, num_frames: int | None = None) -> torch.Tensor:
    """``model.decode(z, num_frames)`` over overlapping ``tile_latent``-latent-pixel windows, blended; approximate.

    Window and overlap are in latent pixels (``spatial_compression`` output pixels each). ``chunk_latents``
    also splits each window in time (exact, see :func:`decode_chunked`).
    """
    _positive("tile_latent", tile_latent, "the window side in latent pixels")
    tile_starts(z.shape[-1], tile_latent, overlap_latent)  # validates overlap_latent < tile_latent

    def fn(window: torch.Tensor) -> torch.Tensor:
        if chunk_latents is None:
            return model.decode(window, num_frames)
        return decode_chunked(model, window, chunk_latents, num_frames)

    return blend_tiles(fn, z, tile_latent, overlap_latent, model.config.spatial_compression)


def seam_error(full: torch.Tensor, tiled: torch.Tensor, *, tile: int, overlap: int,
               band: int = 2) -> dict[str, float]:
    """Compare a tiled result with the untiled one, overall and near tile seams vs away from them.

    ``tile`` and ``overlap`` are in ``full``'s pixels (for :func:`decode_tiled`: the latent sizes times
    ``spatial_compression``). The seam band is every pixel within ``band`` of an interior tile edge (where a
    window starts or ends inside the frame). Returns ``max_abs``/``mean_abs`` for ``all``, ``seam`` and
    ``away`` (0.0 where a region is empty), ``seam_fraction`` and ``scale`` (``full``'s mean absolute value).
    """
    if full.shape != tiled.shape:
        raise ValueError(f"seam_error: shapes differ, full {list(full.shape)} vs tiled {list(tiled.shape)}")
    H, W = full.shape[-2:]
    err = (full - tiled).abs().double()

    def near_edges(size: int) -> torch.Tensor:
        edges = {e for s in tile_starts(size, tile, overlap) for e in (s, s + min(tile, size))} - {0, size}
        pos = torch.arange(size)
        mask = torch.zeros(size, dtype=torch.bool)
        for e in edges:  # an edge at e lies between pixels e-1 and e
            mask |= (pos >= e - band) & (pos < e + band)
        return mask

    seam = (near_edges(H)[:, None] | near_edges(W)[None, :]).to(err.device).expand_as(err)

    def stats(values: torch.Tensor) -> tuple[float, float]:
        return (values.max().item(), values.mean().item()) if values.numel() else (0.0, 0.0)

    out = {}
    for name, values in (("all", err.flatten()), ("seam", err[seam]), ("away", err[~seam])):
        out[f"{name}_max_abs"], out[f"{name}_mean_abs"] = stats(values)
    out["seam_fraction"] = seam.double().mean().item()
    out["scale"] = full.abs().double().mean().item()
    return out


@torch.no_grad()
def reconstruct_mean(model: VideoVAE, x: torch.Tensor, *, chunk_frames: int | None = None, tile: int | None = None,
                     overlap: int = 0) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Return ``(decode(mean), mean, logvar)`` of clips ``x``: whole (both None), in temporal chunks of
    ``chunk_frames`` input frames (exact), and/or in spatial tiles of ``tile`` pixels overlapping by ``overlap``
    (approximate, see :func:`seam_error`). The decoder uses the same chunks and tiles, in latent units."""
    cfg, T = model.config, x.shape[2]
    tc, sc = cfg.temporal_compression, cfg.spatial_compression
    if chunk_frames is not None and chunk_frames % tc:
        raise ValueError(f"chunk_frames: {chunk_frames} is not a multiple of temporal_compression={tc}; "
                         f"use e.g. {tc * max(1, round(chunk_frames / tc))}")
    chunk_latents = None if chunk_frames is None else chunk_frames // tc
    if tile is not None:
        mean, logvar = encode_tiled(model, x, tile, overlap, chunk_frames)
        return decode_tiled(model, mean, tile // sc, overlap // sc, chunk_latents, num_frames=T), mean, logvar
    if chunk_frames is not None:
        mean, logvar = encode_chunked(model, x, chunk_frames)
        return decode_chunked(model, mean, chunk_latents, num_frames=T), mean, logvar
    mean, logvar = model.encode(x)
    return model.decode(mean, num_frames=T), mean, logvar
