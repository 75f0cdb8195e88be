"""A temporary copy of the working tree, as a user's fresh clone would be, for pipeline tests and benchmarks."""
from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import yaml

REPO = Path(__file__).resolve().parents[2]


def venv_env() -> dict[str, str]:
    """The environment with this interpreter's bin first on PATH (so dvc/snakemake/python are the project's)
    and PYTHONPATH cleared (so a copy's own lib/ wins over the checkout's)."""
    env = dict(os.environ)
    env["PATH"] = f"{Path(sys.executable).parent}{os.pathsep}{env.get('PATH', '')}"
    env["PYTHONPATH"] = ""
    env.setdefault("DVC_NO_ANALYTICS", "1")
    return env


def run(cmd: list[str], cwd: Path, check: bool = True, **kw) -> subprocess.CompletedProcess:
    """Run ``cmd`` in ``cwd`` with :func:`venv_env`; on failure raise with the tail of its output."""
    proc = subprocess.run(cmd, cwd=cwd, env=venv_env(), capture_output=True, text=True, **kw)
    if check and proc.returncode != 0:
        raise AssertionError(f"{' '.join(cmd)} exited {proc.returncode}\n{proc.stdout[-3000:]}\n{proc.stderr[-3000:]}")
    return proc


def copy_worktree(dest: Path) -> Path:
    """Copy the checkout's tracked and untracked-but-not-ignored files to ``dest`` and commit them there."""
    files = subprocess.run(["git", "ls-files", "--cached", "--others", "--exclude-standard", "-z"], cwd=REPO,
                           capture_output=True, text=True, check=True).stdout.split("\0")
    for rel in filter(None, files):
        src = REPO / rel
        if src.is_file():
            (dest / rel).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(src, dest / rel)
    for cmd in (["git", "init", "-q"], ["git", "add", "-A"],
                ["git", "-c", "user.email=t@t", "-c", "user.name=t", "commit", "-qm", "copy"]):
        run(cmd, dest)
    return dest


def set_params(clone: Path, overrides: dict) -> None:
    """Merge ``overrides`` ({section: {key: value}}) into the copy's params.yaml and into conf/, where the copy's
    `dvc exp run -S ...` composes params.yaml from (a section of a config group: its default option's file)."""
    path = clone / "params.yaml"
    params = yaml.safe_load(path.read_text())
    for section, keys in overrides.items():
        params.setdefault(section, {}).update(keys)
    path.write_text(yaml.safe_dump(params, sort_keys=False))
    conf = clone / "conf"
    if not (conf / "config.yaml").is_file():
        return
    config = yaml.safe_load((conf / "config.yaml").read_text())
    groups = {k: v for d in config.get("defaults", []) if isinstance(d, dict) for k, v in d.items()}
    for section, keys in overrides.items():
        if section in groups:
            option = conf / section / f"{groups[section]}.yaml"
            data = yaml.safe_load(option.read_text()) or {}
            data.update(keys)
            option.write_text(yaml.safe_dump(data, sort_keys=False))
        else:
            config.setdefault(section, {}).update(keys)
    (conf / "config.yaml").write_text(yaml.safe_dump(config, sort_keys=False))


def run_stage_module(name: str, args: list[str], cwd: Path) -> subprocess.CompletedProcess:
    """Run ``python -m stages.<name> *args`` in ``cwd`` against this checkout's code; return the process."""
    env = dict(os.environ, PYTHONPATH=str(REPO))
    return subprocess.run([sys.executable, "-m", f"stages.{name}", *args], cwd=cwd, env=env,
                          capture_output=True, text=True)


def pass_validation(cwd: Path, *stages: str) -> None:
    """Record a passed ``validate_ssv2`` / ``validate_deepcad`` / ``validate_audio`` under ``cwd`` (default report
    dirs), the gate every trainer stage checks before it reads data."""
    for stage in stages:
        report = Path(cwd) / "reports" / stage
        report.mkdir(parents=True, exist_ok=True)
        (report / "metrics.json").write_text('{"thresholds_failed": 0}\n')
