"""`dvc repro validate_ssv2` from a fresh clone with tiny params: the DAG, outputs, metrics, no-op rerun."""
import json

import pandas as pd
import pytest
import yaml

from tests.helpers.workspace import run, set_params

pytestmark = pytest.mark.pipeline


def test_dvc_repro_validate_ssv2_end_to_end(clone):
    run(["dvc", "repro", "validate_ssv2"], clone)

    raw = clone / "data/raw/ssv2_synth"
    assert len(list((raw / "20bn-something-something-v2").glob("*.webm"))) == 6
    manifest = pd.read_parquet(clone / "data/interim/ssv2/manifest.parquet")
    assert len(manifest) == 6 and set(manifest["split"]) == {"train", "validation"}

    shown = json.loads(run(["dvc", "metrics", "show", "--json"], clone).stdout)
    metrics = shown[""]["data"]["reports/validate_ssv2/metrics.json"]["data"]  # what `dvc exp show` reads
    assert metrics["videos"] == 6 and metrics["quarantined"] == 0 and metrics["thresholds_failed"] == 0
    assert metrics["splits"] == {"train": 3, "validation": 3, "test": 0}
    # views per train video = steps * batch * accumulation / 3 train videos, from the clone's params
    apt = yaml.safe_load((clone / "params.yaml").read_text())["train_apt"]
    assert metrics["exposure"]["train_apt"] == pytest.approx(apt["steps"] * apt["batch_size"] * apt["grad_accum"] / 3)
    report = (clone / "reports/validate_ssv2/report.md").read_text()
    assert "risky" in report and (clone / "reports/validate_ssv2/class_balance.png").stat().st_size > 0

    # git ignores what DVC tracks: data never lands in git
    status = run(["git", "status", "--porcelain", "--untracked-files=all"], clone).stdout.splitlines()
    data_in_git = [line for line in status if "data/" in line and not line.endswith(".gitignore")]
    assert data_in_git == []

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
