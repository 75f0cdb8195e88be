"""stages.validate_audio end to end on a tiny wav folder, as a subprocess from a temp folder."""
from __future__ import annotations

import json
import subprocess
from pathlib import Path

import numpy as np
import pandas as pd
import soundfile as sf
import yaml
from PIL import Image

from tests.helpers.workspace import run_stage_module

SR = 8000
REPORT = "reports/validate_audio"


def write_folder(root: Path) -> None:
    """Five good one-second wavs (4 train, 1 validation) and a truncated one listed as train."""
    root.mkdir(parents=True)
    t = np.arange(SR) / SR
    for i in range(5):
        sf.write(root / f"{i}.wav", (0.3 * np.sin(2 * np.pi * (200 + 50 * i) * t)).astype(np.float32), SR)
    (root / "bad.wav").write_bytes(b"RIFF not a wave" * 10)
    ids = [*map(str, range(5)), "bad"]
    splits = ["train"] * 4 + ["validation", "train"]
    pd.DataFrame({"id": ids, "split": splits}).to_csv(root / "metadata.csv", index=False)


def write_params(path: Path, **validate) -> None:
    thresholds = {"min_files": 5, "min_files_per_split": {"train": 4, "validation": 1},
                  "max_quarantine_fraction": 0.2, "min_total_seconds": 4.0}
    path.write_text(yaml.safe_dump({"audio": {"root": "audio", "sample_rate": SR},
                                    "validate_audio": {"report_dir": REPORT, **thresholds, **validate}}))


def run_stage(tmp_path: Path) -> subprocess.CompletedProcess:
    return run_stage_module("validate_audio", ["--params", str(tmp_path / "params.yaml")], tmp_path)


def test_stage_writes_report_metrics_and_plots(tmp_path):
    write_folder(tmp_path / "audio")
    write_params(tmp_path / "params.yaml")
    proc = run_stage(tmp_path)
    assert proc.returncode == 0, proc.stderr
    report = (tmp_path / REPORT / "report.md").read_text()
    assert "**Status: passed**" in report and "FAILED" not in report and "`not_audio`" in report
    metrics = json.loads((tmp_path / REPORT / "metrics.json").read_text())
    assert metrics["thresholds_failed"] == 0 and metrics["files"] == 5 and metrics["quarantined"] == 1
    assert metrics["files_per_split"] == {"train": 4, "validation": 1}
    assert metrics["seconds"] == 5.0 and metrics["quarantine"]["not_audio"] == 1
    for name in ("durations.png", "quarantine.png"):
        with Image.open(tmp_path / REPORT / name) as im:
            assert im.format == "PNG"


def test_stage_fails_on_threshold_after_writing_everything(tmp_path):
    write_folder(tmp_path / "audio")
    write_params(tmp_path / "params.yaml", min_files_per_split={"train": 4, "validation": 3})
    proc = run_stage(tmp_path)
    assert proc.returncode == 1 and "Traceback" not in proc.stderr
    assert "split 'validation' has 1 good file, 2 below validate_audio.min_files_per_split.validation=3" in proc.stderr
    report = (tmp_path / REPORT / "report.md").read_text()
    assert report.splitlines()[2].startswith("**Status: FAILED**")
    assert json.loads((tmp_path / REPORT / "metrics.json").read_text())["thresholds_failed"] == 1
    assert (tmp_path / REPORT / "durations.png").is_file()


def test_stage_names_a_missing_audio_root(tmp_path):
    write_params(tmp_path / "params.yaml")
    proc = run_stage(tmp_path)
    assert proc.returncode == 1 and "Traceback" not in proc.stderr
    assert "audio root is not a folder" in proc.stderr and "dvc repro synth_speech" in proc.stderr
