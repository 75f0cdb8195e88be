"""lib.models.video_vae_inference: exact temporal chunks (streaming caches), tiled blending, seam error, errors."""
from __future__ import annotations

import math
from fractions import Fraction

import pytest
import torch

from lib.models.video_vae import CausalConv3d, VideoVAE, VideoVAEConfig
from lib.models.video_vae_inference import (
    blend_tiles,
    decode_chunked,
    decode_tiled,
    encode_chunked,
    encode_tiled,
    seam_error,
    streaming,
    tile_starts,
)

ATOL = 1e-5


def _tiny(tc: int = 4, sc: int = 4, seed: int = 0, shortcuts: bool = False) -> VideoVAE:
    torch.manual_seed(seed)
    cfg = VideoVAEConfig(channels=8, latent_channels=4, temporal_compression=tc, spatial_compression=sc, blocks=1,
                         shortcuts=shortcuts)
    return VideoVAE(cfg).eval()


def _video(*shape: int, seed: int = 1) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    return torch.rand(shape, generator=g) * 2 - 1


def _convs(model: VideoVAE) -> list[CausalConv3d]:
    return [m for m in model.modules() if isinstance(m, CausalConv3d)]


@pytest.mark.parametrize("shortcuts", [False, True])
@pytest.mark.parametrize("tc", [1, 2, 4])
def test_chunked_encode_and_decode_equal_full(tc, shortcuts):
    model, x = _tiny(tc, shortcuts=shortcuts), _video(2, 3, 13, 16, 16)  # 13 frames: not a multiple of 2 or 4
    with torch.no_grad():
        mean, logvar = model.encode(x)
        full = model.decode(mean, num_frames=13)
    for chunk_frames in sorted({tc, 2 * tc, 3 * tc, 64}):  # 64 > T: one chunk
        m, lv = encode_chunked(model, x, chunk_frames)
        torch.testing.assert_close(m, mean, atol=ATOL, rtol=0)
        torch.testing.assert_close(lv, logvar, atol=ATOL, rtol=0)
    for chunk_latents in (1, 2, 3, 64):
        torch.testing.assert_close(decode_chunked(model, mean, chunk_latents, num_frames=13), full, atol=ATOL, rtol=0)
    assert decode_chunked(model, mean, 2).shape[2] == mean.shape[2] * tc  # no num_frames: whole groups
    assert all(not c.streaming and c._cache is None for c in _convs(model))


def test_chunk_shorter_than_the_conv_cache():
    """tc 1 and chunk 1: every CausalConv3d (time_pad 2) sees one new frame per chunk."""
    model, x = _tiny(tc=1), _video(1, 3, 5, 8, 8)
    with torch.no_grad():
        torch.testing.assert_close(encode_chunked(model, x, 1)[0], model.encode(x)[0], atol=ATOL, rtol=0)


def test_chunked_encode_is_causal_across_chunk_boundaries():
    model, x = _tiny(tc=2), _video(1, 3, 12, 8, 8)
    y = x.clone()
    y[:, :, 8:] = _video(1, 3, 4, 8, 8, seed=7)  # change everything after the second 4-frame chunk
    mx, my = encode_chunked(model, x, 4)[0], encode_chunked(model, y, 4)[0]
    assert torch.equal(mx[:, :, :4], my[:, :, :4])  # latents of frames < 8 unchanged
    assert not torch.equal(mx[:, :, 4:], my[:, :, 4:])
    z = mx.clone()
    z[:, :, 3:] += 1.0
    dx, dz = decode_chunked(model, mx, 3), decode_chunked(model, z, 3)
    assert torch.equal(dx[:, :, :6], dz[:, :, :6])  # frames of latents 0..2 unchanged
    assert not torch.equal(dx[:, :, 6:], dz[:, :, 6:])


def test_streaming_is_off_and_clear_after_the_context():
    model, x = _tiny(), _video(1, 3, 8, 8, 8)
    with torch.no_grad():
        fresh = _tiny().encode(x)[0]
        with streaming(model):
            assert all(c.streaming for c in _convs(model))
            model.encode(x[:, :, :4])  # leaves caches behind inside the context
        assert torch.equal(model.encode(x)[0], fresh)
        with pytest.raises(KeyError), streaming(model):
            model.encode(x[:, :, :4])
            raise KeyError("boom")
    assert all(not c.streaming and c._cache is None for c in _convs(model))


