"""The GPU a benchmark ran on, as nvidia-smi names it (None on a machine without one): for the reports' device."""
from __future__ import annotations

import subprocess


def gpu_names() -> list[str]:
    """Every GPU's name, as nvidia-smi lists them ([] without one)."""
    try:
        out = subprocess.run(["nvidia-smi", "--query-gpu=name", "--format=csv,noheader"], capture_output=True,
                             text=True, timeout=30).stdout.strip().splitlines()
    except (OSError, subprocess.SubprocessError):
        return []
    return [line.strip() for line in out if line.strip()]


def gpu_name() -> str | None:
    names = gpu_names()
    return names[0] if names else None
