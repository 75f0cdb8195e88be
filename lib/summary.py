"""The headline numbers of a pipeline run: ~20 stable names from the stages' own metrics files.

``dvc exp show`` lists every value of 13 metrics files (about 400 columns); ``reports/summary.json`` keeps what a
reader compares across experiments: each trained model beside its trivial baseline on held-out data, the data counts
and quarantine rates, and the loader's efficiency. Names never depend on a run's settings (the video VAEs report at
their largest evaluated resolution, whichever it is), so columns line up across experiments. A stage that has not
run gives ``null`` and counts in ``stages_missing``.
"""
from __future__ import annotations

import re
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from lib.io import read_json

# (stage whose report_dir holds metrics.json, its default report_dir)
SOURCES = {
    "validate_ssv2": "reports/validate_ssv2",
    "validate_deepcad": "reports/validate_deepcad",
    "validate_audio": "reports/validate_audio",
    "bench_loader": "reports/bench_loader",
    "eval_apt": "reports/eval_apt",
    "eval_vae": "reports/eval_vae",
    "eval_cad_vlm": "reports/eval_cad_vlm",
}


@dataclass(frozen=True)
class SummarizeConfig:
    """``summarize`` params: where the summary goes."""

    out: str = "reports/summary.json"
    digits: int = 4  # values are rounded to this many decimals
    page: str = "reports/index.html"  # every report's headline numbers, images and links (lib/report_page.py)
    reports: str = "reports"  # the folder of stage reports the page covers


def dig(metrics: dict | None, path: str) -> Any:
    """Return ``metrics[a][b]...`` for ``path`` "a.b..." or None when any part is missing."""
    node: Any = metrics
    for part in path.split("."):
        if not isinstance(node, dict) or part not in node:
            return None
        node = node[part]
    return node


def largest_resolution(section: dict | None) -> dict | None:
    """The entry of the largest ``<N>px_<F>f`` key of an eval_vae model section (its headline resolution)."""
    keys = [k for k in (section or {}) if re.fullmatch(r"\d+px_\d+f", k)]
    if not keys:
        return None
    return section[max(keys, key=lambda k: tuple(int(x) for x in re.findall(r"\d+", k)))]


# name -> (source stage, how to read it). Grouped: data, loader, then each model beside its baseline.
HEADLINE: dict[str, tuple[str, Callable[[dict], Any]]] = {
    "ssv2.videos": ("validate_ssv2", lambda m: dig(m, "videos")),
    "ssv2.quarantine_rate": ("validate_ssv2", lambda m: dig(m, "quarantine.fraction")),
    "deepcad.models": ("validate_deepcad", lambda m: dig(m, "models")),
    "deepcad.quarantine_rate": ("validate_deepcad", lambda m: dig(m, "quarantine.fraction")),
    "audio.files": ("validate_audio", lambda m: dig(m, "files")),
    "audio.quarantine_rate": ("validate_audio", lambda m: dig(m, "quarantine.fraction")),
    "loader.clips_per_s": ("bench_loader", lambda m: dig(m, "stable.clips_per_s")),
    "loader.efficiency": ("bench_loader", lambda m: dig(m, "efficiency")),
    "apt.psnr_db": ("eval_apt", lambda m: dig(m, "G_ema.psnr")),
    "apt.baseline_psnr_db": ("eval_apt", lambda m: dig(m, "bicubic.psnr")),
    "apt.gain_db": ("eval_apt", lambda m: dig(m, "G_ema.psnr_gain_db")),
    "video_vae.psnr_db": ("eval_vae", lambda m: dig(largest_resolution(dig(m, "video.train_video_vae")), "vae.psnr")),
    "video_vae.baseline_psnr_db": ("eval_vae", lambda m: dig(largest_resolution(dig(m, "video.train_video_vae")),
                                                             "bicubic_values.psnr")),
    "video_vae.gain_db": ("eval_vae", lambda m: dig(largest_resolution(dig(m, "video.train_video_vae")),
                                                    "psnr_gain_db")),
    "curriculum_vae.gain_db": ("eval_vae", lambda m: dig(largest_resolution(dig(m, "video.train_curriculum")),
                                                         "psnr_gain_db")),
    "audio_vae.lsd_gain_db": ("eval_vae", lambda m: dig(m, "audio.vae_lsd_gain_db")),
    "cad_vlm.mean_iou": ("eval_cad_vlm", lambda m: dig(m, "model.mean_iou")),
    "cad_vlm.baseline_mean_iou": ("eval_cad_vlm", lambda m: dig(m, "nn_retrieval.mean_iou")),
    "cad_vlm.exact_match": ("eval_cad_vlm", lambda m: dig(m, "model.exact_match")),
    "cad_vlm.baseline_exact_match": ("eval_cad_vlm", lambda m: dig(m, "nn_retrieval.exact_match")),
}


def metrics_files(params: dict) -> dict[str, Path]:
    """{stage: its metrics.json} with each stage's ``report_dir`` from the params file (or the default)."""
    return {stage: Path((params.get(stage) or {}).get("report_dir", default)) / "metrics.json"
            for stage, default in SOURCES.items()}


def summarize(files: dict[str, Path], digits: int = 4) -> dict[str, Any]:
    """Return ``{"summary": {group: {key: value}}}`` for every :data:`HEADLINE` name ``group.key`` (None where its
    stage has not run), and ``stages_missing``."""
    loaded = {stage: read_json(path) if path.is_file() else None for stage, path in files.items()}
    values: dict[str, Any] = {}
    for name, (stage, read) in HEADLINE.items():
        value = read(loaded[stage]) if loaded[stage] is not None else None
        values[name] = round(value, digits) if isinstance(value, float) else value
    nested: dict[str, Any] = {}
    for name, value in values.items():
        group, key = name.split(".", 1)
        nested.setdefault(group, {})[key] = value
    nested["stages_missing"] = sum(m is None for m in loaded.values())  # a number, so `dvc metrics diff` shows it
    return {"summary": nested}  # one top key: its columns never collide with another metrics file's names
