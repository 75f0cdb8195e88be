"""stages.validate_ssv2 end to end on a tiny ingest output, as a subprocess from a temp folder."""
from __future__ import annotations

import json
import subprocess
from pathlib import Path

import pandas as pd
import yaml
from PIL import Image

from tests.helpers.workspace import run_stage_module

TEMPLATES = {  # template -> (bracketed template, placeholders)
    "Moving something up": ("Moving [something] up", ["a cup"]),
    "Moving something down": ("Moving [something] down", ["a pen"]),
}


def class_index(template: str) -> int:
    from lib.ssv2.labels import reference_classes
    return {c.template: c.index for c in reference_classes()}[template]


def write_ingest_output(out: Path) -> None:
    """Write manifest.parquet, quarantine.json, summary.json as ingest_ssv2 would: 12 good, 0 quarantined."""
    rows = []
    for i in range(12):
        template = list(TEMPLATES)[i % 2]
        raw, placeholders = TEMPLATES[template]
        split = "test" if i >= 10 else ("validation" if i >= 8 else "train")
        labelled = split != "test"
        label = raw.replace("[something]", placeholders[0])
        rows.append({
            "id": str(i + 1), "split": split, "label": label[0].lower() + label[1:] if labelled else None,
            "template": template if labelled else None, "template_raw": raw if labelled else None,
            "class_index": class_index(template) if labelled else -1,
            "placeholders": placeholders if labelled else [],
            "source_path": f"20bn-something-something-v2/{i + 1}.webm", "path": f"videos/{i + 1}.webm",
            "frames": 36, "fps": 12.0, "width": 320, "height": 240, "probe_frames": 36, "probe_fps": 12.0,
            "probe_width": 320 if i % 3 else 427, "probe_height": 240, "probe_duration_s": 2.0 + i / 6,
            "probe_declared_duration_s": 3.0, "probe_codec": "vp9", "probe_bytes": 5000})
    out.mkdir(parents=True)
    pd.DataFrame(rows).to_parquet(out / "manifest.parquet", index=False)
    (out / "quarantine.json").write_text("[]\n")
    (out / "summary.json").write_text(json.dumps({
        "root": "data/raw/ssv2_synth", "videos": 12, "quarantined": 0,
        "by_split": {"test": 2, "train": 8, "validation": 2}, "quarantine_by_reason": {}, "mode": "reencode"}))


def write_params(path: Path, **validate) -> None:
    params = {
        "ingest_ssv2": {"out": "data/interim/ssv2"},
        "validate_ssv2": {"report_dir": "reports/validate_ssv2", **validate},
        "train_apt": {"steps": 20, "batch_size": 4, "grad_accum": 1, "lr": 0.001},  # other keys are ignored
        # train_video_vae absent: reported as not configured
    }
    path.write_text(yaml.safe_dump(params))


def run_stage(tmp_path: Path, params: Path) -> subprocess.CompletedProcess:
    return run_stage_module("validate_ssv2", ["--params", str(params)], tmp_path)


def test_stage_writes_report_metrics_and_plots(tmp_path):
    write_ingest_output(tmp_path / "data/interim/ssv2")
    params = tmp_path / "params.yaml"
    write_params(params)
    proc = run_stage(tmp_path, params)
    assert proc.returncode == 0, proc.stderr
    report_dir = tmp_path / "reports/validate_ssv2"
    report = (report_dir / "report.md").read_text()
    assert "**Status: passed**" in report and "FAILED" not in report
    assert "| train_video_vae |" in report and "not configured" in report

    metrics = json.loads((report_dir / "metrics.json").read_text())
    assert metrics["videos"] == 12 and metrics["thresholds_failed"] == 0
    assert metrics["splits"] == {"train": 8, "validation": 2, "test": 2}
    assert metrics["exposure"] == {"train_apt": 10.0}  # 20 x 4 / 8 train videos
    assert "per_class" not in json.dumps(metrics)

    counts = json.loads((report_dir / "class_counts.json").read_text())
    assert {c["template"]: c["videos"] for c in counts} == {"Moving something up": 5, "Moving something down": 5}
    for name in ("class_balance.png", "durations.png", "resolutions.png", "quarantine.png"):
        with Image.open(report_dir / name) as im:
            assert im.format == "PNG"


def test_stage_fails_on_threshold_but_writes_report(tmp_path):
    write_ingest_output(tmp_path / "data/interim/ssv2")
    params = tmp_path / "params.yaml"
    write_params(params, min_videos_per_class=7)
    proc = run_stage(tmp_path, params)
    assert proc.returncode == 1
    assert "validate_ssv2.min_videos_per_class=7" in proc.stderr
    assert "has 5 videos, 2 below" in proc.stderr
    report = (tmp_path / "reports/validate_ssv2/report.md").read_text()
    assert report.splitlines()[2].startswith("**Status: FAILED**")
    metrics = json.loads((tmp_path / "reports/validate_ssv2/metrics.json").read_text())
    assert metrics["thresholds_failed"] == 2


def test_stage_names_missing_ingest_output(tmp_path):
    params = tmp_path / "params.yaml"
    write_params(params)
    proc = run_stage(tmp_path, params)
    assert proc.returncode == 1
    assert "manifest.parquet" in proc.stderr and "ingest_ssv2" in proc.stderr


def test_stage_rejects_bad_trainer_schedule(tmp_path):
    write_ingest_output(tmp_path / "data/interim/ssv2")
    params = tmp_path / "params.yaml"
    write_params(params)
    data = yaml.safe_load(params.read_text())
    data["train_apt"]["batch_size"] = "four"
    params.write_text(yaml.safe_dump(data))
    proc = run_stage(tmp_path, params)
    assert proc.returncode == 1
    assert "train_apt.batch_size" in proc.stderr
