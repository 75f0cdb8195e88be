"""The GPU a benchmark ran on, as nvidia-smi names it (None on a machine without one): for the reports' device."""
from __future__ import annotations

import subprocess


def gpu_name() -> str | None:
    try:
        out = subprocess.run(["nvidia-smi", "--query-gpu=name", "--format=csv,noheader"], capture_output=True,
                             text=True, timeout=30).stdout.strip().splitlines()
    except (OSError, subprocess.SubprocessError):
        return None
    return out[0].strip() if out and out[0].strip() else None
