"""eval_apt metrics: PSNR by formula, SSIM properties and a direct reference, untrained G == bicubic."""
import math

import numpy as np
import pandas as pd
import pytest
import torch

from lib.eval.apt import evaluate, psnr, ssim, ssim_frames, strip_png, temporal_error, validation_clips
from lib.models.video_sr import VideoSRGenerator
from lib.train.apt import from_section
from lib.video.encode import EncodeSettings, write_video
from tests.helpers.ssv2_data import moving_frames


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
    root = tmp_path_factory.mktemp("eval_clips")
    rows = []
    for k in range(4):
        path = f"videos/{k}.webm"
        write_video(root / path, moving_frames(20, 64, 96, seed=k), fps=12,
                    settings=EncodeSettings(keyframe_interval=6))
        rows.append({"id": str(k), "split": "validation", "label": "l", "template": "t", "class_index": 0,
                     "path": path, "frames": 20, "fps": 12.0, "width": 96, "height": 64})
    out = root / "manifest.parquet"
    pd.DataFrame(rows).to_parquet(out)
    return out


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
