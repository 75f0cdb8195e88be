"""Audio folder validation: measure a scanned audio folder and check it against thresholds.

Works on :func:`lib.audio.folder.scan_audio_folder`'s result, the same scan ``train_audio_vae`` runs, so the
numbers are those of the files the trainer will read; nothing here reads ``params.yaml`` or argv. Plots and
the markdown page live in :mod:`lib.audio.validate_report` (kept apart so the trainer, which imports the
config from here for its gate, does not import matplotlib). The stage ``stages/validate_audio.py``:

    metrics = compute_metrics(scan_audio_folder(folder), folder)
    failures = check_thresholds(metrics, cfg)

*items* = good files + quarantined entries; the quarantine fraction is over items.
"""
from __future__ import annotations

from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Annotated, Any

import pandas as pd
from annotated_types import Ge, Interval

from lib.audio.folder import AudioFolderConfig, AudioScan
from lib.config import Checked
from lib.thresholds import ThresholdResult

SECTION = "validate_audio"
MAIN_SPLITS = ("train", "validation")  # the splits train_audio_vae reads; always reported, 0 when absent
# every reason scan_audio_folder gives (tests/unit/test_audio_validate.py holds this to lib/audio/folder.py);
# each is a metrics.json column, 0 when absent, so `dvc exp show` columns stay stable
SCAN_REASONS = ("zero_bytes", "not_audio", "unreadable_audio", "too_short", "too_long", "silent",
                "duplicate_id", "not_in_split", "missing_audio", "path_escape")
MAX_EXAMPLES = 20


@dataclass(frozen=True)
class ValidateAudioConfig(Checked):
    """``validate_audio`` params: where the report goes and the thresholds the audio folder must meet."""

    report_dir: str = "reports/validate_audio"
    min_files: Annotated[int, Ge(0)] = 32  # good files over all splits
    # good files each named split must have (train: one batch of distinct files; validation: val_clips)
    min_files_per_split: dict[str, Annotated[int, Ge(0)]] = field(
        default_factory=lambda: {"train": 16, "validation": 8})
    max_quarantine_fraction: Annotated[float, Interval(ge=0, le=1)] = 0.05  # quarantined / (good + quarantined)
    min_total_seconds: Annotated[float, Ge(0)] = 60.0  # seconds of good audio over all splits


# ---------------------------------------------------------------------------------------------
# metrics


def compute_metrics(scan: AudioScan, folder: AudioFolderConfig) -> dict:
    """Return the nested metrics dict of a scanned audio folder (plain JSON types only).

    Keys: source (root, split source, scan limits), totals, splits (per split: count, total_s, min_s, mean_s,
    max_s), durations (all good files), sample_rates and channels (value -> files), quarantine (count, fraction,
    by_reason, by_split, examples).
    """
    files = scan.files
    n_good, n_quarantined = int(len(files)), len(scan.quarantine)
    items = n_good + n_quarantined
    seen = set(files["split"])
    splits = [*MAIN_SPLITS, *sorted(seen - set(MAIN_SPLITS))]
    reasons = Counter(q.reason for q in scan.quarantine)
    return {
        "source": _source(folder),
        "totals": {"files": n_good, "quarantined": n_quarantined, "items": items,
                   "seconds": float(files["seconds"].sum())},
        "splits": {s: duration_stats(files.loc[files["split"] == s, "seconds"]) for s in splits},
        "durations": duration_stats(files["seconds"]),
        "sample_rates": _value_counts(files["sample_rate"]),
        "channels": _value_counts(files["channels"]),
        "quarantine": {"count": n_quarantined, "fraction": fraction(n_quarantined, items),
                       "by_reason": dict(sorted(reasons.items())),
                       "by_split": dict(sorted(Counter(q.split or "(none)" for q in scan.quarantine).items())),
                       "examples": _examples(scan)},
    }


def fraction(part: float, whole: float) -> float:
    return part / whole if whole else 0.0


def duration_stats(seconds: pd.Series) -> dict[str, Any]:
    """Return count, total_s and min/mean/max_s of ``seconds`` (the three None when there are none)."""
    values = seconds.astype(float)
    if not len(values):
        return {"count": 0, "total_s": 0.0, "min_s": None, "mean_s": None, "max_s": None}
    return {"count": int(len(values)), "total_s": float(values.sum()), "min_s": float(values.min()),
            "mean_s": float(values.mean()), "max_s": float(values.max())}