def test_nested_streaming_and_mismatched_chunk_raise():
    model = _tiny()
    with streaming(model):
        with pytest.raises(RuntimeError, match="already streaming"), streaming(model):
            pass
        with torch.no_grad():
            model.encode(_video(1, 3, 4, 8, 8))
            with pytest.raises(RuntimeError, match="start a new stream"):
                model.encode(_video(1, 3, 4, 16, 16))


@pytest.mark.parametrize("size,tile,overlap,expected", [(16, 16, 4, [0]), (16, 32, 4, [0]), (16, 8, 0, [0, 8]),
                                                        (20, 8, 2, [0, 6, 12]), (10, 4, 1, [0, 3, 6])])
def test_tile_starts_cover_the_axis(size, tile, overlap, expected):
    starts = tile_starts(size, tile, overlap)
    assert starts == expected
    assert starts[-1] + min(tile, size) == size


@pytest.mark.parametrize("tile,overlap,scale", [(5, 2, 1), (4, 0, 1), (6, 5, 1), (3, 1, 4), (8, 4, Fraction(1, 4))])
def test_blend_weights_sum_to_one(tile, overlap, scale):
    """A pointwise fn (here a nearest resize plus a sin) is reproduced, so the blend weights sum to 1."""
    x = _video(2, 3, 2, 16, 24)

    def pointwise(t: torch.Tensor) -> torch.Tensor:
        t = torch.sin(3 * t) + t
        if scale == 1:
            return t
        size = (t.shape[-3], int(t.shape[-2] * scale), int(t.shape[-1] * scale))
        return torch.nn.functional.interpolate(t, size=size, mode="nearest")

    torch.testing.assert_close(blend_tiles(pointwise, x, tile, overlap, scale), pointwise(x), atol=1e-6, rtol=0)


def test_tile_as_large_as_the_frame_is_exactly_the_full_result():
    model, x = _tiny(), _video(1, 3, 5, 16, 16)
    with torch.no_grad():
        mean, logvar = model.encode(x)
        full = model.decode(mean, num_frames=5)
    m, lv = encode_tiled(model, x, 16, 4)
    assert torch.equal(m, mean) and torch.equal(lv, logvar)
    assert torch.equal(decode_tiled(model, mean, 4, 1, num_frames=5), full)
    assert torch.equal(decode_tiled(model, mean, 8, 2), model.decode(mean))


def test_tiled_decode_seam_error_is_measured():
    model = _tiny()
    z = torch.randn(1, 4, 2, 16, 16, generator=torch.Generator().manual_seed(3))
    with torch.no_grad():
        full = model.decode(z)
    tiled = decode_tiled(model, z, 10, 4, chunk_latents=1)
    assert tiled.shape == full.shape
    err = seam_error(full, tiled, tile=40, overlap=16)
    assert set(err) == {f"{r}_{s}" for r in ("all", "seam", "away") for s in ("max_abs", "mean_abs")} | {
        "seam_fraction", "scale"}
    assert all(math.isfinite(v) for v in err.values())
    assert 0 < err["seam_fraction"] < 1
    # FrameGroupNorm sees only the tile's statistics, so tiled != full; still well below the output's scale
    assert 0 < err["all_mean_abs"] < 0.5 * err["scale"]
    assert seam_error(full, full, tile=40, overlap=16)["all_max_abs"] == 0


def test_tiled_encode_with_chunks_matches_tiled_encode():
    model, x = _tiny(), _video(1, 3, 9, 32, 32)
    torch.testing.assert_close(encode_tiled(model, x, 16, 8, chunk_frames=4)[0], encode_tiled(model, x, 16, 8)[0],
                               atol=ATOL, rtol=0)


@pytest.mark.parametrize("call,match", [
    (lambda m, x, z: encode_chunked(m, x, 6), "chunk_frames=6 must be a multiple of temporal_compression=4"),
    (lambda m, x, z: encode_chunked(m, x, 0), "chunk_frames must be a positive integer"),
    (lambda m, x, z: decode_chunked(m, z, 0), "chunk_latents must be a positive integer"),
    (lambda m, x, z: decode_chunked(m, z, 1, num_frames=2), r"expected 5\.\.8"),
    (lambda m, x, z: encode_tiled(m, x, 10, 4), "tile=10 must be a multiple of spatial_compression=4"),
    (lambda m, x, z: encode_tiled(m, x, 8, 2), "overlap=2 must be a multiple of spatial_compression=4"),
    (lambda m, x, z: encode_tiled(m, x, 8, 8), "overlap=8 must lie in 0..7"),
    (lambda m, x, z: decode_tiled(m, z, 2, 2), "overlap=2 must lie in 0..1"),
    (lambda m, x, z: decode_tiled(m, z, 0, 0), "tile_latent must be a positive integer"),
])
def test_bad_sizes_raise_helpful_errors(call, match):
    model, x, z = _tiny(), _video(1, 3, 8, 16, 16), torch.zeros(1, 4, 2, 4, 4)
    with pytest.raises(ValueError, match=match):
        call(model, x, z)


