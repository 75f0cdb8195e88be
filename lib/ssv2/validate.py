"""SSv2 validation: measure an ingested dataset, check it against thresholds, plot and report it.

Everything here works on what ``ingest_ssv2`` wrote (the manifest DataFrame, the quarantine list,
the summary dict) and on config dataclasses; nothing reads ``params.yaml`` or argv. Plots and the
markdown page live in :mod:`lib.ssv2.validate_report`. The stage ``stages/validate_ssv2.py`` wires
these together:

    metrics = compute_metrics(manifest, quarantine, trainers, cfg, source=...)
    failures = check_thresholds(metrics, cfg)
    plots = write_plots(manifest, metrics, cfg.report_dir)
    report = render_report(metrics, failures, plots, cfg)

Definitions used throughout (also stated in the report):

- *items* = good videos (manifest rows) + quarantined entries; every fraction below is over items.
- *labelled* rows are those with a template (train and validation; test has none).
- *expected* count of a class = its share of the real SSv2 videos among the classes present here
  (``reference_classes()``) x the number of our labelled videos of those classes.
- *exposure* of a trainer = steps x batch_size x grad_accum / number of train videos, i.e. how many
  times each train video is seen. Bands (``exposure_bands``):
  ``conservative`` v < conservative; ``moderate`` conservative <= v <= moderate;
  ``high`` moderate < v <= risky (the gap between "moderate" and "risky"); ``risky`` v > risky.
"""
from __future__ import annotations

from collections import Counter
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Annotated, Any

import pandas as pd
from annotated_types import Ge, Gt, Interval

from lib.config import AllowNonFinite, Checked, from_dict
from lib.io import DataError, read_json
from lib.quarantine import REASONS
from lib.ssv2.labels import fill_template, normalize_template, reference_classes
from lib.thresholds import ThresholdResult

SPLITS = ("train", "validation", "test")
LABELLED_SPLITS = ("train", "validation")
DECODE_REASONS = ("zero_bytes", "not_video", "undecodable", "truncated")
MISSING_REASONS = ("missing_video", "missing_label")
SCHEDULE_KEYS = ("steps", "batch_size", "grad_accum")
NOT_CONFIGURED = "not configured"
NO_TRAIN_VIDEOS = "no train videos"
MAX_EXAMPLES = 20
SECTION = "validate_ssv2"



# ---------------------------------------------------------------------------------------------
# config


@dataclass(frozen=True)
class ExposureBands(Checked):
    """Upper bounds of the exposure bands, in views per train video (see the module docstring). ``.inf`` for
    ``moderate`` or ``risky`` means no band above it (e.g. ``risky: .inf``: nothing is called risky)."""

    conservative: Annotated[float, Gt(0)] = 10
    moderate: Annotated[float, AllowNonFinite] = 50
    risky: Annotated[float, AllowNonFinite] = 100

    def __post_init__(self) -> None:
        super().__post_init__()
        if not 0 < self.conservative <= self.moderate <= self.risky:  # also rejects .nan
            raise ValueError("exposure_bands must satisfy 0 < conservative <= moderate <= risky, got "
                             f"{self.conservative}, {self.moderate}, {self.risky}")


@dataclass(frozen=True)
class TrainerSchedule(Checked):
    """The part of a trainer's params section that fixes how many samples it draws."""

    steps: Annotated[int, Ge(1)]
    batch_size: Annotated[int, Ge(1)]
    grad_accum: Annotated[int, Ge(1)] = 1

    @property
    def samples(self) -> int:
        """Return the number of samples drawn over the whole run: steps x batch_size x grad_accum."""
        return self.steps * self.batch_size * self.grad_accum


@dataclass(frozen=True)
class ValidateSSv2Config(Checked):
    """``validate_ssv2`` params: where the report goes and the thresholds the dataset must meet."""

    report_dir: str = "reports/validate_ssv2"
    max_quarantine_fraction: Annotated[float, Interval(ge=0, le=1)] = 0.05  # quarantined / (good + quarantined)
    # (missing_video + missing_label) / (good + quarantined)
    max_missing_fraction: Annotated[float, Interval(ge=0, le=1)] = 0.05
    max_duplicate_ids: Annotated[int, Ge(0)] = 0  # distinct ids listed more than once
    max_label_mismatches: Annotated[int, Ge(0)] = 0  # labelled rows whose label, template or class index disagree
    min_videos_per_class: Annotated[int, Ge(0)] = 3  # labelled (train + validation) videos of every class present
    min_videos: Annotated[int, Ge(0)] = 10  # good videos in the manifest
    # the trainers draw batches from train and validate on validation; a manifest without either fails here
    # instead of as a traceback in the middle of a training run
    min_train_videos: Annotated[int, Ge(0)] = 1
    min_validation_videos: Annotated[int, Ge(0)] = 1
    exposure_trainers: list[str] = field(default_factory=lambda: ["train_apt", "train_video_vae"])
    exposure_bands: ExposureBands = field(default_factory=ExposureBands)


