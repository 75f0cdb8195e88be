"""eval_apt metrics: PSNR by formula and against scikit-image, SSIM properties, a direct reference and
scikit-image, temporal error and chunk-border flicker against numpy, LPIPS / DISTS against a direct functional
re-implementation on random weights, untrained G == bicubic, the report's text."""
import math

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from lib.config import ConfigError
from lib.eval.apt import (
    EvalAPTConfig,
    border_flicker,
    border_transitions,
    chunk_plan,
    chunked_restore,
    clip_scores,
    evaluate,
    psnr,
    render_report,
    ssim,
    ssim_frames,
    strip_png,
    temporal_error,
    transition_errors,
    validation_clips,
)
from lib.eval.perceptual import (
    DISTS_CHANNELS,
    LPIPS_CHANNELS,
    LPIPS_LAYERS,
    load_dists,
    load_lpips,
    perceptual_metrics,
)
from lib.models.vgg import VGG16Features
from lib.models.video_sr import VideoSRGenerator
from lib.train.apt import from_section
from lib.video.degrade import bicubic_upsample, to_unit
from tests.helpers.ssv2_data import write_clip_manifest


def test_psnr_matches_the_formula():
    g = torch.Generator().manual_seed(0)
    x = torch.rand(3, 3, 2, 16, 16, generator=g)
    y = (x + 0.05 * torch.randn(x.shape, generator=g)).clamp(0, 1)
    for i in range(3):
        mse = np.mean((x[i].numpy().astype(np.float64) - y[i].numpy().astype(np.float64)) ** 2)
        assert float(psnr(x, y)[i]) == pytest.approx(10 * math.log10(1.0 / mse), abs=1e-9)
    assert math.isinf(float(psnr(x, x)[0]))


def _ssim_reference(a: np.ndarray, b: np.ndarray) -> float:
    """SSIM of two [H, W] images by explicit loops over the valid 11x11 windows (Gaussian sigma 1.5)."""
    t = np.arange(11) - 5.0
    k = np.exp(-0.5 * (t / 1.5) ** 2)
    w = np.outer(k, k) / np.outer(k, k).sum()
    c1, c2 = 0.01**2, 0.03**2
    vals = []
    for i in range(a.shape[0] - 10):
        for j in range(a.shape[1] - 10):
            pa, pb = a[i:i + 11, j:j + 11], b[i:i + 11, j:j + 11]
            ma, mb = (w * pa).sum(), (w * pb).sum()
            va, vb = (w * (pa - ma) ** 2).sum(), (w * (pb - mb) ** 2).sum()
            cov = (w * (pa - ma) * (pb - mb)).sum()
            vals.append((2 * ma * mb + c1) * (2 * cov + c2) / ((ma**2 + mb**2 + c1) * (va + vb + c2)))
    return float(np.mean(vals))


def test_ssim_identity_reference_and_monotone_in_noise():
    g = torch.Generator().manual_seed(1)
    x = torch.rand(2, 3, 20, 24, generator=g)
    assert torch.allclose(ssim_frames(x, x), torch.ones(2, dtype=torch.float64), atol=1e-12)
    y = (x + 0.1 * torch.randn(x.shape, generator=g)).clamp(0, 1)
    ref = np.mean([_ssim_reference(x[0, c].double().numpy(), y[0, c].double().numpy()) for c in range(3)])
    assert float(ssim_frames(x, y)[0]) == pytest.approx(ref, abs=1e-9)
    clip = torch.rand(1, 3, 2, 32, 32, generator=g)
    scores = [float(ssim(clip, (clip + s * torch.randn(clip.shape, generator=g)).clamp(0, 1)))
              for s in (0.0, 0.02, 0.05, 0.1, 0.3)]
    assert scores[0] == pytest.approx(1.0) and all(a > b for a, b in zip(scores, scores[1:], strict=False))


def test_temporal_error():
    x = torch.rand(2, 3, 4, 8, 8)
    assert torch.all(temporal_error(x, x) == 0)
    assert torch.allclose(temporal_error(x + 0.3, x), torch.zeros(2, dtype=torch.float64), atol=1e-6)  # constant offset
    flicker = x.clone()
    flicker[:, :, 1] += 0.1
    assert torch.all(temporal_error(flicker, x) > 0)


@pytest.fixture(scope="module")
def manifest(tmp_path_factory):
    return write_clip_manifest(tmp_path_factory.mktemp("eval_clips"), [20] * 4, ["validation"] * 4, 64, 96)


