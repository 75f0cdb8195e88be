"""LQ synthesis for super-resolution: shapes, determinism, and each degradation doing what it says."""

import dataclasses
import itertools
import math

import pytest
import torch
import torch.nn.functional as F

from lib.config import ConfigError, from_dict
from lib.video.degrade import (
    DegradeConfig,
    bicubic_upsample,
    degrade,
    degrade_with_params,
    from_unit,
    gaussian_blur,
    to_unit,
    validation_generator,
)

OFF = {"p_blur": 0.0, "p_noise": 0.0, "p_compress": 0.0, "compression": "none"}


def _smooth_clip(b=2, t=4, h=64, w=64, dtype=torch.float32):
    """Low-frequency colour gradients that drift over time, in [-1, 1]."""
    y = torch.linspace(0, 1, h).view(1, 1, 1, h, 1)
    x = torch.linspace(0, 1, w).view(1, 1, 1, 1, w)
    tt = torch.arange(t, dtype=torch.float32).view(1, 1, t, 1, 1) / max(t, 1)
    phase = torch.arange(b * 3, dtype=torch.float32).view(b, 3, 1, 1, 1)
    clip = 0.6 * torch.sin(2 * math.pi * (x + 0.5 * y + 0.1 * tt) + phase) * torch.cos(math.pi * (y - 0.3 * x) + phase)
    return clip.to(dtype)