def schedule_from_section(section: Any, where: str) -> TrainerSchedule | None:
    """Return the TrainerSchedule in a trainer's params section, or None when the section is absent/empty.

    Only ``steps``, ``batch_size`` and ``grad_accum`` are read; the trainer's other keys are its own.
    """
    if section is None:
        return None
    if not isinstance(section, Mapping):
        return from_dict(TrainerSchedule, section, where)  # raises, naming the section
    return from_dict(TrainerSchedule, {k: section[k] for k in SCHEDULE_KEYS if k in section}, where)


def load_ingest_outputs(out: str | Path) -> tuple[pd.DataFrame, list[dict], dict]:
    """Return (manifest, quarantine list, summary) read from an ``ingest_ssv2`` output folder."""
    from lib.ssv2.ingest import MANIFEST, QUARANTINE, SUMMARY  # lazy: ingest pulls in the video codecs

    out = Path(out)
    for name in (MANIFEST, QUARANTINE, SUMMARY):
        if not (out / name).is_file():
            raise FileNotFoundError(f"{out / name}: ingest output missing; run `dvc repro ingest_ssv2` "
                                    f"(or check ingest_ssv2.out in the params file)")
    quarantine = read_json(out / QUARANTINE)
    if not isinstance(quarantine, list):
        raise DataError(f"{out / QUARANTINE}: expected a JSON list of entries, got {type(quarantine).__name__}")
    summary = read_json(out / SUMMARY)
    return pd.read_parquet(out / MANIFEST), quarantine, summary


# ---------------------------------------------------------------------------------------------
# metrics


def compute_metrics(manifest: pd.DataFrame, quarantine: list[dict], trainers: Mapping[str, TrainerSchedule | None],
                    cfg: ValidateSSv2Config, *, source: Mapping[str, Any] | None = None) -> dict:
    """Return the nested metrics dict of an ingested dataset (plain JSON types only).

    ``trainers`` maps a trainer name to its schedule, or None when its params section is absent;
    ``source`` (e.g. root, ingest folder, mode) is copied into ``metrics["source"]`` for the report.
    Keys: source, totals, splits, classes (per_class list inside), decode_failures, quarantine,
    missing, duplicates, labels, durations, fps, resolutions, exposure.
    """
    n_good = int(len(manifest))
    n_quarantined = len(quarantine)
    items = n_good + n_quarantined
    reasons = Counter(str(q.get("reason", "")) for q in quarantine)
    splits = manifest["split"].value_counts() if n_good else pd.Series(dtype=int)
    train_videos = int(splits.get("train", 0))
    missing = sum(reasons[r] for r in MISSING_REASONS)
    return {
        "source": dict(source or {}),
        "totals": {"videos": n_good, "quarantined": n_quarantined, "items": items},
        "splits": {s: int(splits.get(s, 0)) for s in [*SPLITS, *sorted(set(splits.index) - set(SPLITS))]},
        "classes": _class_metrics(manifest),
        "decode_failures": {"count": sum(reasons[r] for r in DECODE_REASONS),
                            "by_reason": {r: reasons[r] for r in DECODE_REASONS}},
        "quarantine": {"count": n_quarantined, "fraction": fraction(n_quarantined, items),
                       "by_reason": dict(sorted(reasons.items())), "examples": _quarantine_examples(quarantine)},
        "missing": {**{r: reasons[r] for r in MISSING_REASONS}, "count": missing,
                    "fraction": fraction(missing, items)},
        "duplicates": _duplicate_metrics(manifest, quarantine),
        "labels": _label_metrics(manifest),
        "durations": _duration_metrics(manifest),
        "fps": {"source": _sorted_floats(manifest, "probe_fps"), "copy": _sorted_floats(manifest, "fps")},
        "resolutions": _resolutions(manifest),
        "exposure": {name: exposure(sched, train_videos, cfg.exposure_bands) for name, sched in trainers.items()},
    }


def exposure_band(views_per_video: float, bands: ExposureBands) -> str:
    """Return the band of an exposure: conservative (< c), moderate (c..m], high (m..r], risky (> r)."""
    if views_per_video < bands.conservative:
        return "conservative"
    if views_per_video <= bands.moderate:
        return "moderate"
    if views_per_video <= bands.risky:
        return "high"
    return "risky"


