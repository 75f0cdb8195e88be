"""Audio validation: metrics of a tiny wav folder counted by hand, each threshold failing with its key, the report."""
import json
import re
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import soundfile as sf
from PIL import Image

from lib.audio.folder import AudioFolderConfig, scan_audio_folder
from lib.audio.validate import (
    SCAN_REASONS,
    ValidateAudioConfig,
    check_thresholds,
    compute_metrics,
    dvc_metrics,
    evaluate_thresholds,
)
from lib.audio.validate_report import PLOT_FILES, render_report, write_plots
from lib.config import ConfigError, from_dict

# id -> (split, seconds, rate, channels); the rates and channels are the file's own
GOOD = {"a": ("train", 1.0, 16000, 1), "b": ("train", 1.5, 16000, 2), "c": ("train", 0.5, 8000, 1),
        "d": ("validation", 2.0, 16000, 1)}


def tone(seconds, rate, channels):
    t = np.arange(round(seconds * rate)) / rate
    wave = (0.5 * np.sin(2 * np.pi * 440 * t)).astype(np.float32)
    return np.stack([wave] * channels, axis=1) if channels > 1 else wave


@pytest.fixture
def folder(tmp_path) -> AudioFolderConfig:
    """Four good wavs (3 train, 1 validation), a corrupt wav listed as train, a silent one listed as validation."""
    root = tmp_path / "audio"
    root.mkdir()
    for item_id, (_, seconds, rate, channels) in GOOD.items():
        sf.write(root / f"{item_id}.wav", tone(seconds, rate, channels), rate)
    (root / "corrupt.wav").write_bytes(b"RIFF but not really a wave file" * 20)
    sf.write(root / "quiet.wav", np.zeros(8000, np.float32), 8000)
    splits = {**{k: v[0] for k, v in GOOD.items()}, "corrupt": "train", "quiet": "validation"}
    pd.DataFrame({"id": list(splits), "split": list(splits.values())}).to_csv(root / "metadata.csv", index=False)
    return AudioFolderConfig(root=str(root), sample_rate=16000)


def metrics_of(folder: AudioFolderConfig) -> dict:
    return compute_metrics(scan_audio_folder(folder), folder)


def test_metrics_count_files_seconds_and_quarantine(folder):
    m = metrics_of(folder)
    assert m["totals"] == {"files": 4, "quarantined": 2, "items": 6, "seconds": pytest.approx(5.0)}
    assert {s: d["count"] for s, d in m["splits"].items()} == {"train": 3, "validation": 1}
    assert m["splits"]["train"]["total_s"] == pytest.approx(3.0)
    assert m["splits"]["validation"]["total_s"] == pytest.approx(2.0)
    assert (m["durations"]["min_s"], m["durations"]["max_s"]) == pytest.approx((0.5, 2.0))
    assert m["durations"]["mean_s"] == pytest.approx(5.0 / 4)
    assert m["sample_rates"] == {"8000": 1, "16000": 3} and m["channels"] == {"1": 3, "2": 1}
    q = m["quarantine"]
    assert q["count"] == 2 and q["fraction"] == pytest.approx(2 / 6)
    assert q["by_reason"] == {"not_audio": 1, "silent": 1} and q["by_split"] == {"train": 1, "validation": 1}
    assert {(e["id"], e["reason"]) for e in q["examples"]} == {("corrupt", "not_audio"), ("quiet", "silent")}
    assert m["source"]["split_file"] == str(Path(folder.root) / "metadata.csv")


def test_dvc_metrics_are_two_levels_of_numbers(folder):
    m = metrics_of(folder)
    out = dvc_metrics(m, ["one failure"])
    assert out["thresholds_failed"] == 1 and out["files"] == 4 and out["quarantined"] == 2
    assert out["files_per_split"] == {"train": 3, "validation": 1}
    assert out["seconds_per_split"] == pytest.approx({"train": 3.0, "validation": 2.0})
    assert out["format"] == {"sample_rates": 2, "sample_rate_min": 8000, "sample_rate_max": 16000,
                             "multichannel_files": 1}
    assert set(SCAN_REASONS) <= set(out["quarantine"]) and out["quarantine"]["not_audio"] == 1
    for value in out.values():
        assert isinstance(value, (int, float)) or all(isinstance(v, (int, float)) for v in value.values())
    json.dumps(out)


