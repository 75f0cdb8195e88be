"""`python -m stages.train_video_vae` and `python -m stages.train_curriculum` on a tiny manifest, then
lib.eval.video_vae.evaluate_video_vae: PSNR of both models at every resolution against the bicubic baselines."""
import json
import math

import pandas as pd
import pytest
import yaml

from lib.config import ConfigError
from lib.eval.video_vae import evaluate_video_vae
from lib.video.encode import EncodeSettings, write_video
from tests.helpers.ssv2_data import moving_frames
from tests.helpers.workspace import pass_validation, run_stage_module

H, W = 32, 64
MODEL = {"channels": 8, "latent_channels": 2, "temporal_compression": 2, "spatial_compression": 2, "blocks": 1}


def tiny_manifest(root):
    rows = []
    for k in range(8):
        path = f"videos/{k}.webm"
        write_video(root / path, moving_frames(12 + k, H, W, seed=k), fps=12,
                    settings=EncodeSettings(keyframe_interval=6))
        rows.append({"id": str(k), "split": "train" if k < 6 else "validation", "label": "l", "template": "t",
                     "class_index": 0, "path": path, "frames": 12 + k, "fps": 12.0, "width": W, "height": H})
    pd.DataFrame(rows).to_parquet(root / "manifest.parquet")
    pass_validation(root.parent, "validate_ssv2")  # the trainers' gate, under the stage's working directory


def params():
    common = {"grad_accum": 1, "lr": 0.003, "checkpoint_every": 2, "log_every": 1, "tracker": "dvclive",
              "model": MODEL, "clip_stride": 1, "val_clips": 2, "val_every": 2}
    return {
        "ingest_ssv2": {"out": "interim"},
        "bench_loader": {"out": "loader"},
        "train_video_vae": {**common, "steps": 4, "batch_size": 2, "warmup_steps": 1, "out_dir": "models/vae",
                            "tracker_dir": "reports/train_video_vae/dvclive", "resolution": 16, "clip_frames": 4},
        "train_curriculum": {**common, "out_dir": "models/curriculum",
                             "tracker_dir": "reports/train_curriculum/dvclive",
                             "curriculum": {"phases": [
                                 {"name": "low", "resolution": 8, "frames": 2, "batch_size": 3, "lr": 0.003,
                                  "steps": 2, "warmup_steps": 1},
                                 {"name": "high", "resolution": 16, "frames": 4, "batch_size": 2, "lr": 0.002,
                                  "steps": 2, "warmup_steps": 1}]}},
        "eval_vae": {"report_dir": "reports/eval_vae", "clips": 2, "strip_clips": 2, "batch_size": 2,
                     "chunk_frames": 2},  # tile: null scores whole frames and probes tiles of half the side
    }