def exposure(schedule: TrainerSchedule | None, train_videos: int, bands: ExposureBands) -> dict:
    """Return one trainer's exposure row: its schedule, samples, views per train video and band.

    An absent schedule gives ``band = "not configured"`` and no numbers; no train videos gives
    ``band = "no train videos"``.
    """
    if schedule is None:
        return {"configured": False, "views_per_video": None, "band": NOT_CONFIGURED}
    row: dict[str, Any] = {"configured": True, "steps": schedule.steps, "batch_size": schedule.batch_size,
                           "grad_accum": schedule.grad_accum, "samples": schedule.samples,
                           "train_videos": train_videos}
    if train_videos == 0:
        return {**row, "views_per_video": None, "band": NO_TRAIN_VIDEOS}
    views = schedule.samples / train_videos
    return {**row, "views_per_video": views, "band": exposure_band(views, bands)}


def fraction(part: int, whole: int) -> float:
    return part / whole if whole else 0.0


def _labelled(manifest: pd.DataFrame) -> pd.DataFrame:
    if not len(manifest):
        return manifest
    return manifest[manifest["split"].isin(LABELLED_SPLITS) & manifest["template"].notna()]


def _class_metrics(manifest: pd.DataFrame) -> dict:
    ref = {c.template: c for c in reference_classes()}
    labelled = _labelled(manifest)
    counts = Counter(labelled["template"]) if len(labelled) else Counter()
    by_split = {s: Counter(labelled.loc[labelled["split"] == s, "template"]) if len(labelled) else Counter()
                for s in LABELLED_SPLITS}
    index = {}
    if len(labelled):
        index = labelled.groupby("template")["class_index"].agg(lambda s: int(s.mode().iloc[0])).to_dict()
    present_ref = [t for t in counts if t in ref]
    ref_total = sum(ref[t].videos for t in present_ref)
    compared = sum(counts[t] for t in present_ref)
    per_class = []
    for t in counts:
        row: dict[str, Any] = {"template": t, "class_index": index.get(t, -1), "videos": counts[t],
                               **{s: by_split[s][t] for s in LABELLED_SPLITS}}
        if t in ref and ref_total:
            share = ref[t].videos / ref_total
            expected = share * compared
            row.update(real_videos=ref[t].videos, real_share=share, expected=expected,
                       deviation=counts[t] - expected)
        else:
            row.update(real_videos=None, real_share=None, expected=None, deviation=None)
        per_class.append(row)
    per_class.sort(key=lambda r: (r["class_index"], r["template"]))
    with_dev = [r for r in per_class if r["deviation"] is not None]
    worst = max(with_dev, key=lambda r: abs(r["deviation"]), default=None)
    smallest = min(per_class, key=lambda r: (r["videos"], r["class_index"]), default=None)
    return {
        "reference_classes": len(ref),
        "seen": len(counts),
        "labelled_videos": int(len(labelled)),
        "compared_videos": compared,  # labelled videos of classes found in the reference list
        "not_in_reference": sorted(t for t in counts if t not in ref),
        "min_videos": smallest["videos"] if smallest else None,
        "min_videos_class": smallest["template"] if smallest else None,
        "max_abs_deviation": abs(worst["deviation"]) if worst else None,
        "max_abs_deviation_class": worst["template"] if worst else None,
        "per_class": per_class,
    }


def _quarantine_examples(quarantine: list[dict]) -> list[dict]:
    # Round-robin over reasons so a flood of one reason does not hide the others.
    by_reason: dict[str, list[dict]] = {}
    for q in quarantine:
        by_reason.setdefault(str(q.get("reason", "")), []).append(q)
    out: list[dict] = []
    depth = 0
    while len(out) < MAX_EXAMPLES and any(depth < len(v) for v in by_reason.values()):
        for reason in sorted(by_reason):
            if depth < len(by_reason[reason]) and len(out) < MAX_EXAMPLES:
                q = by_reason[reason][depth]
                out.append({k: str(q.get(k, "") or "") for k in ("id", "split", "reason", "path", "detail")})
        depth += 1
    return out


def _duplicate_metrics(manifest: pd.DataFrame, quarantine: list[dict]) -> dict:
    quarantined = [str(q.get("id", "")) for q in quarantine if q.get("reason") == "duplicate_id"]
    in_manifest = manifest["id"].value_counts() if len(manifest) else pd.Series(dtype=int)
    in_manifest = in_manifest[in_manifest > 1]
    ids = set(quarantined) | {str(i) for i in in_manifest.index}
    return {"ids": len(ids), "quarantined_entries": len(quarantined), "manifest_rows": int(in_manifest.sum()),
            "examples": sorted(ids)[:MAX_EXAMPLES]}


