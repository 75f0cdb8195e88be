"""Audio VAE training on a tiny folder of sine/chirp wavs: config split and errors, data shapes, quarantine
counts, exact resume after a kill, the loss going down, early stopping, the run fingerprint."""
import logging
import math

import numpy as np
import pandas as pd
import pytest
import soundfile as sf
import torch

from lib.audio.folder import AudioFolderConfig
from lib.config import ConfigError
from lib.train.audio_vae import (
    from_section,
    load_audio_data,
    make_data_fn,
    make_trainer,
    run_fingerprint,
    to_section,
    validation_batch,
)
from lib.train.checkpoint import latest_checkpoint
from tests.helpers.training import final_weights, run_killed_at

SR = 8000
MEL = {"sample_rate": SR, "n_fft": 256, "hop_length": 64, "n_mels": 16}


def tone(seconds: float, f0: float, f1: float, seed: int) -> np.ndarray:
    """A chirp from f0 to f1 Hz with a little noise and a fade, peak 0.5."""
    t = np.arange(int(seconds * SR)) / SR
    phase = 2 * np.pi * (f0 * t + (f1 - f0) * t**2 / (2 * seconds))
    wave = np.sin(phase) * np.minimum(1.0, np.minimum(t, t[-1] - t) * 20)
    wave += 0.01 * np.random.default_rng(seed).standard_normal(t.size)
    return (0.5 * wave / np.abs(wave).max()).astype(np.float32)


@pytest.fixture(scope="module")
def folder(tmp_path_factory) -> AudioFolderConfig:
    """8 good clips (6 train, 2 validation, 0.6..0.95 s), an empty file and a too-short one, metadata.csv."""
    root = tmp_path_factory.mktemp("audio")
    rows = []
    for k in range(8):
        sf.write(root / f"c{k}.wav", tone(0.6 + 0.05 * k, 200 + 100 * k, 1500 - 80 * k, k), SR, subtype="PCM_16")
        rows.append({"id": f"c{k}", "split": "train" if k < 6 else "validation"})
    (root / "empty.wav").write_bytes(b"")
    sf.write(root / "short.wav", tone(0.1, 300, 400, 9), SR, subtype="PCM_16")
    rows += [{"id": "empty", "split": "train"}, {"id": "short", "split": "train"}]
    pd.DataFrame(rows).to_csv(root / "metadata.csv", index=False)
    return AudioFolderConfig(root=str(root), sample_rate=SR)


@pytest.fixture(autouse=True)
def _tiny(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)


def section(out_dir, **kw):
    """A train_audio_vae section small enough for a few CPU steps."""
    base = {"steps": 6, "batch_size": 4, "warmup_steps": 1, "lr": 0.003, "betas": [0.9, 0.99], "checkpoint_every": 2,
            "log_every": 1, "tracker": "none", "out_dir": str(out_dir), "ema_half_life_images": 20.0,
            "model": {"n_mels": 16, "channels": 16, "latent_channels": 4, "time_compression": 2, "blocks": 1},
            "mel": MEL, "crop_frames": 16, "val_clips": 2, "val_every": 2}
    return {**base, **kw}


def test_section_split_round_trip_and_config_errors(folder):
    cfg = from_section(section("x", early_stopping={"monitor": "val/recon", "patience": 3}))
    assert cfg.train.steps == 6 and cfg.model.latent_channels == 4 and cfg.mel.hop_length == 64
    assert cfg.early_stopping.monitor == "val/recon" and cfg.ema
    assert from_section(to_section(cfg)) == cfg
    assert cfg.latent_floats_per_second == 4 * SR / (64 * 2)
    with pytest.raises(ConfigError, match=r"train_audio_vae\.stepz: unknown key; did you mean 'steps'"):
        from_section({"stepz": 3})
    with pytest.raises(ConfigError, match=r"train_audio_vae\.model\.chanels: unknown key; did you mean 'channels'"):
        from_section({"model": {"chanels": 3}})
    with pytest.raises(ConfigError, match=r"crop_frames: 30 is not divisible by model.time_compression=4.*28 or 32"):
        from_section({"crop_frames": 30})
    with pytest.raises(ConfigError, match=r"model.n_mels \(64\) and mel.n_mels \(16\) differ"):
        from_section({"mel": MEL})
    with pytest.raises(ConfigError,
                       match=r"train_audio_vae\.early_stopping\.monitor: 'val/los' .*did you mean 'val/loss'"):
        from_section({"early_stopping": {"monitor": "val/los"}})
    with pytest.raises(ConfigError, match="patience"):
        from_section({"early_stopping": {"patience": 0}})
    with pytest.raises(ConfigError, match=r"audio.sample_rate \(16000\) and train_audio_vae.mel.sample_rate \(8000\)"):
        load_audio_data(from_section(section("x")), AudioFolderConfig(root=folder.root))


