"""`dvc repro validate_ssv2` from a fresh clone with tiny params: the DAG, outputs, metrics, no-op rerun."""
import json

import pandas as pd
import pytest

from tests.pipeline.conftest import run, set_params

pytestmark = pytest.mark.pipeline


def test_dvc_repro_validate_ssv2_end_to_end(clone):
    run(["dvc", "repro", "validate_ssv2"], clone)

    raw = clone / "data/raw/ssv2_synth"
    assert len(list((raw / "20bn-something-something-v2").glob("*.webm"))) == 6
    manifest = pd.read_parquet(clone / "data/interim/ssv2/manifest.parquet")
    assert len(manifest) == 6 and set(manifest["split"]) == {"train", "validation"}

    metrics = json.loads((clone / "reports/validate_ssv2/metrics.json").read_text())
    shown = run(["dvc", "metrics", "show", "--json"], clone).stdout
    assert "validate_ssv2" in shown or "metrics.json" in shown
    report = (clone / "reports/validate_ssv2/report.md").read_text()
    assert "6" in report and (clone / "reports/validate_ssv2/class_balance.png").stat().st_size > 0
    assert metrics  # numbers exist; their values are checked by the unit tests of lib/ssv2/validate.py

    # git ignores what DVC tracks: data never lands in git
    status = run(["git", "status", "--porcelain", "--untracked-files=all"], clone).stdout
    assert "data/raw" not in status and "data/interim" not in status

    # nothing changed: nothing reruns
    again = run(["dvc", "repro", "validate_ssv2"], clone).stdout
    assert "didn't change, skipping" in again and "Running stage" not in again

    # a validate-only param reruns validation alone
    set_params(clone, {"validate_ssv2": {"min_videos": 4}})
    out = run(["dvc", "repro", "validate_ssv2"], clone).stdout
    assert "Running stage 'validate_ssv2'" in out and "Running stage 'ingest_ssv2'" not in out


def test_failed_threshold_fails_the_stage_with_its_key(clone):
    set_params(clone, {"validate_ssv2": {"min_videos_per_class": 50}})
    proc = run(["dvc", "repro", "validate_ssv2"], clone, check=False)
    assert proc.returncode != 0
    assert "validate_ssv2.min_videos_per_class" in proc.stdout + proc.stderr