def _label_metrics(manifest: pd.DataFrame) -> dict:
    """Count labelled rows whose label text, bracketed template or class index disagree."""
    ref_index = {c.template: c.index for c in reference_classes()}
    labelled = _labelled(manifest)
    counts = {"label_text": 0, "template_raw": 0, "class_index": 0}
    bad_rows = 0
    examples: list[dict] = []
    for row in labelled.itertuples(index=False):
        problems = []
        raw = row.placeholders
        placeholders = [str(p) for p in raw] if raw is not None and not isinstance(raw, (str, float)) else []
        if not isinstance(row.template_raw, str):
            problems.append(("template_raw", "no bracketed template"))
        else:
            if normalize_template(row.template_raw) != row.template:
                problems.append(("template_raw", f"{row.template_raw!r} does not normalise to {row.template!r}"))
            try:
                filled = fill_template(row.template_raw, placeholders)
            except ValueError as err:
                problems.append(("label_text", str(err)))
            else:
                if not isinstance(row.label, str) or _norm_text(filled) != _norm_text(row.label):
                    problems.append(("label_text", f"label {row.label!r} != filled template {filled!r}"))
        if row.template in ref_index and int(row.class_index) != ref_index[row.template]:
            problems.append(("class_index", f"class_index {int(row.class_index)} but {row.template!r} is "
                                            f"class {ref_index[row.template]} in labels.json"))
        if problems:
            bad_rows += 1
            for kind in {k for k, _ in problems}:
                counts[kind] += 1
            if len(examples) < MAX_EXAMPLES:
                examples.append({"id": str(row.id), "detail": "; ".join(d for _, d in problems)})
    return {"checked": int(len(labelled)), "mismatches": bad_rows, **counts, "examples": examples}


def _norm_text(text: str) -> str:
    return " ".join(text.split()).casefold()


def _stats(values: pd.Series) -> dict:
    values = values.dropna().astype(float)
    if not len(values):
        return {"count": 0, "min_s": None, "mean_s": None, "max_s": None}
    return {"count": int(len(values)), "min_s": float(values.min()), "mean_s": float(values.mean()),
            "max_s": float(values.max())}


def _duration_metrics(manifest: pd.DataFrame) -> dict:
    if not len(manifest):
        return {**_stats(pd.Series(dtype=float)), "by_split": {}}
    by_split = {s: _stats(g["probe_duration_s"]) for s, g in manifest.groupby("split", sort=False)}
    order = [s for s in SPLITS if s in by_split] + sorted(set(by_split) - set(SPLITS))
    return {**_stats(manifest["probe_duration_s"]), "by_split": {s: by_split[s] for s in order}}


def _sorted_floats(manifest: pd.DataFrame, column: str) -> list[float]:
    if not len(manifest):
        return []
    return sorted({round(float(v), 3) for v in manifest[column].dropna()})


def _resolutions(manifest: pd.DataFrame) -> dict[str, int]:
    if not len(manifest):
        return {}
    sizes = Counter(zip(manifest["probe_width"].astype(int), manifest["probe_height"].astype(int), strict=False))
    return {f"{w}x{h}": n for (w, h), n in sorted(sizes.items(), key=lambda kv: (-kv[1], kv[0]))}


def dvc_metrics(metrics: dict, failures: list[str]) -> dict:
    """Return the numbers of ``metrics`` for ``metrics.json``: at most two levels, no per-class lists.

    Every quarantine reason code appears (0 when absent) so ``dvc exp show`` columns stay stable;
    exposure gives views per train video for configured trainers only.
    """
    cls = metrics["classes"]
    reasons = {r: 0 for r in REASONS} | metrics["quarantine"]["by_reason"]
    return {
        "videos": metrics["totals"]["videos"],
        "quarantined": metrics["totals"]["quarantined"],
        "thresholds_failed": len(failures),
        "splits": dict(metrics["splits"]),
        "classes": {"seen": cls["seen"], "labelled_videos": cls["labelled_videos"],
                    "min_videos": cls["min_videos"], "max_abs_deviation": cls["max_abs_deviation"],
                    "not_in_reference": len(cls["not_in_reference"])},
        "quarantine": {"fraction": metrics["quarantine"]["fraction"],
                       "decode_failures": metrics["decode_failures"]["count"], **reasons},
        "missing": {"fraction": metrics["missing"]["fraction"], "count": metrics["missing"]["count"]},
        "duplicates": {"ids": metrics["duplicates"]["ids"]},
        "labels": {k: metrics["labels"][k] for k in ("checked", "mismatches", "label_text", "template_raw",
                                                      "class_index")},
        "duration_s": {k[:-2]: metrics["durations"][k] for k in ("min_s", "mean_s", "max_s")},
        "resolutions": len(metrics["resolutions"]),
        "exposure": {name: row["views_per_video"] for name, row in metrics["exposure"].items()
                     if row["views_per_video"] is not None},
    }


