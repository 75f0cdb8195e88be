"""synth_speech on a tiny manifest -> `python -m stages.train_audio_vae` -> evaluate_audio_vae: the audio branch
end to end; a stray file is quarantined and counted, a rerun resumes, the report scores VAE and baseline."""
import json

import numpy as np
import pandas as pd
import pytest
import soundfile as sf
import yaml

from lib.config import ConfigError
from tests.helpers.workspace import pass_validation, run_stage_module

SR = 8000


def params():
    return {
        "synth_speech": {"out": "speech", "manifest": "manifest.parquet", "sample_rate": SR,
                         "voices": ["en-us", "en-gb+f2"], "seed": 0},
        "audio": {"root": "speech", "sample_rate": SR},
        "train_audio_vae": {
            "steps": 8, "batch_size": 4, "warmup_steps": 1, "lr": 0.003, "betas": [0.9, 0.99], "checkpoint_every": 4,
            "log_every": 2, "tracker": "dvclive", "tracker_dir": "reports/train_audio_vae/dvclive",
            "out_dir": "models/avae", "crop_frames": 16, "val_clips": 2, "val_every": 4,
            "model": {"n_mels": 16, "channels": 16, "latent_channels": 4, "time_compression": 2},
            "mel": {"sample_rate": SR, "n_fft": 256, "hop_length": 64, "n_mels": 16}},
        "eval_audio_vae": {"clips": 2, "griffin_lim_iters": 4, "spectrogram_clips": 2},
    }


def test_synth_train_evaluate(tmp_path, monkeypatch):
    pd.DataFrame({"id": ["1", "2", "3", "4", "5"], "split": ["train", "train", "train", "validation", "validation"],
                  "label": ["Moving a cup up", "Pushing a pen from left to right", "Dropping a book",
                            "Covering a box with a towel", "Spinning a coin"]}
                 ).to_parquet(tmp_path / "manifest.parquet")
    (tmp_path / "params.yaml").write_text(yaml.safe_dump(params()))
    (tmp_path / ".git").mkdir()  # dvclive looks for a repo root: keep it inside tmp_path

    synth = run_stage_module("synth_speech", ["--no-progress"], tmp_path)
    assert synth.returncode == 0, synth.stderr[-3000:]
    # a file the split file does not list: quarantined (not_in_split), logged and counted, training goes on
    sf.write(tmp_path / "speech" / "stray.wav", np.full(SR, 0.1, np.float32), SR)

    pass_validation(tmp_path, "validate_audio")
    train = run_stage_module("train_audio_vae", ["--no-progress"], tmp_path)
    assert train.returncode == 0, train.stderr[-3000:]
    assert "1 file(s) quarantined (not_in_split: 1)" in train.stderr
    data = json.loads((tmp_path / "models/avae/data.json").read_text())
    assert data["clips"] == {"train": 3, "validation": 2} and data["quarantine_reasons"] == {"not_in_split": 1}
    assert (tmp_path / "models/avae/final/raw/vae.safetensors").is_file()
    assert (tmp_path / "models/avae/final/ema/vae.safetensors").is_file()
    live = json.loads((tmp_path / "reports/train_audio_vae/dvclive/metrics.json").read_text())
    assert live["step"] == 8 and {"loss", "recon", "kl", "spectral"} <= set(live["val"])

    again = run_stage_module("train_audio_vae", ["--no-progress"], tmp_path)  # resumes at step 8: no work
    assert again.returncode == 0 and "resuming from models/avae/checkpoints/step-000008" in again.stderr

    from lib.eval.audio_vae import SPECTROGRAM_PNG, evaluate_audio_vae

    monkeypatch.chdir(tmp_path)  # params paths are relative to the repository root
    metrics, section = evaluate_audio_vae("params.yaml", tmp_path / "reports/eval")
    assert metrics["clips"] == 2
    for name in ("vae", "baseline", "mel_inversion"):
        assert np.isfinite(metrics[name]["lsd_db"]) and metrics[name]["lsd_db"] > 0, name
    assert metrics["mel_inversion"]["mel_l1"] == 0.0 and metrics["vae"]["mel_l1"] > 0
    assert metrics["vae_lsd_gain_db"] == pytest.approx(metrics["baseline"]["lsd_db"] - metrics["vae"]["lsd_db"])
    assert metrics["vae"]["kl_per_element"] > 0
    # the baseline holds as many numbers per second as the latent: 4 bands x 1 frame per 2 frames
    assert metrics["baseline"]["bands"] == 4 and metrics["baseline"]["time_pool"] == 2
    assert metrics["floats_per_second"] == {"mel": 16 * SR / 64, "latent": 4 * SR / 128, "baseline": 4 * SR / 128}
    assert (tmp_path / "reports/eval" / SPECTROGRAM_PNG).stat().st_size > 10_000
    assert section.startswith("## Audio VAE") and f"]({SPECTROGRAM_PNG})" in section
    # deterministic: the same numbers again (seeded Griffin-Lim)
    assert evaluate_audio_vae("params.yaml", tmp_path / "reports/eval")[0] == metrics

    bad = params()
    bad["eval_audio_vae"]["baseline_time_pool"] = 1
    bad["train_audio_vae"]["model"]["latent_channels"] = 3  # 3 * 1 / 2 = 1.5 bands: no same-size mel
    (tmp_path / "bad.yaml").write_text(yaml.safe_dump(bad))
    with pytest.raises(ConfigError, match="eval_audio_vae.baseline_time_pool: 1 gives 1.5 baseline mel bands"):
        evaluate_audio_vae("bad.yaml", tmp_path / "reports/eval")


def test_unknown_train_audio_vae_key_names_it(tmp_path):
    (tmp_path / "params.yaml").write_text(yaml.safe_dump({"train_audio_vae": {"crop_frame": 64}}))
    proc = run_stage_module("train_audio_vae", [], tmp_path)
    assert proc.returncode == 1 and "did you mean 'crop_frames'" in proc.stderr and "Traceback" not in proc.stderr


def test_train_audio_vae_stops_at_a_failed_validation(tmp_path):
    (tmp_path / "params.yaml").write_text(yaml.safe_dump(params()))
    proc = run_stage_module("train_audio_vae", ["--no-progress"], tmp_path)  # never validated
    assert proc.returncode == 1 and "run `dvc repro validate_audio` before training" in proc.stderr

    report = tmp_path / "reports/validate_audio"
    report.mkdir(parents=True)
    (report / "metrics.json").write_text('{"thresholds_failed": 1}\n')
    proc = run_stage_module("train_audio_vae", ["--no-progress"], tmp_path)
    assert proc.returncode == 1 and "Traceback" not in proc.stderr
    errors = [line for line in proc.stderr.splitlines() if " ERROR " in line]
    assert len(errors) == 1 and "1 validation threshold(s) failed" in errors[0]
    assert "dvc repro validate_audio" in errors[0]
    assert not (tmp_path / "models/avae").exists()  # stopped before reading audio or writing anything


def test_a_null_audio_trainer_is_reported_as_not_evaluated(tmp_path):
    from lib.eval.audio_vae import evaluate_audio_vae

    (tmp_path / "p.yaml").write_text("train_audio_vae: null\n")
    metrics, section = evaluate_audio_vae(tmp_path / "p.yaml", tmp_path / "eval")
    assert metrics == {"skipped": "train_audio_vae is null"}
    assert "Not evaluated" in section and not (tmp_path / "eval").exists()
