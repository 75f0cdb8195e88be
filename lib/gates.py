"""Trainers start only on data whose validation passed: the gate between a dataset's validation and training.

Each validation stage (``validate_ssv2``, ``validate_deepcad``, ``validate_audio``) writes ``thresholds_failed``
into its ``metrics.json`` and exits 1 when it is not 0; trainer stages depend on that file in ``dvc.yaml`` (so
``dvc repro train_*`` stops at a failed validation) and call :func:`require_validated` (so a direct
``python -m stages.train_*`` does too).
"""
from __future__ import annotations

from pathlib import Path

from lib.cli import StageCheckFailed
from lib.io import read_json


class ValidationFailed(StageCheckFailed):
    """The dataset a trainer would read failed its validation thresholds."""


def require_validated(report_dir: str | Path, validation_stage: str) -> None:
    """Raise unless ``<report_dir>/metrics.json`` of ``validation_stage`` exists and records no failed threshold.

    FileNotFoundError when the validation never ran; :class:`ValidationFailed` naming the count, the report and
    the fix when it failed.
    """
    path = Path(report_dir) / "metrics.json"
    if not path.is_file():
        raise FileNotFoundError(f"{path}: no validation result; run `dvc repro {validation_stage}` before training")
    failed = read_json(path).get("thresholds_failed")
    if failed is None:
        raise ValidationFailed(f"{path}: no thresholds_failed entry (written by an older {validation_stage}); "
                               f"run `dvc repro {validation_stage}` again")
    if failed:
        raise ValidationFailed(f"{path}: {failed} validation threshold(s) failed, so training would read bad data; "
                               f"see {Path(report_dir) / 'report.md'}, fix the data or the {validation_stage} "
                               f"thresholds in the params file, and run `dvc repro {validation_stage}`")


__all__ = ["ValidationFailed", "require_validated"]