# ---------------------------------------------------------------------------------------------
# thresholds


def evaluate_thresholds(metrics: dict, cfg: ValidateSSv2Config) -> list[ThresholdResult]:
    """Return one ThresholdResult per threshold of ``cfg``, in a fixed order."""
    out = []
    videos = metrics["totals"]["videos"]
    key = f"{SECTION}.min_videos"
    out.append(ThresholdResult(key, cfg.min_videos, str(videos), () if videos >= cfg.min_videos else (
        f"manifest has {_videos(videos, 'good')}, {cfg.min_videos - videos} below {key}={cfg.min_videos}",)))

    for split in ("train", "validation"):
        key, limit = f"{SECTION}.min_{split}_videos", getattr(cfg, f"min_{split}_videos")
        n = metrics["splits"].get(split, 0)
        out.append(ThresholdResult(key, limit, str(n), () if n >= limit else (
            f"the {split} split has {_videos(n)}, {limit - n} below {key}={limit}; the trainers "
            f"{'draw batches from' if split == 'train' else 'validate on'} it (check the source's {split} "
            "label file, or what was quarantined)",)))

    items = metrics["totals"]["items"]
    for name, part, what in (("max_quarantine_fraction", metrics["quarantine"]["count"], "quarantined"),
                             ("max_missing_fraction", metrics["missing"]["count"],
                              "missing (missing_video + missing_label)")):
        key, limit = f"{SECTION}.{name}", getattr(cfg, name)
        frac = fraction(part, items)
        measured = f"{frac:.4f} ({part} of {items})"
        fail = () if frac <= limit else (
            f"{what} fraction is {frac:.4f} ({part} of {items} items), {frac - limit:.4f} above {key}={limit}",)
        out.append(ThresholdResult(key, limit, measured, fail))

    dup = metrics["duplicates"]["ids"]
    key = f"{SECTION}.max_duplicate_ids"
    out.append(ThresholdResult(key, cfg.max_duplicate_ids, str(dup), () if dup <= cfg.max_duplicate_ids else (
        f"{dup} duplicate ids, {dup - cfg.max_duplicate_ids} above {key}={cfg.max_duplicate_ids}",)))

    lab = metrics["labels"]
    key = f"{SECTION}.max_label_mismatches"
    bad = lab["mismatches"]
    out.append(ThresholdResult(key, cfg.max_label_mismatches, str(bad), () if bad <= cfg.max_label_mismatches else (
        f"{bad} labelled rows with inconsistent label/template/class index (label text {lab['label_text']}, "
        f"bracketed template {lab['template_raw']}, class index {lab['class_index']}), "
        f"{bad - cfg.max_label_mismatches} above {key}={cfg.max_label_mismatches}",)))

    key, limit = f"{SECTION}.min_videos_per_class", cfg.min_videos_per_class
    per_class = metrics["classes"]["per_class"]
    if not per_class:
        fails = (f"no labelled videos, so no class reaches {key}={limit}",) if limit > 0 else ()
        out.append(ThresholdResult(key, limit, "no labelled classes", fails))
    else:
        small = sorted((r for r in per_class if r["videos"] < limit), key=lambda r: (r["videos"], r["template"]))
        fails = tuple(f"class {r['template']!r} has {_videos(r['videos'])}, {limit - r['videos']} below {key}={limit}"
                      for r in small)
        cls = metrics["classes"]
        out.append(ThresholdResult(key, limit, f"{cls['min_videos']} ({cls['min_videos_class']})", fails))
    return out


def _videos(n: int, adjective: str = "") -> str:
    words = [str(n), adjective, "video" if n == 1 else "videos"]
    return " ".join(w for w in words if w)


def check_thresholds(metrics: dict, cfg: ValidateSSv2Config) -> list[str]:
    """Return one message per failed threshold (empty when all pass), naming its params key and shortfall."""
    return [msg for result in evaluate_thresholds(metrics, cfg) for msg in result.failures]