def test_reconstruct_mean_runs_whole_chunked_or_tiled_with_the_same_layout():
    from lib.models.video_vae_inference import reconstruct_mean

    torch.manual_seed(0)
    model = VideoVAE(VideoVAEConfig(channels=8, latent_channels=4, temporal_compression=2, spatial_compression=4,
                                    blocks=1, level_channels=(4, 8))).eval()  # a narrow full-resolution level
    x = _video(1, 3, 7, 32, 32)
    whole, mean, _ = reconstruct_mean(model, x)
    with torch.no_grad():
        ref_mean, _ = model.encode(x)
        ref = model.decode(ref_mean, num_frames=7)
    assert torch.equal(whole, ref) and torch.equal(mean, ref_mean)
    chunked = reconstruct_mean(model, x, chunk_frames=2)[0]
    assert chunked.shape == x.shape and float((chunked - whole).abs().max()) < ATOL
    tiled = reconstruct_mean(model, x, chunk_frames=4, tile=16, overlap=8)[0]
    # approximate (per-tile GroupNorm statistics): another result, of the same layout and finite
    assert tiled.shape == x.shape and torch.isfinite(tiled).all() and float((tiled - whole).abs().mean()) > 0
    with pytest.raises(ValueError, match="chunk_frames: 3 is not a multiple of temporal_compression=2"):
        reconstruct_mean(model, x, chunk_frames=3)


def test_the_eval_verdict_says_win_loss_or_mixed_with_the_margins():
    from lib.eval.video_vae import psnr_verdict

    assert psnr_verdict([-5.6, -7.0, -9.1]) == ("**Verdict:** the VAE loses to bicubic (equal values) at every size, "
                                                "by 5.60 to 9.10 dB.")
    assert psnr_verdict([1.2, 0.5]) == ("**Verdict:** the VAE beats bicubic (equal values) at every size, "
                                        "by 0.50 to 1.20 dB.")
    assert "at 1 of 2 sizes (Δ from -0.30 to +0.40 dB)" in psnr_verdict([0.4, -0.3])


def test_probe_measures_tiles_against_chunks_when_a_whole_clip_does_not_fit(monkeypatch):
    import lib.eval.video_vae as ev
    from lib.models.video_vae_inference import reconstruct_mean

    def whole_runs_out_of_memory(model, x, *, chunk_frames=None, tile=None, overlap=0):
        if chunk_frames is None and tile is None:
            raise torch.OutOfMemoryError("CUDA out of memory. Tried to allocate 26.00 GiB")
        return reconstruct_mean(model, x, chunk_frames=chunk_frames, tile=tile, overlap=overlap)

    model = _tiny(tc=2, sc=4)
    x = _video(1, 3, 6, 32, 32)
    fits = ev.probe_inference(model, x, ev.InferencePlan(chunk_frames=2))
    monkeypatch.setattr(ev, "reconstruct_mean", whole_runs_out_of_memory)
    probe = ev.probe_inference(model, x, ev.InferencePlan(chunk_frames=2))
    assert fits["whole"] == "ran" and fits["tiles_vs"] == "whole" and fits["chunked_max_abs_vs_whole"] < ATOL
    assert probe["whole"].startswith("out of memory: CUDA out of memory") and probe["tiles_vs"] == "chunked"
    assert "chunked_max_abs_vs_whole" not in probe
    # chunked == whole, so the tiles land where they did against the whole run
    assert probe["tiled"]["all_mean_abs"] == pytest.approx(fits["tiled"]["all_mean_abs"], abs=1e-5)
    lines = "\n".join(ev.inference_md({"32px_6f": {"inference": probe}}, [(32, 6)]))
    assert "one whole clip did not fit: out of memory" in lines and "vs" in lines and "|tiled - chunked|" in lines
    with pytest.raises(torch.OutOfMemoryError, match="set eval_vae.chunk_frames"):
        ev.probe_inference(model, x, ev.InferencePlan())