def test_untrained_generator_equals_bicubic(manifest, tmp_path):
    cfg = from_section({"model": {"channels": 8, "blocks": 1}, "crop": 32, "clip_frames": 4, "val_clips": 3})
    hq, lq = validation_clips(cfg, manifest, seed=0)
    assert hq.shape == (3, 3, 4, 32, 32) and lq.shape == (3, 3, 4, 8, 8)
    hq2, lq2 = validation_clips(cfg, manifest, seed=0)
    assert torch.equal(hq, hq2) and torch.equal(lq, lq2)  # deterministic held-out set
    torch.manual_seed(0)
    metrics, outputs = evaluate({"G": VideoSRGenerator(cfg.model)}, hq, lq, cfg.model.scale)
    assert set(metrics) == {"clips", "bicubic", "G"} and metrics["clips"] == 3
    for key in ("psnr", "ssim", "temporal_error"):
        assert key in metrics["G"] and key in metrics["bicubic"]
    assert abs(metrics["G"]["psnr_gain_db"]) < 1e-3
    assert abs(metrics["G"]["ssim_gain"]) < 1e-5
    assert 10 < metrics["bicubic"]["psnr"] < 60
    png = strip_png(tmp_path / "strip.png", {"bicubic": outputs["bicubic"], "G": outputs["G"], "HQ": hq}, 2)
    assert png.stat().st_size > 0


def test_evaluate_flicker_and_perceptual_and_report(manifest, perceptual_files):
    cfg = from_section({"model": {"channels": 8, "blocks": 1}, "crop": 32, "clip_frames": 4, "val_clips": 3})
    hq, lq = validation_clips(cfg, manifest, seed=0)
    long_cfg = from_section({"model": {"channels": 8, "blocks": 1}, "crop": 32, "clip_frames": 7, "val_clips": 3})
    f_hq, f_lq = validation_clips(long_cfg, manifest, seed=0)
    torch.manual_seed(0)
    untrained = VideoSRGenerator(cfg.model)  # == bicubic: chunking cannot change it
    trained_like = VideoSRGenerator(cfg.model)
    torch.nn.init.normal_(trained_like.tail.weight, std=0.05)  # a generator that does depend on its time context
    root = perceptual_files
    perceptual = {"lpips": load_lpips(root / "lpips_vgg.pth", root / "vgg16.pth"),
                  "dists": load_dists(root / "dists.safetensors", root / "vgg16.pth")}
    metrics, outputs = evaluate({"G": untrained, "G_ema": trained_like}, hq, lq, cfg.model.scale, batch_size=2,
                                flicker_chunk_frames=3, flicker_overlap=1, flicker_clips=(f_hq, f_lq),
                                perceptual=perceptual)
    # bicubic's flicker from numpy: it is per frame, so chunking is the identity on its output
    bic = to_unit(bicubic_upsample(f_lq, cfg.model.scale)).double().numpy()
    e = np.abs(np.diff(bic, axis=2) - np.diff(to_unit(f_hq).double().numpy(), axis=2)).mean(axis=(1, 3, 4))
    border = np.array([t in (1, 3, 5) for t in range(6)])  # step 2: segments start at frames 2, 4, 6
    fb = metrics["bicubic"]["flicker"]
    assert fb["border"] == pytest.approx(e[:, border].mean(), rel=1e-6)
    assert fb["inside"] == pytest.approx(e[:, ~border].mean(), rel=1e-6)
    assert fb["ratio"] == pytest.approx(e[:, border].mean() / e[:, ~border].mean(), rel=1e-5)
    assert (fb["chunk_frames"], fb["overlap"], fb["border_transitions"], fb["inside_transitions"]) == (3, 1, 3, 3)
    for key in ("border", "inside", "ratio"):
        assert metrics["G"]["flicker"][key] == pytest.approx(fb[key], rel=1e-4)  # untrained G == bicubic
    # a generator with temporal context: its chunked output differs from its full-clip output
    with torch.no_grad():
        chunked = chunked_restore(lambda x: trained_like(x).clamp(-1, 1), f_lq, 3, 1)
        assert not torch.allclose(chunked, trained_like(f_lq).clamp(-1, 1))
    e = transition_errors(to_unit(chunked), to_unit(f_hq)).numpy()
    assert metrics["G_ema"]["flicker"]["border"] == pytest.approx(e[:, border].mean(), rel=1e-6)
    # LPIPS / DISTS per candidate: mean over frames and clips of the per-frame scores
    for name in ("bicubic", "G", "G_ema"):
        frames = lambda v: to_unit(v).transpose(1, 2).reshape(-1, 3, 32, 32)  # noqa: E731
        assert metrics[name]["lpips"] == pytest.approx(
            float(perceptual["lpips"](frames(outputs[name]), frames(hq)).double().mean()), rel=1e-5)
        assert metrics[name]["dists"] == pytest.approx(
            float(perceptual["dists"](frames(outputs[name]), frames(hq)).double().mean()), rel=1e-5)
    assert metrics["G"]["lpips"] == pytest.approx(metrics["bicubic"]["lpips"], abs=1e-5)

    metrics = {**metrics, "frames": 12, "crop": 32, "scale": 4, "seed": 0, "flicker_frames": 7}
    report = render_report(metrics, {"steps": 4}, "strip.png", ["bicubic", "G", "HQ"])
    assert "| LPIPS (lower is better) | DISTS (lower is better) |" in report
    assert f"| {metrics['G_ema']['lpips']:.4f} | {metrics['G_ema']['dists']:.4f} |" in report
    assert "## Chunk-border flicker (7-frame clips restored in chunks of 3 frames, overlap 1)" in report
    assert f"| bicubic | {fb['border']:.5f} | {fb['inside']:.5f} | {fb['ratio']:.3f} |" in report
    assert "border flicker ratio" in report and "**temporal error**" in report
    del metrics["G"]["lpips"], metrics["G"]["dists"]  # one candidate without: the columns go, the notes say why
    _, missing = _plan(EvalAPTConfig())
    report = render_report({**metrics, "not_computed": missing}, {}, "strip.png", ["HQ"])
    assert "LPIPS (lower" not in report
    assert "**LPIPS not computed: eval_apt.lpips_weights is null; give the path to" in report
    assert "**DISTS not computed: eval_apt.dists_weights is null" in report


