"""A bad params file stops a stage before any work: exit 1, one error line naming the file, the key and the fix."""
import math
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

REPO = Path(__file__).resolve().parents[2]


def _nan_lr(params: dict) -> dict:
    params["train_apt"]["lr"] = math.nan  # safe_dump writes .nan
    return params


def _misspelled(params: dict) -> dict:
    params["trian_apt"] = params.pop("train_apt")
    return params


def _unknown(params: dict) -> dict:
    params["experiment_notes"] = {"owner": "me"}
    return params


@pytest.mark.parametrize("edit, key, fix", [
    (_nan_lr, "train_apt.lr: must be a finite number, got nan", "use a finite number"),
    (_misspelled, "trian_apt: unknown section; did you mean 'train_apt'?", "rename or remove it"),
    (_unknown, "experiment_notes: unknown section", "rename or remove it"),
], ids=["nan_lr", "misspelled_section", "unknown_section"])
def test_train_apt_stops_with_one_line(tmp_path, edit, key, fix):
    params = tmp_path / "params.yaml"
    params.write_text(yaml.safe_dump(edit(yaml.safe_load((REPO / "params.yaml").read_text())), sort_keys=False))
    proc = subprocess.run([sys.executable, "-m", "stages.train_apt", "--params", str(params)], cwd=REPO,
                          capture_output=True, text=True, timeout=300)
    assert proc.returncode == 1, proc.stderr
    lines = [line for line in proc.stderr.splitlines() if line.strip()]
    assert len(lines) == 1 and "Traceback" not in proc.stderr, proc.stderr
    assert f"{params}: {key}" in lines[0] and fix in lines[0], lines[0]
