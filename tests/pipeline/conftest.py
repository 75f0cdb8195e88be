"""A temporary clone of the working tree (tracked + untracked, not ignored) with tiny params."""
from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

REPO = Path(__file__).resolve().parents[2]

TINY = {
    "synth_ssv2": {"count": 6, "min_per_class": 2, "height": 64, "widths": [96], "min_seconds": 1.0,
                   "max_seconds": 1.5, "workers": 1,
                   "templates": ["Pushing something from left to right", "Moving something up",
                                 "Uncovering something"],
                   "split_fractions": {"train": 0.5, "validation": 0.5}},
    "ingest_ssv2": {"shards": 3, "expected_height": 64, "min_seconds": 0.5, "min_frames": 4},
    "validate_ssv2": {"min_videos_per_class": 1, "min_videos": 3},
}


def env_with_venv() -> dict[str, str]:
    """The test interpreter's bin first on PATH, so dvc/snakemake/python are the project's."""
    env = dict(os.environ)
    env["PATH"] = f"{Path(sys.executable).parent}{os.pathsep}{env.get('PATH', '')}"
    env["PYTHONPATH"] = ""  # the clone's own lib/ (cwd) must win, not the checkout's
    env.setdefault("DVC_NO_ANALYTICS", "1")
    return env


def run(cmd: list[str], cwd: Path, check: bool = True, **kw) -> subprocess.CompletedProcess:
    """Run a command in the clone with the venv on PATH; on failure show its output."""
    proc = subprocess.run(cmd, cwd=cwd, env=env_with_venv(), capture_output=True, text=True, **kw)
    if check and proc.returncode != 0:
        raise AssertionError(f"{' '.join(cmd)} exited {proc.returncode}\n{proc.stdout[-3000:]}\n{proc.stderr[-3000:]}")
    return proc


def set_params(clone: Path, overrides: dict) -> None:
    """Merge ``overrides`` (section -> keys) into the clone's params.yaml."""
    path = clone / "params.yaml"
    params = yaml.safe_load(path.read_text())
    for section, keys in overrides.items():
        params.setdefault(section, {}).update(keys)
    path.write_text(yaml.safe_dump(params, sort_keys=False))


@pytest.fixture
def clone(tmp_path) -> Path:
    """A fresh copy of the project as a user would clone it, as a git repo, with tiny params."""
    files = subprocess.run(["git", "ls-files", "--cached", "--others", "--exclude-standard", "-z"], cwd=REPO,
                           capture_output=True, text=True, check=True).stdout.split("\0")
    dest = tmp_path / "clone"
    for rel in filter(None, files):
        src = REPO / rel
        if src.is_file():
            (dest / rel).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(src, dest / rel)
    set_params(dest, TINY)
    for cmd in (["git", "init", "-q"], ["git", "add", "-A"],
                ["git", "-c", "user.email=t@t", "-c", "user.name=t", "commit", "-qm", "clone"]):
        run(cmd, dest)
    return dest
