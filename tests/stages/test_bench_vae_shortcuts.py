"""benchmarks/bench_vae_shortcuts.py on a tiny manifest: both variants train from the same weights on the same
batches, held-out PSNR recorded at the same steps, beside the bicubic baseline computed independently here."""
import json
import subprocess
import sys
from pathlib import Path

from lib.eval.apt import psnr
from lib.eval.video_vae import bicubic_codec
from lib.train.video_vae import validation_clips
from lib.video.degrade import to_unit
from tests.helpers.ssv2_data import write_clip_manifest

ROOT = Path(__file__).resolve().parents[2]


def test_both_variants_train_side_by_side_and_the_baseline_is_eval_vaes(tmp_path):
    manifest = write_clip_manifest(tmp_path / "interim", frames=[12] * 5, splits=["train"] * 3 + ["validation"] * 2)
    out = tmp_path / "report"
    proc = subprocess.run([sys.executable, "benchmarks/bench_vae_shortcuts.py", "--steps", "4", "--eval-every", "2",
                           "--pool", "6", "--res", "32", "--frames", "4", "--batch", "2", "--manifest", str(manifest),
                           "--out", str(out)], cwd=ROOT, capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    report = json.loads((out / "vae_shortcuts.json").read_text())
    assert [r["shortcuts"] for r in report["runs"]] == [False, True]
    for run in report["runs"]:
        assert [h["step"] for h in run["history"]] == [2, 4]
        assert all(5.0 < h["psnr"] < 60.0 for h in run["history"])
    # the two variants differ (the shortcuts change the mapping), from the same start
    assert report["runs"][0]["history"][0]["psnr"] != report["runs"][1]["history"][0]["psnr"]
    val = validation_clips(manifest, 32, 4, 2, 8)
    expected = float(psnr(to_unit(bicubic_codec(val, report["bicubic_side"], 2)), to_unit(val)).mean())
    assert report["bicubic_side"] == 9  # round(32 / 4 * sqrt(4 / 3)): equal values with the 4-channel latent
    assert abs(report["bicubic_psnr"] - expected) < 1e-6
    md = (out / "vae_shortcuts.md").read_text()
    assert "| 4 |" in md and f"{report['bicubic_psnr']:.2f} dB" in md