def test_train_both_then_evaluate(tmp_path, monkeypatch):
    tiny_manifest(tmp_path / "interim")
    (tmp_path / "params.yaml").write_text(yaml.safe_dump(params()))
    (tmp_path / ".git").mkdir()  # dvclive looks for a repo root: keep it inside tmp_path

    single = run_stage_module("train_video_vae", ["--no-progress"], tmp_path)
    assert single.returncode == 0, single.stderr[-3000:]
    assert (tmp_path / "models/vae/final/raw/vae.safetensors").is_file()
    live = json.loads((tmp_path / "reports/train_video_vae/dvclive/metrics.json").read_text())
    assert live["step"] == 4 and math.isfinite(live["val"]["psnr"])

    curr = run_stage_module("train_curriculum", ["--no-progress"], tmp_path)
    assert curr.returncode == 0, curr.stderr[-3000:]
    assert "phase 'low' ended at step 2" in curr.stderr
    final = json.loads((tmp_path / "models/curriculum/final/metrics.json").read_text())
    assert final["stop_reason"] == "curriculum" and final["step"] == 4
    phases = json.loads((tmp_path / "models/curriculum/final/curriculum.json").read_text())["history"]
    assert [(p["name"], p["start"], p["end"]) for p in phases] == [("low", 0, 2), ("high", 2, 4)]

    monkeypatch.chdir(tmp_path)
    metrics, markdown = evaluate_video_vae("params.yaml", tmp_path / "reports/eval_vae")
    assert metrics["points"] == ["8px_2f", "16px_4f"] and metrics["clips"] == 2
    for stage in ("train_video_vae", "train_curriculum"):
        for point in metrics["points"]:
            entry = metrics[stage][point]
            for name in ("vae", "bicubic_values", "bicubic_grid"):
                assert math.isfinite(entry[name]["psnr"]), (stage, point, name)
            assert math.isclose(entry["psnr_gain_db"], entry["vae"]["psnr"] - entry["bicubic_values"]["psnr"])
            assert entry["vae"]["kl_per_element"] >= 0
            # latent 2 ch on a /2 grid = 2/(3*2*4) of the values; the equal-values baseline keeps 3 ch on a
            # round(grid * sqrt(2/3)) grid, the latent-grid baseline 3 ch on the latent's grid
            grid = int(point.split("px")[0]) // 2
            assert entry["bicubic_values"]["side"] == round(grid * math.sqrt(2 / 3))
            assert entry["bicubic_grid"]["values_per_element"] == 1.5 * entry["vae"]["values_per_element"]
            assert (tmp_path / f"reports/eval_vae/strip_{stage}_{point}.png").stat().st_size > 0
        assert metrics[stage]["8px_2f"]["vae"]["ssim"] is None  # frames under 11 px: no SSIM window
        assert 0 < metrics[stage]["16px_4f"]["vae"]["ssim"] <= 1
    assert "### train_curriculum" in markdown and "| 16 px, 4 f |" in markdown
    assert markdown.count("**Verdict:** the VAE") == 2  # one plain sentence per trainer against its baseline
    # the largest point ran in temporal chunks (exact); tiles of half its side were probed, their cost measured
    for stage in ("train_video_vae", "train_curriculum"):
        probe = metrics[stage]["16px_4f"]["inference"]
        assert probe["chunk_frames"] == 2 and probe["chunked_max_abs_vs_whole"] < 1e-5
        tiled = probe["tiled"]
        assert (tiled["tile"], tiled["overlap"]) == (8, 4) and tiled["all_mean_abs"] > 0
        assert math.isfinite(tiled["psnr_tiled"]) and "inference" not in metrics[stage]["8px_2f"]
    assert "temporal chunks of 2 frames" in markdown and "Spatial tiles of 8 px overlapping by 4 px" in markdown
    bad = params()
    bad["eval_vae"]["chunk_frames"] = 3
    (tmp_path / "params.yaml").write_text(yaml.safe_dump(bad))
    with pytest.raises(ConfigError, match="eval_vae.chunk_frames: 3 is not a multiple of"):
        evaluate_video_vae("params.yaml", tmp_path / "reports/eval_vae")


def test_curriculum_section_rejects_a_top_level_batch_size(tmp_path):
    p = params()
    p["train_curriculum"]["batch_size"] = 4
    (tmp_path / "params.yaml").write_text(yaml.safe_dump(p))
    proc = run_stage_module("train_curriculum", [], tmp_path)
    assert proc.returncode == 1
    assert "train_curriculum.batch_size: set by each curriculum phase (batch_size)" in proc.stderr


def test_eval_vae_needs_no_audio_library_when_the_audio_trainer_is_null(tmp_path):
    """The GPU machine's image has no librosa, soundfile or soxr; a video-only run's params null train_audio_vae,
    and eval_vae must then not import the audio evaluator (a GPU run once died there after training)."""
    import subprocess
    import sys
    from pathlib import Path

    (tmp_path / "p.yaml").write_text("train_audio_vae: null\n")
    code = ("import json, sys\n"
            "for m in ('librosa', 'soundfile', 'soxr'):\n"
            "    sys.modules[m] = None  # import of it now fails\n"
            "from stages.eval_vae import evaluate_audio\n"
            "metrics, section = evaluate_audio(sys.argv[1], 'unused')\n"
            "print(json.dumps([metrics, section]))\n")
    repo = Path(__file__).resolve().parents[2]
    proc = subprocess.run([sys.executable, "-c", code, str(tmp_path / "p.yaml")], cwd=repo, capture_output=True,
                          text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr
    metrics, section = json.loads(proc.stdout)
    assert metrics == {"skipped": "train_audio_vae is null"} and "Not evaluated" in section
    (tmp_path / "p.yaml").write_text("train_audio_vae: {}\n")  # a real section: the audio evaluator is imported
    proc = subprocess.run([sys.executable, "-c", code, str(tmp_path / "p.yaml")], cwd=repo, capture_output=True,
                          text=True, timeout=120)
    assert proc.returncode != 0 and "ModuleNotFoundError" in proc.stderr