def _source(folder: AudioFolderConfig) -> dict[str, Any]:
    split_file = Path(folder.root) / folder.split_file if folder.split_file else None
    return {"root": folder.root, "extensions": list(folder.extensions),
            "split_file": str(split_file) if split_file is not None and split_file.is_file() else None,
            "split_fractions": dict(folder.split_fractions), "min_seconds": folder.min_seconds,
            "max_seconds": folder.max_seconds, "silence_peak": folder.silence_peak}


def _value_counts(column: pd.Series) -> dict[str, int]:
    counts = Counter(int(v) for v in column)
    return {str(v): n for v, n in sorted(counts.items())}


def _examples(scan: AudioScan) -> list[dict[str, str]]:
    """Up to MAX_EXAMPLES quarantined entries, taken in turn from each reason so every reason is shown."""
    by_reason: dict[str, list] = {}
    for q in scan.quarantine:
        by_reason.setdefault(q.reason, []).append(q)
    picked = []
    for i in range(max((len(v) for v in by_reason.values()), default=0)):
        picked += [entries[i].to_dict() for entries in by_reason.values() if i < len(entries)]
    return picked[:MAX_EXAMPLES]


def dvc_metrics(metrics: dict, failures: list[str]) -> dict:
    """Return the numbers of ``metrics`` for ``metrics.json``: at most two levels, numbers only.

    Every reason of :data:`SCAN_REASONS` appears (0 when absent); a duration of an empty folder is left out.
    """
    dur = metrics["durations"]
    rates = [int(r) for r in metrics["sample_rates"]]
    q = metrics["quarantine"]
    return {
        "files": metrics["totals"]["files"],
        "quarantined": metrics["totals"]["quarantined"],
        "seconds": metrics["totals"]["seconds"],
        "thresholds_failed": len(failures),
        "files_per_split": {s: d["count"] for s, d in metrics["splits"].items()},
        "seconds_per_split": {s: d["total_s"] for s, d in metrics["splits"].items()},
        "duration_s": {k[:-2]: dur[k] for k in ("min_s", "mean_s", "max_s") if dur[k] is not None},
        "format": {"sample_rates": len(rates), **({"sample_rate_min": min(rates), "sample_rate_max": max(rates)}
                                                   if rates else {}),
                   "multichannel_files": sum(n for ch, n in metrics["channels"].items() if int(ch) > 1)},
        "quarantine": {"fraction": q["fraction"], **({r: 0 for r in SCAN_REASONS} | q["by_reason"])},
    }


# ---------------------------------------------------------------------------------------------
# thresholds


def evaluate_thresholds(metrics: dict, cfg: ValidateAudioConfig) -> list[ThresholdResult]:
    """Return one ThresholdResult per threshold of ``cfg`` (one per split of min_files_per_split), in a fixed order."""
    out = []
    files = metrics["totals"]["files"]
    key = f"{SECTION}.min_files"
    out.append(ThresholdResult(key, cfg.min_files, str(files), () if files >= cfg.min_files else (
        f"{_files(files)} in the folder, {cfg.min_files - files} below {key}={cfg.min_files}",)))

    for split, limit in cfg.min_files_per_split.items():
        key = f"{SECTION}.min_files_per_split.{split}"
        n = metrics["splits"].get(split, {}).get("count", 0)
        out.append(ThresholdResult(key, limit, str(n), () if n >= limit else (
            f"split {split!r} has {_files(n)}, {limit - n} below {key}={limit}",)))

    q, items = metrics["quarantine"], metrics["totals"]["items"]
    key, limit = f"{SECTION}.max_quarantine_fraction", cfg.max_quarantine_fraction
    measured = f"{q['fraction']:.4f} ({q['count']} of {items})"
    out.append(ThresholdResult(key, limit, measured, () if q["fraction"] <= limit else (
        f"quarantined fraction is {q['fraction']:.4f} ({q['count']} of {items} items; "
        f"{', '.join(f'{r}: {n}' for r, n in q['by_reason'].items())}), {q['fraction'] - limit:.4f} above "
        f"{key}={limit}",)))

    seconds = metrics["totals"]["seconds"]
    key, limit = f"{SECTION}.min_total_seconds", cfg.min_total_seconds
    out.append(ThresholdResult(key, limit, f"{seconds:.1f} s", () if seconds >= limit else (
        f"{seconds:.1f} s of good audio, {limit - seconds:.1f} s below {key}={limit}",)))
    return out


def _files(n: int) -> str:
    return f"{n} good file{'' if n == 1 else 's'}"


def check_thresholds(metrics: dict, cfg: ValidateAudioConfig) -> list[str]:
    """Return one message per failed threshold (empty when all pass), naming its params key and shortfall."""
    return [msg for result in evaluate_thresholds(metrics, cfg) for msg in result.failures]
