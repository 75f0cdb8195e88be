"""What the trainer tests share: a kill in the middle of a step, and a finished run's exported weights."""
from __future__ import annotations

from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file


class Killed(Exception):
    """Stands in for a SIGKILL in the middle of a step."""


def run_killed_at(trainer, step: int) -> None:
    """Run ``trainer`` until it dies inside optimiser step ``step`` (after the checkpoints before it)."""
    inner = trainer.step_fn

    def dies(t, batch, s):
        if s == step:
            raise Killed
        return inner(t, batch, s)

    trainer.step_fn = dies
    with pytest.raises(Killed):
        trainer.run(progress=False)


def final_weights(out_dir: str | Path) -> dict[str, dict[str, torch.Tensor]]:
    """``{"raw/<model>": state, "ema/<model>": state}`` of a finished run's ``final/`` folder."""
    return {f"{kind}/{f.stem}": load_file(str(f))
            for kind in ("raw", "ema") for f in sorted((Path(out_dir) / "final" / kind).glob("*.safetensors"))}
