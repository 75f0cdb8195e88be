"""`python -m stages.train_apt` then `python -m stages.eval_apt` on a tiny manifest: the stage CLIs end to end,
a rerun resumes instead of retraining, and eval compares G and EMA-G with the bicubic baseline."""
import json

import pandas as pd
import yaml

from lib.video.encode import EncodeSettings, write_video
from tests.helpers.ssv2_data import moving_frames
from tests.helpers.workspace import run_stage_module

H, W = 64, 96


def tiny_manifest(root):
    rows = []
    for k in range(8):
        path = f"videos/{k}.webm"
        write_video(root / path, moving_frames(20 + k, H, W, seed=k), fps=12,
                    settings=EncodeSettings(keyframe_interval=6))
        rows.append({"id": str(k), "split": "train" if k < 6 else "validation", "label": "l", "template": "t",
                     "class_index": k % 2, "path": path, "frames": 20 + k, "fps": 12.0, "width": W, "height": H})
    pd.DataFrame(rows).to_parquet(root / "manifest.parquet")


def test_train_then_eval_stages(tmp_path):
    tiny_manifest(tmp_path / "interim")
    params = {
        "ingest_ssv2": {"out": "interim", "expected_height": H},
        "bench_loader": {"out": "loader"},
        "train_apt": {"steps": 4, "batch_size": 2, "grad_accum": 1, "warmup_steps": 1, "checkpoint_every": 2,
                      "log_every": 1, "tracker": "dvclive", "tracker_dir": "reports/train_apt/dvclive",
                      "out_dir": "models/apt", "model": {"scale": 4, "channels": 8, "blocks": 1},
                      "disc_channels": 8, "degrade": {"scale": 4}, "crop": 32, "clip_frames": 4, "clip_stride": 1,
                      "val_clips": 2},
        "eval_apt": {"report_dir": "reports/eval_apt", "strip_clips": 2, "batch_size": 2},
    }
    (tmp_path / "params.yaml").write_text(yaml.safe_dump(params))
    (tmp_path / ".git").mkdir()  # dvclive looks for a repo root: keep it inside tmp_path

    train = run_stage_module("train_apt", ["--no-progress"], tmp_path)
    assert train.returncode == 0, train.stderr[-3000:]
    assert (tmp_path / "models/apt/final/raw/G.safetensors").is_file()
    assert (tmp_path / "models/apt/final/ema/G.safetensors").is_file()
    live = json.loads((tmp_path / "reports/train_apt/dvclive/metrics.json").read_text())
    assert live["step"] == 4

    again = run_stage_module("train_apt", ["--no-progress"], tmp_path)  # a rerun resumes from step 4: no work
    assert again.returncode == 0 and "step-000004" in again.stderr

    ev = run_stage_module("eval_apt", [], tmp_path)
    assert ev.returncode == 0, ev.stderr[-3000:]
    metrics = json.loads((tmp_path / "reports/eval_apt/metrics.json").read_text())
    assert {"bicubic", "G", "G_ema"} <= set(metrics)
    for name in ("G", "G_ema"):
        assert abs(metrics[name]["psnr"] - metrics["bicubic"]["psnr"] - metrics[name]["psnr_gain_db"]) < 1e-9
    assert (tmp_path / "reports/eval_apt/strip.png").stat().st_size > 0


def test_unknown_train_apt_key_names_it(tmp_path):
    (tmp_path / "params.yaml").write_text(yaml.safe_dump({"train_apt": {"stepz": 3}}))
    proc = run_stage_module("train_apt", [], tmp_path)
    assert proc.returncode == 1 and "stepz" in proc.stderr and "did you mean" in proc.stderr