def test_empty_folder_reports_zeros_and_no_durations(tmp_path):
    folder = AudioFolderConfig(root=str(tmp_path), split_file=None)
    m = metrics_of(folder)
    assert m["totals"]["files"] == 0 and m["splits"]["train"]["count"] == 0
    out = dvc_metrics(m, [])
    assert out["duration_s"] == {} and out["format"] == {"sample_rates": 0, "multichannel_files": 0}
    assert len(check_thresholds(m, ValidateAudioConfig())) == 4  # every minimum fails, the fraction holds


def test_tiny_folder_passes_lowered_thresholds(folder):
    cfg = ValidateAudioConfig(min_files=4, min_files_per_split={"train": 3, "validation": 1},
                              max_quarantine_fraction=0.34, min_total_seconds=5.0 - 1e-6)
    m = metrics_of(folder)
    assert check_thresholds(m, cfg) == []
    assert all(r.passed for r in evaluate_thresholds(m, cfg))


PASSING = {"min_files": 4, "min_files_per_split": {"train": 3, "validation": 1}, "max_quarantine_fraction": 0.34,
           "min_total_seconds": 4.0}


@pytest.mark.parametrize(("override", "expected"), [
    ({"min_files": 6}, "4 good files in the folder, 2 below validate_audio.min_files=6"),
    ({"min_files_per_split": {"train": 3, "validation": 3}},
     "split 'validation' has 1 good file, 2 below validate_audio.min_files_per_split.validation=3"),
    ({"min_files_per_split": {"train": 3, "test": 1}},
     "split 'test' has 0 good files, 1 below validate_audio.min_files_per_split.test=1"),
    ({"max_quarantine_fraction": 0.25}, "quarantined fraction is 0.3333 (2 of 6 items; not_audio: 1, silent: 1), "
                                        "0.0833 above validate_audio.max_quarantine_fraction=0.25"),
    ({"min_total_seconds": 6.5}, "5.0 s of good audio, 1.5 s below validate_audio.min_total_seconds=6.5"),
])
def test_each_threshold_fails_naming_its_key_and_shortfall(folder, override, expected):
    failures = check_thresholds(metrics_of(folder), ValidateAudioConfig(**{**PASSING, **override}))
    assert failures == [expected]


def test_config_rejects_out_of_range_values_naming_the_key():
    with pytest.raises(ConfigError, match=r"validate_audio\.max_quarantine_fraction"):
        from_dict(ValidateAudioConfig, {"max_quarantine_fraction": 1.5}, "validate_audio")
    with pytest.raises(ConfigError, match=r"validate_audio\.min_files_per_split\.train"):
        from_dict(ValidateAudioConfig, {"min_files_per_split": {"train": -1}}, "validate_audio")
    with pytest.raises(ConfigError, match="did you mean 'min_files'"):
        from_dict(ValidateAudioConfig, {"min_file": 3}, "validate_audio")


def test_scan_reasons_cover_every_reason_the_folder_scan_gives():
    from lib import quarantine
    source = (Path(__file__).resolve().parents[2] / "lib/audio/folder.py").read_text()
    used = set(re.findall(r'"(\w+)"', source)) & set(quarantine.REASONS)
    assert used and used <= set(SCAN_REASONS), sorted(used - set(SCAN_REASONS))


def test_report_and_plots(folder, tmp_path):
    cfg = ValidateAudioConfig(report_dir=str(tmp_path / "report"), **{**PASSING, "min_files": 6})
    scan = scan_audio_folder(folder)
    m = compute_metrics(scan, folder)
    failures = check_thresholds(m, cfg)
    plots = write_plots(scan.files, m, cfg.report_dir)
    assert [p.name for p in plots] == list(PLOT_FILES)
    for p in plots:
        with Image.open(p) as im:
            assert im.format == "PNG"
    report = render_report(m, failures, plots, cfg)
    assert report.splitlines()[2].startswith("**Status: FAILED** — 1 threshold check(s) failed")
    assert "| `validate_audio.min_files` | 6 | 4 | **FAIL** |" in report
    assert "| train | 3 | 75.0% | 3 |" in report and "| `not_audio` |" in report
    assert "![durations](durations.png)" in report
    passed = render_report(m, [], plots, ValidateAudioConfig(report_dir=cfg.report_dir, **PASSING))
    assert "**Status: passed**" in passed and "FAILED" not in passed