def _textured_clip(b=2, t=3, h=64, w=64, seed=0):
    g = torch.Generator().manual_seed(seed)
    noise = torch.rand(b, 3, t, h // 8, w // 8, generator=g) * 2 - 1
    up = F.interpolate(noise.flatten(0, 1), size=(h, w), mode="nearest").view(b, 3, t, h, w)
    return (0.7 * up + 0.3 * _smooth_clip(b, t, h, w)).clamp(-1, 1)


def _checkerboard(cell, b=1, t=2, h=64, w=64):
    yy = torch.arange(h).view(h, 1) // cell
    xx = torch.arange(w).view(1, w) // cell
    board = ((yy + xx) % 2).float() * 2 - 1
    return board.expand(b, 3, t, h, w).clone()


def _high_freq_energy(clip):
    """Energy of the discrete Laplacian over all frames: a high-pass measure."""
    f = clip.reshape(-1, 1, *clip.shape[-2:])
    lap = torch.tensor([[0.0, 1, 0], [1, -4, 1], [0, 1, 0]]).view(1, 1, 3, 3)
    return F.conv2d(f, lap).pow(2).mean().item()


def _psnr(a, b, peak=2.0):
    mse = (a.double() - b.double()).pow(2).mean().item()
    return float("inf") if mse == 0 else 10 * math.log10(peak**2 / mse)


# ----------------------------------------------------------------------------- config


def test_config_defaults_and_validation():
    cfg = DegradeConfig()
    assert cfg.scale == 4 and cfg.compression == "jpeg" and cfg.jpeg_quality == (40, 95)
    assert DegradeConfig(blur_sigma=[0.5, 1.0]).blur_sigma == (0.5, 1.0)  # lists from YAML -> tuples
    bad = [
        {"scale": 0},
        {"scale": 2.0},
        {"blur_sigma": (1.0, 0.5)},
        {"blur_sigma": (-0.1, 0.5)},
        {"noise_sigma": (0.0,)},
        {"jpeg_quality": (0, 50)},
        {"jpeg_quality": (50, 101)},
        {"jpeg_quality": (40.5, 90)},
        {"compression": "webp"},
        {"p_noise": 1.5},
        {"p_blur": -0.1},
    ]
    for kw in bad:
        with pytest.raises(ValueError):
            DegradeConfig(**kw)


def test_config_from_params_section():
    cfg = from_dict(DegradeConfig, {"scale": 2, "noise_sigma": [0.0, 0.05], "compression": "none"})
    assert cfg == DegradeConfig(scale=2, noise_sigma=(0.0, 0.05), compression="none")
    with pytest.raises(ConfigError, match="jpeg_qualty"):
        from_dict(DegradeConfig, {"jpeg_qualty": [10, 20]})


# ----------------------------------------------------------------------------- shapes and determinism


@pytest.mark.parametrize("scale,h,w", [(2, 18, 30), (2, 64, 64), (4, 36, 52), (4, 64, 96)])
def test_shapes(scale, h, w):
    hq = _textured_clip(b=3, t=2, h=h, w=w)
    lq, params = degrade_with_params(hq, DegradeConfig(scale=scale, p_compress=1.0), validation_generator(0))
    assert lq.shape == (3, 3, 2, h // scale, w // scale)
    assert lq.dtype == hq.dtype and lq.min() >= -1 and lq.max() <= 1
    assert len(params) == 3 and all(p.jpeg_quality is not None for p in params)
    assert bicubic_upsample(lq, scale).shape == hq.shape


def test_size_not_divisible_by_scale_raises():
    with pytest.raises(ValueError, match="divisible"):
        degrade(torch.zeros(1, 3, 2, 30, 32), DegradeConfig(scale=4), validation_generator(0))
    with pytest.raises(ValueError, match=r"\[B, 3, T, H, W\]"):
        degrade(torch.zeros(3, 2, 32, 32), DegradeConfig(scale=4), validation_generator(0))


def test_same_seed_same_output_different_seed_differs():
    hq = _textured_clip(b=3)
    cfg = DegradeConfig(scale=2, p_noise=1.0, p_compress=1.0)
    a, pa = degrade_with_params(hq, cfg, validation_generator(123))
    b, pb = degrade_with_params(hq, cfg, validation_generator(123))
    c, pc = degrade_with_params(hq, cfg, validation_generator(124))
    assert torch.equal(a, b) and pa == pb
    assert not torch.allclose(a, c) and pa != pc


def test_params_differ_per_clip_and_lie_in_range():
    cfg = DegradeConfig(scale=2, p_blur=1.0, p_noise=1.0, p_compress=1.0)
    _, params = degrade_with_params(_textured_clip(b=6, t=1, h=16, w=16), cfg, validation_generator(5))
    assert len({p.blur_sigma for p in params}) == 6
    for p in params:
        assert 0.2 <= p.blur_sigma <= 1.5 and 0.0 <= p.noise_sigma <= 0.03 and 40 <= p.jpeg_quality <= 95
        assert set(p.as_dict()) == {"blur_sigma", "noise_sigma", "jpeg_quality"}


def test_batch_split_gives_same_lq():
    """Validation LQ does not depend on the batch size, only on clip order and seed."""
    hq = _textured_clip(b=4, t=2, h=32, w=32)
    cfg = DegradeConfig(scale=2, p_noise=1.0, p_compress=1.0)
    whole = degrade(hq, cfg, validation_generator(9))
    g = validation_generator(9)
    parts = torch.cat([degrade(hq[:1], cfg, g), degrade(hq[1:3], cfg, g), degrade(hq[3:], cfg, g)])
    assert torch.equal(whole, parts)


# ----------------------------------------------------------------------------- each step


@pytest.mark.parametrize("scale", [2, 4])
def test_all_off_equals_plain_antialiased_bicubic(scale):
    hq = _textured_clip(b=2, t=3, h=32, w=48)
    lq, params = degrade_with_params(hq, DegradeConfig(scale=scale, **OFF), validation_generator(0))
    frames = hq.permute(0, 2, 1, 3, 4).flatten(0, 1)
    ref = F.interpolate(frames, scale_factor=1 / scale, mode="bicubic", antialias=True, align_corners=False)
    ref = ref.clamp(-1, 1).view(2, 3, 3, 32 // scale, 48 // scale).permute(0, 2, 1, 3, 4)
    torch.testing.assert_close(lq, ref, atol=1e-6, rtol=0)
    assert all(p.blur_sigma == 0 and p.noise_sigma == 0 and p.jpeg_quality is None for p in params)


def test_blur_lowers_high_frequencies_monotonically():
    board = _checkerboard(cell=4, h=64, w=64)
    sigmas = [0.0, 0.3, 0.6, 1.0, 1.5, 2.5, 4.0]
    # the bare blur
    energies = [_high_freq_energy(gaussian_blur(board[0].permute(1, 0, 2, 3), s)) for s in sigmas]
    assert all(a > b for a, b in itertools.pairwise(energies)), energies
    # through the pipeline (blur before the downsample), cells of 2*scale pixels

    def cfg_for(s):
        return DegradeConfig(scale=2, blur_sigma=(s, s), p_blur=1.0, p_noise=0.0, compression="none")

    lq_energies = [_high_freq_energy(degrade(board, cfg_for(s), validation_generator(0))) for s in sigmas]
    assert all(a > b for a, b in itertools.pairwise(lq_energies)), lq_energies


@pytest.mark.parametrize("sigma", [0.2, 0.7, 1.5, 3.0])
def test_matmul_blur_equals_separable_conv2d(sigma):
    """The fast banded-matrix blur is the same separable conv2d with replicate edges."""
    from lib.video.degrade import _gaussian_blur_conv

    frames = _textured_clip(b=1, t=2, h=24, w=40)[0].permute(1, 0, 2, 3)
    torch.testing.assert_close(gaussian_blur(frames, sigma), _gaussian_blur_conv(frames, sigma), atol=1e-6, rtol=0)


def test_noise_std_matches_sampled_sigma_on_flat_clip():
    flat = torch.zeros(4, 3, 4, 128, 128)  # mid grey: unit intensity 0.5, far from the clamp
    cfg = DegradeConfig(scale=2, noise_sigma=(0.01, 0.05), p_noise=1.0, p_blur=0.0, compression="none")
    lq, params = degrade_with_params(flat, cfg, validation_generator(3))
    unit = to_unit(lq)
    for i, p in enumerate(params):
        assert 0.01 <= p.noise_sigma <= 0.05
        measured = unit[i].std().item()
        assert abs(measured - p.noise_sigma) <= 0.1 * p.noise_sigma, (measured, p.noise_sigma)
        assert abs(unit[i].mean().item() - 0.5) < 0.01


def test_jpeg_low_quality_differs_more_than_high_quality():
    hq = _textured_clip(b=2, t=2, h=64, w=64)
    base = degrade(hq, DegradeConfig(scale=2, **OFF), validation_generator(0))

    def err(q):
        cfg = DegradeConfig(scale=2, jpeg_quality=(q, q), p_compress=1.0, p_blur=0.0, p_noise=0.0)
        lq, params = degrade_with_params(hq, cfg, validation_generator(0))
        assert all(p.jpeg_quality == q for p in params)
        return (lq - base).pow(2).mean().item()

    e10, e95 = err(10), err(95)
    assert e10 > 4 * e95 > 0, (e10, e95)


def test_uint8_and_float_conventions_round_trip():
    u8 = torch.randint(0, 256, (2, 3, 2, 16, 16), dtype=torch.uint8, generator=torch.Generator().manual_seed(0))
    assert torch.equal(from_unit(to_unit(u8), torch.uint8), u8)
    fl = _smooth_clip(b=2, t=2, h=16, w=16)
    torch.testing.assert_close(from_unit(to_unit(fl), torch.float32), fl, atol=1e-6, rtol=0)
    assert to_unit(u8).min() >= 0 and to_unit(u8).max() <= 1

    # The pipeline gives the same LQ (to one grey level) for the uint8 clip and its float twin.
    as_float = u8.float() / 127.5 - 1.0
    cfg = DegradeConfig(scale=2, p_noise=1.0, p_compress=1.0)
    lq8, p8 = degrade_with_params(u8, cfg, validation_generator(1))
    lqf, pf = degrade_with_params(as_float, cfg, validation_generator(1))
    assert lq8.dtype == torch.uint8 and lqf.dtype == torch.float32 and p8 == pf
    assert (lq8.int() - from_unit(to_unit(lqf), torch.uint8).int()).abs().max() <= 1
    up8 = bicubic_upsample(lq8, 2)
    assert up8.dtype == torch.uint8 and up8.shape == u8.shape


def test_bicubic_baseline_psnr_is_finite_and_sane_on_smooth_clip():
    hq = _smooth_clip(b=2, t=4, h=64, w=64)
    for scale in (2, 4):
        lq = degrade(hq, DegradeConfig(scale=scale, p_noise=1.0, p_compress=1.0), validation_generator(0))
        psnr = _psnr(bicubic_upsample(lq, scale), hq)
        assert 22.0 < psnr < float("inf"), (scale, psnr)
    torch.testing.assert_close(bicubic_upsample(hq, 1), hq, atol=1e-6, rtol=0)


def test_generator_on_other_device_and_no_generator():
    hq = _textured_clip(b=1, t=1, h=16, w=16)
    assert degrade(hq, DegradeConfig(scale=2)).shape == (1, 3, 1, 8, 8)  # global RNG


@pytest.mark.skipif(not torch.cuda.is_available(), reason="no CUDA device")
def test_cuda_matches_cpu_with_cpu_generator():
    hq = _textured_clip(b=2, t=2, h=32, w=32)
    cfg = DegradeConfig(scale=2, p_noise=1.0, p_compress=0.0)
    cpu, pc = degrade_with_params(hq, cfg, validation_generator(4))
    gpu, pg = degrade_with_params(hq.cuda(), cfg, validation_generator(4))
    assert gpu.is_cuda and pc == pg
    torch.testing.assert_close(gpu.cpu(), cpu, atol=1e-4, rtol=0)
    g2 = degrade(hq.cuda(), DegradeConfig(scale=2, p_compress=1.0), validation_generator(4, "cuda"))
    assert g2.is_cuda and g2.shape == (2, 3, 2, 16, 16)


# ----------------------------------------------------------------------------- kind: simple is unchanged

# sha256 of the LQ bytes, computed by running lib/video/degrade.py as it was BEFORE degrade.kind / realesrgan_video
# existed (same inputs, seeds and configs as below; torch 2.13 CPU). `simple` must stay bit-identical to it.
_SIMPLE_BEFORE_KIND = {
    "default_s4": "c3dc69a3034c9e0338d6d725b292dbb42663a49d9c2cd324ea3d8704111c420c",
    "allon_s2": "e3e5e037cbe2d5846503b78bf6aa64958d793fc1ac472f31ab4637bd68250c4e",
    "u8_s4": "4ebe6e273449fae99ed9e564a5e92c1da6d12a03258ca19fb3ab1cc6586d6306",
}


def _uniform_clip(b, t, h, w, seed):
    return torch.rand(b, 3, t, h, w, generator=torch.Generator().manual_seed(seed)) * 2 - 1


def test_simple_kind_is_bit_identical_to_before_kinds_existed():
    import hashlib

    cases = {
        "default_s4": (_uniform_clip(2, 4, 32, 32, 0), DegradeConfig(), 7),
        "allon_s2": (_uniform_clip(3, 2, 24, 40, 1), DegradeConfig(scale=2, p_blur=1.0, p_noise=1.0, p_compress=1.0),
                     11),
        "u8_s4": ((_uniform_clip(2, 2, 32, 32, 2) * 127.5 + 127.5).round().to(torch.uint8),
                  DegradeConfig(p_noise=1.0, p_compress=1.0), 3),
    }
    assert DegradeConfig().kind == "simple"
    for name, (hq, cfg, seed) in cases.items():
        for c in (cfg, dataclasses.replace(cfg, kind="simple")):
            lq = degrade(hq, c, validation_generator(seed))
            assert hashlib.sha256(lq.contiguous().numpy().tobytes()).hexdigest() == _SIMPLE_BEFORE_KIND[name], name


def test_kind_is_checked():
    with pytest.raises(ConfigError, match="kind"):
        from_dict(DegradeConfig, {"kind": "realesrgan"})
    assert from_dict(DegradeConfig, {"kind": "realesrgan_video"}).kind == "realesrgan_video"
