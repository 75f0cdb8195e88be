"""``degrade.kind: realesrgan_video``: kernels against independent formulas, sampled ranges, the chain, the codec."""

import math

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from scipy import ndimage, special

from lib.config import ConfigError, from_dict, to_dict
from lib.video.degrade import DegradeConfig, degrade, degrade_with_params, to_unit, validation_generator
from lib.video.degrade_realesrgan import (
    DRAWS_PER_CLIP,
    KERNEL_KINDS,
    KernelParams,
    RealESRGANConfig,
    VideoDegradeParams,
    add_noise,
    codec_roundtrip,
    filter2d,
    gaussian_kernel,
    generalized_gaussian_kernel,
    kernel_from_params,
    plateau_kernel,
    sample_params,
    sinc_kernel,
)

VIDEO = DegradeConfig(kind="realesrgan_video")
NO_CODEC = DegradeConfig(kind="realesrgan_video", realesrgan=RealESRGANConfig(p_codec=0.0))


def _clip(b=2, t=4, h=32, w=32, seed=0):
    """Blocky random colours plus a smooth gradient, in [-1, 1]."""
    g = torch.Generator().manual_seed(seed)
    blocks = torch.rand(b * t, 3, h // 8, w // 8, generator=g) * 2 - 1
    up = F.interpolate(blocks, size=(h, w), mode="bilinear", align_corners=False)
    ramp = torch.linspace(-0.3, 0.3, w).view(1, 1, 1, w)
    return (0.7 * up + ramp).clamp(-1, 1).view(b, t, 3, h, w).permute(0, 2, 1, 3, 4).contiguous()


def _psnr_u8(a, b):
    mse = np.mean((a.astype(np.float64) - b.astype(np.float64)) ** 2)
    return float("inf") if mse == 0 else 10 * math.log10(255.0**2 / mse)


def _basicsr_kernel(size, sig_x, sig_y, theta, beta=1.0, shape="gauss"):
    """BasicSR's formulas, written the way ``basicsr/data/degradations.py`` does (numpy, explicit inverse)."""
    ax = np.arange(-size // 2 + 1.0, size // 2 + 1.0)
    xx, yy = np.meshgrid(ax, ax)
    grid = np.stack([xx, yy], axis=-1)
    u = np.array([[np.cos(theta), -np.sin(theta)], [np.sin(theta), np.cos(theta)]])
    sigma = u @ np.diag([sig_x**2, sig_y**2]) @ u.T
    q = np.sum(np.dot(grid, np.linalg.inv(sigma)) * grid, 2)
    k = {"gauss": np.exp(-0.5 * q), "generalized": np.exp(-0.5 * q**beta), "plateau": 1 / (q**beta + 1)}[shape]
    return k / k.sum()


# ----------------------------------------------------------------------------- kernels


@pytest.mark.parametrize("size,sigma", [(7, 0.2), (13, 1.0), (21, 3.0)])
def test_iso_gaussian_is_outer_product_of_1d_gaussians(size, sigma):
    t = np.arange(size) - (size - 1) / 2
    g = np.exp(-(t**2) / (2 * sigma**2))
    ref = np.outer(g, g) / np.outer(g, g).sum()
    np.testing.assert_allclose(gaussian_kernel(size, sigma).numpy(), ref, rtol=0, atol=1e-12)


def test_axis_aligned_aniso_gaussian_is_outer_product_and_rotation_swaps_axes():
    t = np.arange(15) - 7.0
    gx, gy = np.exp(-(t**2) / (2 * 2.5**2)), np.exp(-(t**2) / (2 * 0.8**2))
    ref = np.outer(gy, gx)  # rows vary with y, columns with x
    np.testing.assert_allclose(gaussian_kernel(15, 2.5, 0.8, 0.0).numpy(), ref / ref.sum(), atol=1e-12)
    np.testing.assert_allclose(gaussian_kernel(15, 2.5, 0.8, math.pi / 2).numpy(), (ref / ref.sum()).T, atol=1e-12)


@pytest.mark.parametrize("seed", range(5))
def test_kernels_match_basicsr_formulas(seed):
    rng = np.random.default_rng(seed)
    size = int(rng.choice(np.arange(7, 22, 2)))
    sx, sy, theta = rng.uniform(0.2, 3), rng.uniform(0.2, 3), rng.uniform(-math.pi, math.pi)
    beta_g, beta_p = rng.uniform(0.5, 4), rng.uniform(1, 2)
    np.testing.assert_allclose(gaussian_kernel(size, sx, sy, theta).numpy(), _basicsr_kernel(size, sx, sy, theta),
                               atol=1e-12)
    np.testing.assert_allclose(generalized_gaussian_kernel(size, sx, sy, theta, beta_g).numpy(),
                               _basicsr_kernel(size, sx, sy, theta, beta_g, "generalized"), atol=1e-12)
    np.testing.assert_allclose(plateau_kernel(size, sx, sy, theta, beta_p).numpy(),
                               _basicsr_kernel(size, sx, sy, theta, beta_p, "plateau"), atol=1e-12)
    # beta = 1: the generalized Gaussian is the Gaussian
    gauss = gaussian_kernel(size, sx, sy, theta)
    torch.testing.assert_close(generalized_gaussian_kernel(size, sx, sy, theta, 1.0), gauss)


@pytest.mark.parametrize("size,omega", [(7, math.pi / 3), (13, math.pi / 2), (21, math.pi / 5), (21, math.pi)])
def test_sinc_kernel_matches_bessel_formula(size, omega):
    c = (size - 1) / 2
    yy, xx = np.mgrid[:size, :size]
    r = np.hypot(xx - c, yy - c)
    with np.errstate(divide="ignore", invalid="ignore"):
        ref = omega * special.j1(omega * r) / (2 * np.pi * r)
    ref[size // 2, size // 2] = omega**2 / (4 * np.pi)
    # torch.special.bessel_j1 is good to ~1e-7 absolute here (scipy: ~1e-15): plenty for a blur kernel
    np.testing.assert_allclose(sinc_kernel(size, omega).numpy(), ref / ref.sum(), rtol=0, atol=2e-7)


@pytest.mark.parametrize("size,omega", [(21, math.pi / 3), (21, math.pi / 2), (15, 2.0)])
def test_sinc_frequency_response_cuts_off_at_omega(size, omega):
    n = 256
    response = np.abs(np.fft.fft2(sinc_kernel(size, omega).numpy(), s=(n, n)))
    f = np.fft.fftfreq(n) * 2 * np.pi
    fy, fx = np.meshgrid(f, f, indexing="ij")
    radius = np.hypot(fx, fy)
    assert response[radius < 0.5 * omega].min() > 0.8
    assert response[radius > 1.5 * omega].max() < 0.1
    assert 0.35 < response[np.abs(radius - omega) < 0.05].mean() < 0.65  # half amplitude at the cut-off


def test_every_sampled_kernel_is_normalised_odd_and_point_symmetric():
    g = torch.Generator().manual_seed(0)
    kinds = set()
    for _ in range(300):
        p = sample_params(RealESRGANConfig(), torch.rand(DRAWS_PER_CLIP, generator=g, dtype=torch.float64).tolist())
        for kp in (p.kernel1, p.kernel2, p.final_sinc):
            if kp is None:
                continue
            k = kernel_from_params(kp)
            kinds.add(kp.kind)
            assert k.shape == (kp.size, kp.size) and kp.size % 2 == 1
            assert abs(k.sum().item() - 1) < 1e-12 and torch.isfinite(k).all()
            torch.testing.assert_close(k, k.flip(0, 1), atol=1e-12, rtol=0)  # all kinds are point-symmetric
    assert kinds == {*KERNEL_KINDS, "sinc"}


def test_filter2d_is_reflect_padded_correlation():
    g = torch.Generator().manual_seed(1)
    frames = torch.rand(2, 3, 12, 10, generator=g, dtype=torch.float64)
    kernel = torch.rand(5, 5, generator=g, dtype=torch.float64)  # asymmetric: catches a flipped kernel
    out = filter2d(frames, kernel).numpy()
    for n in range(2):
        for c in range(3):
            ref = ndimage.correlate(frames[n, c].numpy(), kernel.numpy(), mode="mirror")
            np.testing.assert_allclose(out[n, c], ref, atol=1e-12)
    delta = torch.zeros(21, 21, dtype=torch.float64)
    delta[10, 10] = 1
    torch.testing.assert_close(filter2d(frames, delta), frames)  # frames smaller than the radius: replicate


# ----------------------------------------------------------------------------- sampled parameters


def _draw_many(cfg, n, seed=0):
    g = torch.Generator().manual_seed(seed)
    return [sample_params(cfg, torch.rand(DRAWS_PER_CLIP, generator=g, dtype=torch.float64).tolist())
            for _ in range(n)]


def _check_kernel(kp, sigma, betag, betap, sizes=(7, 21)):
    assert sizes[0] <= kp.size <= sizes[1] and kp.size % 2 == 1
    if kp.kind == "sinc":
        low = math.pi / 3 if kp.size < 13 else math.pi / 5
        assert low <= kp.omega_c <= math.pi
        return
    assert sigma[0] <= kp.sigma_x <= sigma[1] and sigma[0] <= kp.sigma_y <= sigma[1]
    if "aniso" in kp.kind:
        assert -math.pi <= kp.theta <= math.pi
    else:
        assert kp.sigma_x == kp.sigma_y and kp.theta == 0
    if kp.kind.startswith("generalized"):
        assert betag[0] <= kp.beta <= betag[1]
    elif kp.kind.startswith("plateau"):
        assert betap[0] <= kp.beta <= betap[1]
    else:
        assert kp.beta == 1


def test_sampled_parameters_lie_in_the_published_ranges_with_the_published_frequencies():
    cfg = RealESRGANConfig()
    draws = _draw_many(cfg, 4000)
    for p in draws:
        _check_kernel(p.kernel1, (0.2, 3.0), (0.5, 4.0), (1.0, 2.0))
        if p.kernel2 is not None:
            _check_kernel(p.kernel2, (0.2, 1.5), (0.5, 4.0), (1.0, 2.0))
        if p.final_sinc is not None:
            assert p.final_sinc.kind == "sinc" and math.pi / 3 <= p.final_sinc.omega_c <= math.pi
            assert 7 <= p.final_sinc.size <= 21 and p.final_sinc.size % 2 == 1
        assert 0.15 <= p.resize1 <= 1.5 and 0.3 <= p.resize2 <= 1.2
        assert {p.mode1, p.mode2, p.final_mode} <= {"area", "bilinear", "bicubic"}
        for kind, level, (glo, ghi), (plo, phi) in ((p.noise1, p.noise1_level, (1, 30), (0.05, 3)),
                                                     (p.noise2, p.noise2_level, (1, 25), (0.05, 2.5))):
            assert (glo <= level <= ghi) if kind == "gaussian" else (kind == "poisson" and plo <= level <= phi)
        assert 30 <= p.jpeg1 <= 95 and 30 <= p.jpeg2 <= 95
        assert p.codec in ("libx264", "libvpx-vp9") and 1e4 <= p.codec_bitrate <= 1e5
        assert set(p.as_dict()) >= {"kernel1", "kernel2", "final_sinc", "codec", "codec_bitrate"}

    def freq(pred):
        return sum(map(pred, draws)) / len(draws)

    tol = 0.03
    assert abs(freq(lambda p: p.kernel1.kind == "sinc") - 0.1) < tol
    for kind, w in zip(KERNEL_KINDS, (0.45, 0.25, 0.12, 0.03, 0.12, 0.03), strict=True):
        assert abs(freq(lambda p, k=kind: p.kernel1.kind == k) - 0.9 * w) < tol, kind
    assert abs(freq(lambda p: p.kernel2 is not None) - 0.8) < tol
    assert abs(freq(lambda p: p.final_sinc is not None) - 0.8) < tol
    assert abs(freq(lambda p: p.resize1 > 1) - 0.2) < tol and abs(freq(lambda p: p.resize1 < 1) - 0.7) < tol
    assert abs(freq(lambda p: p.resize2 > 1) - 0.3) < tol and abs(freq(lambda p: p.resize2 == 1) - 0.3) < tol
    assert abs(freq(lambda p: p.noise1 == "gaussian") - 0.5) < tol and abs(freq(lambda p: p.gray2) - 0.4) < tol
    assert abs(freq(lambda p: p.sinc_first) - 0.5) < tol and abs(freq(lambda p: p.codec == "libx264") - 0.5) < tol
    assert len({p.jpeg1 for p in draws}) == 66  # every quality of 30..95 occurs
    assert {p.kernel1.size for p in draws} == set(range(7, 22, 2))


def test_sampled_parameters_follow_a_custom_config():
    cfg = RealESRGANConfig(kernel_size=(9, 11), kernel_prob=(0, 1, 0, 0, 0, 1), sinc_prob=0.0, blur_sigma=(1.0, 1.2),
                           betap_range=(0.8, 1.0), resize_prob=(0, 0, 1), noise_range=(5, 5), gaussian_noise_prob=1,
                           jpeg_range=(50, 52), second_blur_prob=0, final_sinc_prob=1, p_codec=0.0)
    for p in _draw_many(cfg, 500):
        assert p.kernel1.kind in ("aniso", "plateau_aniso") and p.kernel1.size in (9, 11)
        _check_kernel(p.kernel1, (1.0, 1.2), (0.5, 4.0), (0.8, 1.0), sizes=(9, 11))
        assert p.resize1 == 1.0 and p.noise1 == "gaussian" and p.noise1_level == 5 and 50 <= p.jpeg1 <= 52
        assert p.kernel2 is None and p.final_sinc is not None and p.codec is None and p.codec_bitrate is None


def test_sample_params_needs_exactly_its_draws():
    with pytest.raises(ValueError, match=str(DRAWS_PER_CLIP)):
        sample_params(RealESRGANConfig(), [0.5] * (DRAWS_PER_CLIP - 1))


# ----------------------------------------------------------------------------- the chain


@pytest.mark.parametrize("cfg", [VIDEO, NO_CODEC], ids=["codec", "no_codec"])
def test_same_seed_same_lq_different_seed_differs(cfg):
    hq = _clip(b=3)
    a, pa = degrade_with_params(hq, cfg, validation_generator(7))
    b, pb = degrade_with_params(hq, cfg, validation_generator(7))
    c, pc = degrade_with_params(hq, cfg, validation_generator(8))
    assert torch.equal(a, b) and pa == pb and all(isinstance(p, VideoDegradeParams) for p in pa)
    assert not torch.equal(a, c) and pa != pc


def test_codec_path_is_bit_exact_for_every_codec():
    hq = _clip(b=2, t=5)
    for codec in ("libx264", "libvpx-vp9", "mpeg4"):
        cfg = DegradeConfig(kind="realesrgan_video", realesrgan=RealESRGANConfig(codecs=(codec,), p_codec=1.0))
        a, pa = degrade_with_params(hq, cfg, validation_generator(3))
        b, _ = degrade_with_params(hq, cfg, validation_generator(3))
        assert all(p.codec == codec for p in pa) and torch.equal(a, b), codec


def test_batch_split_gives_same_lq():
    hq = _clip(b=4, t=3)
    whole = degrade(hq, VIDEO, validation_generator(9))
    g = validation_generator(9)
    parts = torch.cat([degrade(hq[:1], VIDEO, g), degrade(hq[1:3], VIDEO, g), degrade(hq[3:], VIDEO, g)])
    assert torch.equal(whole, parts)


@pytest.mark.parametrize("scale,h,w", [(4, 32, 32), (4, 36, 52), (2, 24, 40)])
def test_shape_range_dtype_and_8bit_grid(scale, h, w):
    hq = _clip(b=2, t=3, h=h, w=w)
    for seed in range(3):
        cfg = DegradeConfig(scale=scale, kind="realesrgan_video")
        lq = degrade(hq, cfg, validation_generator(seed))
        assert lq.shape == (2, 3, 3, h // scale, w // scale) and lq.dtype == torch.float32
        assert lq.min() >= -1 and lq.max() <= 1
        levels = to_unit(lq) * 255
        assert (levels - levels.round()).abs().max() < 1e-3  # Real-ESRGAN rounds the LQ to 8-bit levels
    u8 = ((hq + 1) * 127.5).round().to(torch.uint8)
    lq8 = degrade(u8, DegradeConfig(scale=scale, kind="realesrgan_video"), validation_generator(0))
    assert lq8.dtype == torch.uint8 and lq8.shape == (2, 3, 3, h // scale, w // scale)


def test_one_set_of_parameters_per_clip_noise_per_frame():
    static = _clip(b=2, t=1, h=32, w=32).expand(2, 3, 4, 32, 32).contiguous()  # 4 identical frames
    quiet = RealESRGANConfig(noise_range=(0, 0), poisson_scale_range=(0, 0), noise_range2=(0, 0),
                             poisson_scale_range2=(0, 0), p_codec=0.0)
    lq = degrade(static, DegradeConfig(kind="realesrgan_video", realesrgan=quiet), validation_generator(2))
    assert all(torch.equal(lq[:, :, 0], lq[:, :, i]) for i in range(1, 4))  # same kernels, resizes, JPEG
    noisy = RealESRGANConfig(noise_range=(10, 10), noise_range2=(10, 10), gaussian_noise_prob=1.0,
                             gaussian_noise_prob2=1.0, p_codec=0.0)
    lq = degrade(static, DegradeConfig(kind="realesrgan_video", realesrgan=noisy), validation_generator(2))
    assert not torch.equal(lq[:, :, 0], lq[:, :, 1])  # the noise itself is drawn per frame


def test_noise_levels():
    flat = torch.full((6, 3, 48, 48), 0.5, dtype=torch.float64)
    g = torch.Generator().manual_seed(0)
    out = add_noise(flat, "gaussian", 10.0, False, g, torch.device("cpu"))
    assert abs((out - 0.5).std().item() - 10 / 255) < 0.05 * 10 / 255
    gray = add_noise(flat, "gaussian", 10.0, True, g, torch.device("cpu"))
    assert torch.equal(gray[:, 0], gray[:, 1]) and torch.equal(gray[:, 1], gray[:, 2])
    assert not torch.equal(gray[0], gray[1])
    # Poisson: 256 grey levels -> vals 256, counts ~ Poisson(256 x), noise std sqrt(x / 256) * scale
    ramp = (torch.arange(256, dtype=torch.float64) / 255).repeat(8, 3, 64, 1)  # [8, 3, 64, 256]
    for scale in (0.5, 2.0):
        pois = add_noise(ramp, "poisson", scale, False, g, torch.device("cpu"))
        mid = (pois - ramp)[..., 96:160]  # x around 0.5: far from the clamp
        assert abs(mid.mean().item()) < 0.01 * scale
        assert abs(mid.std().item() - scale * math.sqrt(0.5 / 256)) < 0.05 * scale * math.sqrt(0.5 / 256)


# ----------------------------------------------------------------------------- codec


@pytest.mark.parametrize("codec", ["libx264", "libvpx-vp9", "mpeg4"])
def test_codec_roundtrip_changes_the_clip_with_a_sane_psnr(codec):
    clip = ((to_unit(_clip(b=1, t=6, h=64, w=64))[0].permute(1, 2, 3, 0) * 255).round().to(torch.uint8)).numpy()
    low = codec_roundtrip(clip, codec, 1e4)  # 1e4 bits per 64x64 frame: ~2.4 bpp
    high = codec_roundtrip(clip, codec, 1e5)
    assert low.shape == clip.shape and low.dtype == np.uint8
    assert not np.array_equal(low, clip)
    assert 20 < _psnr_u8(low, clip) <= _psnr_u8(high, clip) < 60, (_psnr_u8(low, clip), _psnr_u8(high, clip))
    assert np.array_equal(codec_roundtrip(clip, codec, 1e4), low)


def test_codec_roundtrip_odd_size_and_unknown_codec():
    clip = np.random.default_rng(0).integers(0, 256, (3, 9, 13, 3), dtype=np.uint8)
    assert codec_roundtrip(clip, "libx264", 2000).shape == (3, 9, 13, 3)
    with pytest.raises(ValueError, match="codec"):
        codec_roundtrip(clip, "h265", 2000)


# ----------------------------------------------------------------------------- config


def test_defaults_are_the_published_values():
    cfg = RealESRGANConfig()
    assert cfg.kernel_size == (7, 21) and cfg.kernel_prob == (0.45, 0.25, 0.12, 0.03, 0.12, 0.03)
    assert (cfg.sinc_prob, cfg.sinc_prob2, cfg.final_sinc_prob, cfg.second_blur_prob) == (0.1, 0.1, 0.8, 0.8)
    assert cfg.blur_sigma == (0.2, 3.0) and cfg.blur_sigma2 == (0.2, 1.5) and cfg.betag_range == (0.5, 4.0)
    assert cfg.resize_prob == (0.2, 0.7, 0.1) and cfg.resize_prob2 == (0.3, 0.4, 0.3)
    assert cfg.resize_range == (0.15, 1.5) and cfg.resize_range2 == (0.3, 1.2)
    assert cfg.noise_range == (1.0, 30.0) and cfg.noise_range2 == (1.0, 25.0) and cfg.gray_noise_prob == 0.4
    assert cfg.poisson_scale_range == (0.05, 3.0) and cfg.poisson_scale_range2 == (0.05, 2.5)
    assert cfg.jpeg_range == cfg.jpeg_range2 == (30, 95) and cfg.codec_bitrate == (1e4, 1e5)
    assert DegradeConfig().kind == "simple" and DegradeConfig().realesrgan == cfg


def test_config_from_params_section():
    cfg = from_dict(DegradeConfig, {"kind": "realesrgan_video", "scale": 2,
                                    "realesrgan": {"blur_sigma": [0.5, 2], "codecs": ["mpeg4"], "p_codec": 1}})
    assert cfg.kind == "realesrgan_video" and cfg.realesrgan.blur_sigma == (0.5, 2.0)
    assert cfg.realesrgan.codecs == ("mpeg4",) and cfg == from_dict(DegradeConfig, to_dict(cfg))
    assert hash(cfg) == hash(from_dict(DegradeConfig, to_dict(cfg)))


@pytest.mark.parametrize("section,key", [
    ({"kind": "realesrgan"}, "kind"),
    ({"realesrgan": {"blur_sigma": [3, 0.2]}}, "realesrgan.blur_sigma"),
    ({"realesrgan": {"noise_range2": [25, 1]}}, "realesrgan.noise_range2"),
    ({"realesrgan": {"jpeg_range": [95, 30]}}, "realesrgan.jpeg_range"),
    ({"realesrgan": {"kernel_size": [8, 21]}}, "realesrgan.kernel_size"),
    ({"realesrgan": {"kernel_prob": [0.5, 0.5]}}, "realesrgan.kernel_prob"),
    ({"realesrgan": {"kernel_prob2": [0, 0, 0, 0, 0, 0]}}, "realesrgan.kernel_prob2"),
    ({"realesrgan": {"resize_prob": [0.2, -0.1, 0.9]}}, r"realesrgan.resize_prob\[1\]"),
    ({"realesrgan": {"resize_range": [1.1, 1.5]}}, "realesrgan.resize_range"),
    ({"realesrgan": {"betag_range": [1.5, 4]}}, "realesrgan.betag_range"),
    ({"realesrgan": {"blur_sigma2": [0, 1]}}, r"realesrgan.blur_sigma2\[0\]"),
    ({"realesrgan": {"codecs": ["h265"]}}, r"realesrgan.codecs\[0\]"),
    ({"realesrgan": {"codecs": []}}, "realesrgan.codecs"),
    ({"realesrgan": {"p_codec": 1.5}}, "realesrgan.p_codec"),
    ({"realesrgan": {"sinc_prb": 0.1}}, "realesrgan.sinc_prb"),
])
def test_config_errors_name_the_key(section, key):
    with pytest.raises(ConfigError, match=key):
        from_dict(DegradeConfig, section, where="degrade")


def test_constructor_errors_name_the_key():
    for kw, key in (({"blur_sigma": (3.0, 0.2)}, "blur_sigma"), ({"kernel_size": (7, 20)}, "kernel_size"),
                    ({"betap_range": (1.2, 2.0)}, "betap_range"), ({"codec_bitrate": (1e5, 1e4)}, "codec_bitrate")):
        with pytest.raises(ValueError, match=key):
            RealESRGANConfig(**kw)
    with pytest.raises(ValueError, match="kind"):
        DegradeConfig(kind="bsrgan")


def test_kernel_params_unknown_kind():
    with pytest.raises(ValueError, match="unknown kernel kind"):
        kernel_from_params(KernelParams("box", 7))