def test_data_shapes_quarantine_and_resumed_order(folder, caplog):
    cfg = from_section(section("x", grad_accum=2))
    with caplog.at_level(logging.WARNING, logger="lib.train.audio_vae"):
        data = load_audio_data(cfg, folder)
    assert "2 file(s) quarantined (too_short: 1, zero_bytes: 1)" in caplog.text
    summary = data.summary()
    assert summary["clips"] == {"train": 6, "validation": 2} and summary["quarantined"] == 2
    assert summary["quarantine_reasons"] == {"too_short": 1, "zero_bytes": 1}

    batches = list(make_data_fn(cfg, data.train)(0))
    assert len(batches) == 12  # steps * grad_accum micro-batches
    assert batches[0]["mel"].shape == (4, 16, 16) and batches[0]["mel"].dtype == torch.float32
    assert math.log(1e-5) - 1e-4 <= batches[0]["mel"].min() and batches[0]["mel"].max() < 5
    resumed = list(make_data_fn(cfg, data.train)(3))  # optimiser step 3 = micro-batch 6
    assert len(resumed) == 6
    assert all(torch.equal(a["mel"], b["mel"]) for a, b in zip(batches[6:], resumed, strict=False))
    assert not torch.equal(batches[0]["mel"], batches[1]["mel"])
    val = validation_batch(cfg, data.validation)
    assert val.shape == (2, 16, 16) and torch.equal(val, validation_batch(cfg, data.validation))


def test_exact_resume_after_a_kill(tmp_path, folder):
    cfg_a = from_section(section(tmp_path / "a"))
    data = load_audio_data(cfg_a, folder)
    metrics = make_trainer(cfg_a, data).run(progress=False)
    for key in ("train/loss", "train/recon", "train/kl", "train/spectral", "val/loss", "val/recon", "val/kl",
                "val/spectral"):
        assert math.isfinite(metrics[key]), key
    assert latest_checkpoint(tmp_path / "a").name == "step-000006"
    a = final_weights(tmp_path / "a")
    assert set(a) == {"raw/vae", "ema/vae"}

    cfg_b = from_section(section(tmp_path / "b"))
    trainer_b = make_trainer(cfg_b, data)
    run_killed_at(trainer_b, 5)
    assert not (tmp_path / "b" / "final").exists()
    resumed = make_trainer(cfg_b, data)
    assert resumed.resumed_from.name == "step-000004" and resumed.step == 4
    resumed.run(progress=False)
    b = final_weights(tmp_path / "b")
    for key in a:
        for name in a[key]:
            assert torch.equal(a[key][name], b[key][name]), f"{key}:{name}"


def test_training_lowers_the_validation_loss(tmp_path, folder):
    cfg = from_section(section(tmp_path / "run", steps=120, warmup_steps=5, checkpoint_every=120, log_every=20,
                               val_every=60, ema=False))
    trainer = make_trainer(cfg, load_audio_data(cfg, folder))
    with torch.no_grad():
        before = trainer.validate_fn(trainer, 0)
    trainer.run(progress=False)
    with torch.no_grad():
        after = trainer.validate_fn(trainer, 120)
    assert after["recon"] < 0.3 * before["recon"], (before, after)  # measured: 5.58 -> 0.60 nats
    assert after["loss"] < before["loss"]
    assert not (tmp_path / "run" / "final" / "ema").exists()  # ema: false


def test_early_stopping_on_a_plateau(tmp_path, folder):
    # min_delta far above any change: the first validation sets the best, the next two bring no improvement
    cfg = from_section(section(tmp_path / "es", steps=20, checkpoint_every=20,
                               early_stopping={"monitor": "val/loss", "patience": 2, "min_delta": 1e6}))
    trainer = make_trainer(cfg, load_audio_data(cfg, folder))
    trainer.run(progress=False)
    assert trainer.stop_reason == "early_stopping" and trainer.state.step == 6


def test_fingerprint_follows_params_and_file_bytes(tmp_path, folder):
    import shutil

    root = tmp_path / "copy"
    shutil.copytree(folder.root, root)
    copy = AudioFolderConfig(root=str(root), sample_rate=SR)
    cfg = from_section(section("x"))
    base = run_fingerprint(cfg, load_audio_data(cfg, copy))
    assert run_fingerprint(from_section(section("elsewhere", log_every=5)), load_audio_data(cfg, copy)) == base
    assert run_fingerprint(from_section(section("x", lr=0.001)), load_audio_data(cfg, copy)) != base
    sf.write(root / "c0.wav", tone(0.6, 250, 1500, 0), SR, subtype="PCM_16")  # same length, other sound
    assert run_fingerprint(cfg, load_audio_data(cfg, copy)) != base