# ----------------------------------------------------------------------------- scikit-image cross-check

skmetrics = pytest.importorskip("skimage.metrics")


def _structured_pairs() -> list[tuple[np.ndarray, np.ndarray]]:
    """Pairs of [3, H, W] float64 frames in [0, 1]: random, gradients, checkerboard, a shift, contrast loss,
    blur, a constant frame against another constant, and text-like strokes against a noisy copy."""
    rng = np.random.default_rng(7)
    H, W = 24, 28
    yy, xx = np.mgrid[0:H, 0:W] / np.array([H - 1, W - 1])[:, None, None]
    grad = np.stack([xx, yy, (xx + yy) / 2])
    checker = np.broadcast_to(((np.arange(H)[:, None] // 3 + np.arange(W)[None, :] // 3) % 2).astype(float), (3, H, W))
    strokes = np.zeros((3, H, W))
    strokes[:, 4:6, 3:20] = 1
    strokes[:, 8:20, 10:12] = 0.8
    rand = rng.random((3, H, W))
    blur = (rand + np.roll(rand, 1, 1) + np.roll(rand, 1, 2) + np.roll(rand, (1, 1), (1, 2))) / 4
    return [
        (rand, np.clip(rand + 0.1 * rng.standard_normal(rand.shape), 0, 1)),
        (grad, np.clip(grad + 0.05 * rng.standard_normal(grad.shape), 0, 1)),
        (checker, np.roll(checker, 1, axis=2)),  # a one-pixel shift of a high-contrast pattern
        (grad, 0.5 + 0.3 * (grad - 0.5)),  # contrast loss
        (rand, blur),
        (np.full((3, H, W), 0.2), np.full((3, H, W), 0.7)),  # zero variance: only the C1/C2 terms remain
        (strokes, np.clip(strokes + 0.2 * rng.standard_normal(strokes.shape), 0, 1)),
    ]


def test_psnr_and_ssim_in_slices_equal_one_pass(monkeypatch):
    """Scored a few elements (psnr) or one frame (ssim) at a time, the metrics equal the one-pass figures: the
    slicing that keeps 1024 px x 49 frame clips in memory changes nothing but the summation order."""
    import lib.eval.apt as apt

    g = torch.Generator().manual_seed(3)
    x = torch.rand(2, 3, 5, 16, 20, generator=g)
    y = (x + 0.05 * torch.randn(x.shape, generator=g)).clamp(0, 1)
    whole_psnr, whole_ssim = psnr(x, y), ssim(x, y)
    monkeypatch.setattr(apt, "METRIC_CHUNK_ELEMENTS", 7)  # psnr: slices of 7 of 4,800; ssim: one frame a batch
    torch.testing.assert_close(psnr(x, y), whole_psnr, rtol=0, atol=1e-12)
    torch.testing.assert_close(ssim(x, y), whole_ssim, rtol=0, atol=1e-12)
    mse = ((x.double() - y.double()) ** 2).flatten(1).mean(1)  # independent of the slicing code
    torch.testing.assert_close(whole_psnr, -10 * torch.log10(mse), rtol=0, atol=1e-10)


def test_psnr_and_ssim_equal_scikit_image():
    """Our SSIM is skimage's ``structural_similarity(gaussian_weights=True, sigma=1.5,
    use_sample_covariance=False, data_range=1)``: its Gaussian filter (truncate 3.5 -> radius 5 = our 11 taps)
    runs over the reflect-padded image and it then crops 5 px a side, which keeps exactly our valid window
    positions, so both evaluate the same float64 formula at the same positions. The only difference is the order
    of the sums (separable 1-D filters vs one 2-D convolution): about 1e-15 per value, so 1e-12 is loose yet
    far below any real difference (the default skimage settings differ by > 1e-3, asserted below). PSNR: skimage
    takes the MSE over the whole array it is given, i.e. our per-clip MSE; again only the summation order
    differs (1e-10 dB)."""
    pairs = _structured_pairs()
    x = torch.from_numpy(np.stack([a for a, _ in pairs]))
    y = torch.from_numpy(np.stack([b for _, b in pairs]))
    ours = ssim_frames(x, y)
    other_conventions = []
    for i, (a, b) in enumerate(pairs):
        ref = skmetrics.structural_similarity(a, b, gaussian_weights=True, sigma=1.5, use_sample_covariance=False,
                                              data_range=1, channel_axis=0)
        assert float(ours[i]) == pytest.approx(ref, abs=1e-12), i
        default = skmetrics.structural_similarity(a, b, data_range=1, channel_axis=0)  # 7x7 box, sample cov.
        sample = skmetrics.structural_similarity(a, b, gaussian_weights=True, sigma=1.5, data_range=1, channel_axis=0)
        other_conventions.append((abs(default - ref), abs(sample - ref)))
        if np.any(a != b):
            ref_psnr = skmetrics.peak_signal_noise_ratio(a, b, data_range=1)
            assert float(psnr(x[i:i + 1], y[i:i + 1])[0]) == pytest.approx(ref_psnr, abs=1e-10), i
    # the settings matter: skimage's defaults (7x7 uniform window) and its sample covariance (N/(N-1)) land far
    # outside the 1e-12 tolerance, so the match above pins the convention
    assert max(d for d, _ in other_conventions) > 0.05 and max(c for _, c in other_conventions) > 1e-4

    # clips [B, C, T, H, W]: PSNR of the whole clip, SSIM the mean over its frames
    g = torch.Generator().manual_seed(3)
    clips = torch.rand(2, 3, 3, 16, 20, generator=g, dtype=torch.float64)
    noisy = (clips + 0.07 * torch.randn(clips.shape, generator=g, dtype=torch.float64)).clamp(0, 1)
    for i in range(2):
        a, b = clips[i].numpy(), noisy[i].numpy()
        assert float(psnr(clips, noisy)[i]) == pytest.approx(
            skmetrics.peak_signal_noise_ratio(a, b, data_range=1), abs=1e-10)
        per_frame = [skmetrics.structural_similarity(a[:, t], b[:, t], gaussian_weights=True, sigma=1.5,
                                                     use_sample_covariance=False, data_range=1, channel_axis=0)
                     for t in range(3)]
        assert float(ssim(clips, noisy)[i]) == pytest.approx(np.mean(per_frame), abs=1e-12)


def test_ssim_of_float32_frames_matches_scikit_image_to_float32_precision():
    """float32 input (what evaluate scores after to_unit): we compute in float64, skimage in float32 (its
    result is float32): agreement to ~1e-7, so 1e-6."""
    g = torch.Generator().manual_seed(4)
    x = torch.rand(2, 3, 20, 24, generator=g)
    y = (x + 0.1 * torch.randn(x.shape, generator=g)).clamp(0, 1)
    for i in range(2):
        ref = skmetrics.structural_similarity(x[i].numpy(), y[i].numpy(), gaussian_weights=True, sigma=1.5,
                                              use_sample_covariance=False, data_range=1, channel_axis=0)
        assert float(ssim_frames(x, y)[i]) == pytest.approx(float(ref), abs=1e-6)


# ----------------------------------------------------------------------------- temporal error


def test_temporal_error_is_the_frame_difference_error_against_hq():
    rng = np.random.default_rng(5)
    out, hq = rng.random((3, 3, 5, 8, 9)), rng.random((3, 3, 5, 8, 9))
    ref_e = np.abs(np.diff(out, axis=2) - np.diff(hq, axis=2)).mean(axis=(1, 3, 4))  # [B, T-1]
    e = transition_errors(torch.from_numpy(out), torch.from_numpy(hq))
    np.testing.assert_allclose(e.numpy(), ref_e, rtol=0, atol=1e-14)
    ref = np.array([np.mean([np.abs((out[b, :, t + 1] - out[b, :, t]) - (hq[b, :, t + 1] - hq[b, :, t])).mean()
                             for t in range(4)]) for b in range(3)])
    np.testing.assert_allclose(temporal_error(torch.from_numpy(out), torch.from_numpy(hq)).numpy(), ref, atol=1e-14)
    one = torch.from_numpy(out[:, :, :1])
    assert torch.equal(temporal_error(one, one), torch.zeros(3, dtype=torch.float64))


# ----------------------------------------------------------------------------- chunk-border flicker


def test_chunk_plan_cut_scheme():
    assert chunk_plan(10, 4) == [(0, 4, 0, 4), (4, 8, 4, 8), (8, 10, 8, 10)]
    # overlap 2 (3): segments of 2 new frames, each seen with 1 frame of past and 1 (2) of future context where
    # the clip has them
    assert chunk_plan(10, 4, 2) == [(0, 3, 0, 2), (1, 5, 2, 4), (3, 7, 4, 6), (5, 9, 6, 8), (7, 10, 8, 10)]
    assert chunk_plan(10, 5, 3) == [(0, 4, 0, 2), (1, 6, 2, 4), (3, 8, 4, 6), (5, 10, 6, 8), (7, 10, 8, 10)]
    assert chunk_plan(3, 4) == [(0, 3, 0, 3)]
    assert border_transitions(10, 4).tolist() == [t in (3, 7) for t in range(9)]
    assert border_transitions(10, 4, 2).tolist() == [t in (1, 3, 5, 7) for t in range(9)]
    # each chunk's input window is what fn sees: frame indices as values
    lq = torch.arange(10, dtype=torch.float64).view(1, 1, 10, 1, 1).expand(1, 3, 10, 2, 2).clone()
    seen = []
    out = chunked_restore(lambda x: seen.append(x[0, 0, :, 0, 0].tolist()) or x, lq, 4, 2)
    assert seen == [[0, 1, 2], [1, 2, 3, 4], [3, 4, 5, 6], [5, 6, 7, 8], [7, 8, 9]]
    assert torch.equal(out, lq)  # the kept frames reassemble the clip in order


def _up(x: torch.Tensor) -> torch.Tensor:
    """A pointwise (per-pixel, per-frame) x2 restorer: nearest upsampling, then an affine map."""
    return 0.5 * x.repeat_interleave(2, -1).repeat_interleave(2, -2) + 0.25


def test_pointwise_restorer_has_no_border_flicker():
    g = torch.Generator().manual_seed(8)
    # content uniform over time: every frame-to-frame change the same -> e_t the same for every t: ratio exactly 1
    a, d = torch.rand(2, 3, 1, 6, 6, generator=g, dtype=torch.float64), torch.rand(2, 3, 1, 6, 6, generator=g,
                                                                                      dtype=torch.float64)
    t = torch.arange(9, dtype=torch.float64).view(1, 1, 9, 1, 1)
    lq = a + 0.05 * t * d
    hq = _up(lq) + 0.1 * torch.rand(2, 3, 1, 12, 12, generator=g, dtype=torch.float64) * t  # a drift out misses
    for overlap in (0, 1, 2):
        f = border_flicker(_up, lq, hq, chunk_frames=4, overlap=overlap)
        assert f["ratio"] == pytest.approx(1.0, abs=1e-12) and f["border"] > 0
    # any content: chunking does not change a pointwise restorer's output, so border/inside are those of the full
    # output; computed here with numpy from _up(lq) over the whole clip
    lq = torch.rand(2, 3, 9, 6, 6, generator=g, dtype=torch.float64)
    hq = torch.rand(2, 3, 9, 12, 12, generator=g, dtype=torch.float64)
    assert torch.equal(chunked_restore(_up, lq, 4), _up(lq))
    e = np.abs(np.diff(_up(lq).numpy(), axis=2) - np.diff(hq.numpy(), axis=2)).mean(axis=(1, 3, 4))
    border = np.array([(t + 1) % 4 == 0 for t in range(8)])
    f = border_flicker(_up, lq, hq, chunk_frames=4)
    assert f["border"] == pytest.approx(e[:, border].mean(), abs=1e-14)
    assert f["inside"] == pytest.approx(e[:, ~border].mean(), abs=1e-14)
    assert f["ratio"] == pytest.approx(e[:, border].mean() / e[:, ~border].mean(), rel=1e-12)
    assert (f["border_transitions"], f["inside_transitions"], f["chunk_frames"], f["overlap"]) == (2, 6, 4, 0)
    # the mean over all transitions is the temporal error of the chunked output
    mean_e = (f["border"] * 2 + f["inside"] * 6) / 8
    assert mean_e == pytest.approx(float(temporal_error(_up(lq), hq).mean()), abs=1e-14)


@pytest.mark.parametrize("overlap", [0, 2])
def test_per_chunk_offset_is_border_flicker(overlap):
    g = torch.Generator().manual_seed(9)
    lq = torch.rand(2, 3, 10, 6, 6, generator=g, dtype=torch.float64)
    hq = _up(lq) + 0.02 * torch.randn(2, 3, 10, 12, 12, generator=g, dtype=torch.float64)
    calls = []

    def offset_restorer(x):  # the k-th chunk comes out 0.1·k brighter: a jump at every chunk border
        calls.append(1)
        return _up(x) + 0.1 * (len(calls) - 1)

    f = border_flicker(offset_restorer, lq, hq, chunk_frames=4, overlap=overlap)
    # independently: frame t belongs to segment t // step, so out[t] = _up(lq)[t] + 0.1 * (t // step)
    step = 4 - overlap
    out = _up(lq).numpy() + 0.1 * (np.arange(10) // step)[None, None, :, None, None]
    e = np.abs(np.diff(out, axis=2) - np.diff(hq.numpy(), axis=2)).mean(axis=(1, 3, 4))
    border = np.array([(t + 1) % step == 0 for t in range(9)])
    assert f["border"] == pytest.approx(e[:, border].mean(), abs=1e-12)
    assert f["inside"] == pytest.approx(e[:, ~border].mean(), abs=1e-12)
    assert f["ratio"] == pytest.approx(e[:, border].mean() / e[:, ~border].mean(), rel=1e-10)
    assert f["ratio"] > 2  # inside-chunk error is only the noise (~0.02), the border adds the 0.1 jump
    assert len(calls) == len(chunk_plan(10, 4, overlap))


def test_flicker_settings_are_checked():
    with pytest.raises(ValueError, match="flicker_overlap"):
        EvalAPTConfig(flicker_chunk_frames=4, flicker_overlap=3)
    with pytest.raises(ConfigError, match="eval_apt.flicker_chunk_frames.*flicker_clip_frames"):
        EvalAPTConfig(flicker_chunk_frames=4).check_flicker_frames(4)
    EvalAPTConfig(flicker_chunk_frames=2).check_flicker_frames(3)


# ----------------------------------------------------------------------------- LPIPS / DISTS


@pytest.fixture(scope="module")
def perceptual_files(tmp_path_factory):
    """Random weights in the real layouts: a torchvision vgg16 state dict (features.<i>.*, .pth), LPIPS lin
    weights (lin<k>.model.1.weight, .pth), a full lpips.LPIPS state dict (net.slice<s>.<i>.* + lin), DISTS
    {alpha, beta} (.safetensors)."""
    from safetensors.torch import save_file

    root = tmp_path_factory.mktemp("perceptual")
    torch.manual_seed(0)
    vgg = VGG16Features(LPIPS_LAYERS).state_dict()
    vgg = {k: v.clone() for k, v in vgg.items()}
    torch.save(vgg, root / "vgg16.pth")
    lins = {f"lin{k}.model.1.weight": torch.rand(1, c, 1, 1) for k, c in enumerate(LPIPS_CHANNELS)}
    torch.save(lins, root / "lpips_vgg.pth")
    slices = [(0, 4), (4, 9), (9, 16), (16, 23), (23, 30)]  # lpips' vgg16 slices of torchvision's features
    full = {}
    for k, v in vgg.items():
        i = int(k.split(".")[1])
        s = next(n for n, (lo, hi) in enumerate(slices, 1) if lo <= i < hi)
        full[f"net.slice{s}.{i}.{k.split('.')[2]}"] = v
    full.update(lins)
    full.update({f"lins.{k}.model.1.weight": lins[f"lin{k}.model.1.weight"] for k in range(5)})
    torch.save(full, root / "lpips_full.pth")
    n = sum(DISTS_CHANNELS)
    save_file({"alpha": 0.1 + 0.01 * torch.randn(1, n, 1, 1), "beta": 0.1 + 0.01 * torch.randn(1, n, 1, 1)},
              str(root / "dists.safetensors"))
    return root


def _vgg_ref(state, x, pool):
    """VGG16 features (relu1_2 ... relu5_3) by plain F.conv2d over the saved state dict, float64."""
    cfg = [64, 64, "M", 128, 128, "M", 256, 256, 256, "M", 512, 512, 512, "M", 512, 512, 512]
    taps, out, i, h = {3, 8, 15, 22, 29}, [], 0, x
    for v in cfg:
        if v == "M":
            h, i = pool(h), i + 1
            continue
        h = F.relu(F.conv2d(h, state[f"features.{i}.weight"].double(), state[f"features.{i}.bias"].double(),
                            padding=1))
        if i + 1 in taps:
            out.append(h)
        i += 2
    return out


def lpips_ref(state, lins, x, y):
    """LPIPS as lpips.LPIPS(net='vgg', normalize=True) computes it, float64."""
    shift = torch.tensor([-.030, -.088, -.188], dtype=torch.float64).view(1, 3, 1, 1)
    scale = torch.tensor([.458, .448, .450], dtype=torch.float64).view(1, 3, 1, 1)
    prep = lambda v: ((2 * v.double() - 1) - shift) / scale  # noqa: E731
    fx = _vgg_ref(state, prep(x), lambda h: F.max_pool2d(h, 2, 2))
    fy = _vgg_ref(state, prep(y), lambda h: F.max_pool2d(h, 2, 2))
    total = 0
    for k, (a, b) in enumerate(zip(fx, fy, strict=True)):
        na = a / (torch.sqrt(torch.sum(a**2, dim=1, keepdim=True)) + 1e-10)
        nb = b / (torch.sqrt(torch.sum(b**2, dim=1, keepdim=True)) + 1e-10)
        total = total + (lins[f"lin{k}.model.1.weight"].double() * (na - nb) ** 2).sum(1).mean(dim=(1, 2))
    return total


def dists_ref(state, alpha, beta, x, y):
    """DISTS as DISTS_pytorch computes it (L2 pooling instead of max pooling), float64."""
    a = np.hanning(5)[1:-1]
    g = torch.tensor(np.outer(a, a) / np.outer(a, a).sum())[None, None]

    def l2pool(h):
        return torch.sqrt(F.conv2d(h**2, g.repeat(h.shape[1], 1, 1, 1), stride=2, padding=1, groups=h.shape[1])
                          + 1e-12)

    mean = torch.tensor([0.485, 0.456, 0.406], dtype=torch.float64).view(1, 3, 1, 1)
    std = torch.tensor([0.229, 0.224, 0.225], dtype=torch.float64).view(1, 3, 1, 1)
    fx = [x.double()] + _vgg_ref(state, (x.double() - mean) / std, l2pool)
    fy = [y.double()] + _vgg_ref(state, (y.double() - mean) / std, l2pool)
    w = alpha.double().sum() + beta.double().sum()
    al = torch.split(alpha.double() / w, list(DISTS_CHANNELS), dim=1)
    be = torch.split(beta.double() / w, list(DISTS_CHANNELS), dim=1)
    d1 = d2 = 0
    for k in range(6):
        xm, ym = fx[k].mean([2, 3], keepdim=True), fy[k].mean([2, 3], keepdim=True)
        s1 = (2 * xm * ym + 1e-6) / (xm**2 + ym**2 + 1e-6)
        d1 = d1 + (al[k] * s1).sum(1, keepdim=True)
        xv, yv = ((fx[k] - xm) ** 2).mean([2, 3], keepdim=True), ((fy[k] - ym) ** 2).mean([2, 3], keepdim=True)
        cov = (fx[k] * fy[k]).mean([2, 3], keepdim=True) - xm * ym
        s2 = (2 * cov + 1e-6) / (xv + yv + 1e-6)
        d2 = d2 + (be[k] * s2).sum(1, keepdim=True)
    return 1 - (d1 + d2).flatten()


def test_lpips_and_dists_match_direct_formulas(perceptual_files):
    from safetensors.torch import load_file

    root = perceptual_files
    state = torch.load(root / "vgg16.pth", weights_only=True)
    lins = torch.load(root / "lpips_vgg.pth", weights_only=True)
    ab = load_file(str(root / "dists.safetensors"))
    lp = load_lpips(root / "lpips_vgg.pth", root / "vgg16.pth")
    ds = load_dists(root / "dists.safetensors", root / "vgg16.pth")
    g = torch.Generator().manual_seed(1)
    x = torch.rand(3, 3, 32, 32, generator=g)
    y = (x + 0.1 * torch.randn(x.shape, generator=g)).clamp(0, 1)
    got_l, got_d = lp(x, y), ds(x, y)
    assert got_l.shape == (3,) and got_d.shape == (3,)  # one score per image
    # float32 network vs the float64 reference: 1e-4 relative
    np.testing.assert_allclose(got_l.double().numpy(), lpips_ref(state, lins, x, y).numpy(), rtol=1e-4)
    np.testing.assert_allclose(got_d.double().numpy(), dists_ref(state, ab["alpha"], ab["beta"], x, y).numpy(),
                               rtol=1e-4, atol=1e-6)
    # a full lpips.LPIPS state dict carries its own backbone: the same scores without vgg16_weights
    torch.testing.assert_close(load_lpips(root / "lpips_full.pth", None)(x, y), got_l)

    # identical inputs -> 0; symmetry; monotone in the noise level
    assert torch.all(lp(x, x) == 0) and torch.allclose(ds(x, x), torch.zeros(3), atol=1e-5)
    torch.testing.assert_close(lp(y, x), got_l, rtol=1e-5, atol=0)
    torch.testing.assert_close(ds(y, x), got_d, rtol=1e-5, atol=1e-7)
    levels = (0.02, 0.05, 0.1, 0.2, 0.4)
    noisy = [(x + s * torch.randn(x.shape, generator=g)).clamp(0, 1) for s in levels]
    for metric in (lp, ds):
        scores = [float(metric(x, n).mean()) for n in noisy]
        assert all(a < b for a, b in zip(scores, scores[1:], strict=False)), scores

    # clip scores [B, 3, T, H, W] -> [B]: the mean over frames
    clip_a, clip_b = torch.stack([x, y], 2)[:2], torch.stack([y, x], 2)[:2]  # [2, 3, 2, 32, 32]
    per = clip_scores(lp, clip_a, clip_b, batch_size=3)
    assert per.shape == (2,)
    np.testing.assert_allclose(per.numpy(), got_l[:2].double().numpy(), rtol=1e-5)  # both frames score the same


def _plan(cfg):
    """What the stage does with its section."""
    return perceptual_metrics(cfg.lpips_weights, cfg.dists_weights, cfg.vgg16_weights)


def test_perceptual_weights_missing_or_null(perceptual_files, tmp_path, monkeypatch):
    root = perceptual_files
    metrics, missing = _plan(EvalAPTConfig())
    assert metrics == {} and set(missing) == {"lpips", "dists"}
    assert missing["lpips"].startswith("LPIPS not computed: eval_apt.lpips_weights is null; give the path to")
    assert missing["dists"].startswith("DISTS not computed: eval_apt.dists_weights is null; give the path to")
    with pytest.raises(ConfigError, match=r"eval_apt\.lpips_weights: .*nope\.pth does not exist; set "
                                          r"eval_apt\.lpips_weights to the path of"):
        _plan(EvalAPTConfig(lpips_weights=str(tmp_path / "nope.pth")))
    with pytest.raises(ConfigError, match=r"eval_apt\.vgg16_weights: .*does not exist"):
        _plan(EvalAPTConfig(dists_weights=str(root / "dists.safetensors"),
                                         vgg16_weights=str(tmp_path / "vgg.pth")))
    monkeypatch.setenv("TORCH_HOME", str(tmp_path / "torch_home"))  # an empty hub cache
    with pytest.raises(ConfigError, match=r"eval_apt\.vgg16_weights is null and the torch hub cache has no"):
        _plan(EvalAPTConfig(lpips_weights=str(root / "lpips_vgg.pth")))
    with pytest.raises(ConfigError, match=r"eval_apt\.dists_weights: .* is not the DISTS"):
        _plan(EvalAPTConfig(dists_weights=str(root / "lpips_vgg.pth"),
                                         vgg16_weights=str(root / "vgg16.pth")))
    metrics, missing = _plan(EvalAPTConfig(lpips_weights=str(root / "lpips_full.pth")))
    assert set(metrics) == {"lpips"} and set(missing) == {"dists"}
