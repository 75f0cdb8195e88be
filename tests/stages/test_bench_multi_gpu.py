"""benchmarks/bench_multi_gpu.py on CPU (gloo): the real train_curriculum stage on 1 and 2 processes, its
throughput files turned into the report's rows, efficiency computed against the one-process run."""
import json
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from tests.helpers.ssv2_data import write_clip_manifest

ROOT = Path(__file__).resolve().parents[2]


def test_curriculum_on_one_and_two_gloo_processes_gives_rows_with_efficiency(tmp_path):
    import torch

    if not torch.distributed.is_gloo_available():
        pytest.skip("needs torch.distributed with gloo")
    write_clip_manifest(tmp_path / "interim", frames=[12] * 6, splits=["train"] * 4 + ["validation"] * 2)
    (tmp_path / "reports/validate_ssv2").mkdir(parents=True)
    (tmp_path / "reports/validate_ssv2/metrics.json").write_text('{"thresholds_failed": 0}\n')
    phases = [{"name": "low", "resolution": 16, "frames": 4, "batch_size": 2, "lr": 0.001, "steps": 2},
              {"name": "high", "resolution": 32, "frames": 4, "batch_size": 2, "lr": 0.001, "steps": 2}]
    params = {
        "ingest_ssv2": {"out": str(tmp_path / "interim"), "expected_height": 64},
        "validate_ssv2": {"report_dir": str(tmp_path / "reports/validate_ssv2")},
        "bench_loader": {"out": str(tmp_path / "loader")},
        "train_curriculum": {"log_every": 1, "clip_stride": 1, "val_clips": 2, "val_every": 2,
                             "model": {"channels": 8, "latent_channels": 2, "temporal_compression": 2,
                                       "spatial_compression": 2, "blocks": 1}, "curriculum": {"phases": phases}},
    }
    (tmp_path / "vae.yaml").write_text(yaml.safe_dump(params))
    out = tmp_path / "report"
    proc = subprocess.run([sys.executable, "benchmarks/bench_multi_gpu.py", "--cpu", "--n", "1,2", "--steps", "6",
                           "--phase", "high", "--vae-params", str(tmp_path / "vae.yaml"), "--out", str(out),
                           "--work", str(tmp_path / "work")], cwd=ROOT, capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    result = json.loads((out / "multi_gpu.json").read_text())
    assert {"device", "runs"} <= set(result) and "gloo" in result["device"]
    rows = {r["n"]: r for r in result["runs"]}
    assert set(rows) == {1, 2}
    for n, row in rows.items():
        assert set(row) >= {"trainer", "strategy", "n", "samples_per_s", "efficiency", "peak_gib"}
        assert row["trainer"] == "train_curriculum" and row["peak_gib"] is None  # no CUDA
        speed = json.loads((tmp_path / f"work/curriculum_ddp_{n}/final/throughput.json").read_text())
        assert row["samples_per_s"] == speed["samples_per_s"] > 0
        assert speed["timed_steps"] == 4 and speed["processes"] == n
        assert speed["samples"] == 4 * 2 * n  # global samples: batch 2 per process
        curriculum = yaml.safe_load((tmp_path / f"work/curriculum_ddp_{n}.yaml").read_text())["train_curriculum"]
        assert [p["name"] for p in curriculum["curriculum"]["phases"]] == ["high"]  # --phase: that phase alone
    assert rows[1]["strategy"] == "single" and rows[2]["strategy"] == "ddp"
    assert rows[1]["efficiency"] == pytest.approx(1.0)
    assert rows[2]["efficiency"] == pytest.approx(rows[2]["samples_per_s"] / (2 * rows[1]["samples_per_s"]))
    md = (out / "multi_gpu.md").read_text()
    assert "| train_curriculum | ddp | 2 |" in md
