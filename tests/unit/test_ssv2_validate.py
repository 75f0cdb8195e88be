"""lib.ssv2.validate on small hand-built manifests and quarantine lists."""
from __future__ import annotations

import csv
from pathlib import Path

import pandas as pd
import pytest
from PIL import Image

from lib.config import ConfigError
from lib.ssv2.validate import (
    ExposureBands,
    TrainerSchedule,
    ValidateSSv2Config,
    check_thresholds,
    compute_metrics,
    dvc_metrics,
    exposure,
    exposure_band,
    schedule_from_section,
)
from lib.ssv2.validate_report import PLOT_FILES, render_report, write_plots

REFERENCE_TSV = Path(__file__).resolve().parents[2] / "lib" / "ssv2" / "reference" / "templates.tsv"

# (template, bracketed template, placeholders) of three real classes
UP = ("Moving something up", "Moving [something] up", ["a cup"])
DOWN = ("Moving something down", "Moving [something] down", ["a pen"])
COVER = ("Covering something with something", "Covering [something] with [something]", ["a cup", "a towel"])


def real_counts() -> dict[str, int]:
    """Read the real per-class video counts straight from the reference TSV (independent of lib)."""
    with REFERENCE_TSV.open() as fh:
        return {r["template"]: int(r["videos_all_splits"]) for r in csv.DictReader(fh, delimiter="\t")}


def real_index() -> dict[str, int]:
    return {t: i for i, t in enumerate(sorted(real_counts()))}


def row(vid: str, split: str, cls: tuple | None, *, label: str | None = None, class_index: int | None = None,
        width: int = 320, duration: float = 3.0, fps: float = 12.0) -> dict:
    """One manifest row as ingest_ssv2 writes it; ``cls=None`` makes a test (unlabelled) row."""
    if cls is None:
        template = template_raw = text = None
        placeholders: list[str] = []
        index = -1
    else:
        template, template_raw, placeholders = cls
        filled = template_raw
        for p in placeholders:
            filled = filled.replace("[something]", p, 1)
        text = filled[0].lower() + filled[1:]
        index = real_index()[template]
    return {"id": vid, "split": split, "label": label if label is not None else text, "template": template,
            "template_raw": template_raw, "class_index": index if class_index is None else class_index,
            "placeholders": placeholders, "source_path": f"20bn-something-something-v2/{vid}.webm",
            "path": f"videos/{vid}.webm", "frames": int(duration * fps), "fps": fps, "width": width, "height": 240,
            "probe_frames": int(duration * fps), "probe_fps": fps, "probe_width": width, "probe_height": 240,
            "probe_duration_s": duration, "probe_declared_duration_s": duration, "probe_codec": "vp9",
            "probe_bytes": 1000}


def manifest_of(rows: list[dict]) -> pd.DataFrame:
    return pd.DataFrame(rows)


def balanced_manifest() -> pd.DataFrame:
    """12 videos: UP 5 (4 train, 1 val), DOWN 3 (2 train, 1 val), COVER 2 (2 train), 2 test."""
    rows = [row(str(i), "train", UP, duration=2.0 + i / 10) for i in range(1, 5)]
    rows += [row("5", "validation", UP, width=427)]
    rows += [row("6", "train", DOWN), row("7", "train", DOWN), row("8", "validation", DOWN, duration=5.5)]
    rows += [row("9", "train", COVER), row("10", "train", COVER, width=427)]
    rows += [row("11", "test", None), row("12", "test", None, duration=4.0)]
    return manifest_of(rows)


def q(vid: str, reason: str, detail: str = "", split: str = "train") -> dict:
    return {"id": vid, "path": f"20bn-something-something-v2/{vid}.webm", "reason": reason, "detail": detail,
            "split": split}


CFG = ValidateSSv2Config()
TRAINERS = {"train_apt": TrainerSchedule(steps=300, batch_size=4), "train_video_vae": None}


def metrics_of(manifest, quarantine=(), trainers=None, cfg=CFG):
    return compute_metrics(manifest, list(quarantine), TRAINERS if trainers is None else trainers, cfg,
                           source={"root": "data/raw/x", "ingest_out": "data/interim/ssv2", "mode": "reencode"})


# ------------------------------------------------------------------------------------------ counts


def test_counts_per_split_and_totals():
    m = metrics_of(balanced_manifest(), [q("99", "missing_video")])
    assert m["splits"] == {"train": 8, "validation": 2, "test": 2}
    assert m["totals"] == {"videos": 12, "quarantined": 1, "items": 13}
    assert m["classes"]["seen"] == 3
    assert m["classes"]["labelled_videos"] == 10


def test_per_class_expected_follows_real_frequency():
    m = metrics_of(balanced_manifest())
    real = real_counts()
    present = [UP[0], DOWN[0], COVER[0]]
    ours = {UP[0]: 5, DOWN[0]: 3, COVER[0]: 2}
    total_real = sum(real[t] for t in present)
    rows = {r["template"]: r for r in m["classes"]["per_class"]}
    assert set(rows) == set(present)
    deviations = {}
    for t in present:
        expected = real[t] / total_real * 10
        assert rows[t]["videos"] == ours[t]
        assert rows[t]["real_videos"] == real[t]
        assert rows[t]["expected"] == pytest.approx(expected)
        assert rows[t]["deviation"] == pytest.approx(ours[t] - expected)
        assert rows[t]["class_index"] == real_index()[t]
        deviations[t] = abs(ours[t] - expected)
    assert rows[UP[0]]["train"] == 4 and rows[UP[0]]["validation"] == 1
    worst = max(deviations, key=deviations.get)
    assert m["classes"]["max_abs_deviation"] == pytest.approx(deviations[worst])
    assert m["classes"]["max_abs_deviation_class"] == worst
    assert m["classes"]["min_videos"] == 2 and m["classes"]["min_videos_class"] == COVER[0]


def test_quarantine_fraction_reasons_missing_and_duplicates():
    quarantine = [q("90", "zero_bytes"), q("91", "truncated", "stops at frame 3"), q("92", "missing_video"),
                  q("93", "missing_label", split=""), q("94", "duplicate_id"), q("94", "duplicate_id"),
                  q("95", "wrong_size")]
    m = metrics_of(balanced_manifest(), quarantine)
    assert m["quarantine"]["count"] == 7
    assert m["quarantine"]["fraction"] == pytest.approx(7 / 19)
    assert m["quarantine"]["by_reason"] == {"duplicate_id": 2, "missing_label": 1, "missing_video": 1,
                                            "truncated": 1, "wrong_size": 1, "zero_bytes": 1}
    assert m["decode_failures"]["count"] == 2
    assert m["missing"] == {"missing_video": 1, "missing_label": 1, "count": 2, "fraction": pytest.approx(2 / 19)}
    assert m["duplicates"]["ids"] == 1 and m["duplicates"]["quarantined_entries"] == 2
    # every reason shows up in the examples
    assert {e["reason"] for e in m["quarantine"]["examples"]} == set(m["quarantine"]["by_reason"])


def test_duplicate_ids_inside_the_manifest_are_counted():
    man = manifest_of([row("1", "train", UP), row("1", "train", UP), row("2", "train", UP)])
    assert metrics_of(man)["duplicates"]["ids"] == 1


def test_durations_fps_resolutions():
    m = metrics_of(balanced_manifest())
    assert m["durations"]["min_s"] == pytest.approx(2.1)
    assert m["durations"]["max_s"] == pytest.approx(5.5)
    assert m["durations"]["by_split"]["test"]["max_s"] == pytest.approx(4.0)
    assert m["fps"]["source"] == [12.0]
    assert m["resolutions"] == {"320x240": 10, "427x240": 2}


def test_empty_manifest_does_not_crash():
    man = pd.DataFrame(columns=list(row("1", "train", UP)))
    m = metrics_of(man, [q("1", "zero_bytes")])
    assert m["totals"]["videos"] == 0 and m["quarantine"]["fraction"] == 1.0
    assert m["exposure"]["train_apt"]["band"] == "no train videos"
    msgs = check_thresholds(m, CFG)
    assert any("validate_ssv2.min_videos=10" in s for s in msgs)
    assert any("validate_ssv2.min_videos_per_class" in s for s in msgs)


# ------------------------------------------------------------------------------------------ labels


def test_consistent_labels_have_no_mismatch():
    m = metrics_of(balanced_manifest())
    assert m["labels"]["checked"] == 10
    assert m["labels"]["mismatches"] == 0


def test_label_text_mismatch_is_counted_case_and_space_insensitively():
    rows = [row("1", "train", UP, label="MOVING  a cup   up"),  # same text: case and spaces differ
            row("2", "train", UP, label="moving a plate up"),  # wrong object
            row("3", "train", DOWN, class_index=real_index()[UP[0]])]  # class index of another class
    m = metrics_of(manifest_of(rows))
    assert m["labels"]["label_text"] == 1
    assert m["labels"]["class_index"] == 1
    assert m["labels"]["mismatches"] == 2
    assert [e["id"] for e in m["labels"]["examples"]] == ["2", "3"]


def test_placeholder_count_mismatch_is_a_label_mismatch():
    r = row("1", "train", COVER)
    r["placeholders"] = ["a cup"]
    m = metrics_of(manifest_of([r]))
    assert m["labels"]["label_text"] == 1 and m["labels"]["mismatches"] == 1


# ------------------------------------------------------------------------------------------ exposure


@pytest.mark.parametrize(("views", "band"), [(0.5, "conservative"), (9.99, "conservative"), (10, "moderate"),
                                             (10.1, "moderate"), (50, "moderate"), (50.01, "high"), (75, "high"),
                                             (100, "high"), (101, "risky")])
def test_exposure_band_boundaries(views, band):
    assert exposure_band(views, ExposureBands()) == band


@pytest.mark.parametrize(("steps", "band"), [(20, "moderate"), (101, "high"), (100, "moderate"),
                                             (150, "high"), (202, "risky"), (19, "conservative")])
def test_exposure_from_schedule(steps, band):
    # 8 train videos, batch 2 x accum 2 = 4 samples per step -> views = steps / 2
    row_ = exposure(TrainerSchedule(steps=steps, batch_size=2, grad_accum=2), 8, ExposureBands())
    assert row_["views_per_video"] == pytest.approx(steps * 4 / 8)
    assert row_["samples"] == steps * 4
    assert row_["band"] == band


def test_exposure_in_metrics_and_not_configured():
    m = metrics_of(balanced_manifest())  # 8 train videos; train_apt: 300 x 4 / 8 = 150
    assert m["exposure"]["train_apt"]["views_per_video"] == pytest.approx(150.0)
    assert m["exposure"]["train_apt"]["band"] == "risky"
    assert m["exposure"]["train_video_vae"] == {"configured": False, "views_per_video": None,
                                                "band": "not configured"}
    flat = dvc_metrics(m, [])
    assert flat["exposure"] == {"train_apt": pytest.approx(150.0)}


def test_schedule_from_section_reads_only_schedule_keys():
    sched = schedule_from_section({"steps": 10, "batch_size": 2, "lr": 1e-4, "model": {"dim": 8}}, "p: train_apt")
    assert sched == TrainerSchedule(steps=10, batch_size=2, grad_accum=1)
    assert schedule_from_section(None, "p: train_apt") is None
    with pytest.raises(ConfigError, match=r"train_apt\.steps"):
        schedule_from_section({"batch_size": 2}, "p: train_apt")


# ------------------------------------------------------------------------------------------ thresholds


def test_all_thresholds_pass_on_clean_data():
    cfg = ValidateSSv2Config(min_videos_per_class=2)
    assert check_thresholds(metrics_of(balanced_manifest(), cfg=cfg), cfg) == []


def test_min_videos_per_class_message_names_key_and_shortfall():
    msgs = check_thresholds(metrics_of(balanced_manifest()), ValidateSSv2Config(min_videos_per_class=3))
    assert msgs == ["class 'Covering something with something' has 2 videos, 1 below "
                    "validate_ssv2.min_videos_per_class=3"]


def test_every_threshold_failure_names_its_key_value_and_shortfall():
    quarantine = [q("90", "zero_bytes"), q("91", "missing_video"), q("92", "duplicate_id"), q("92", "duplicate_id")]
    rows = [row("1", "train", UP), row("2", "train", UP, label="moving a plate up")]
    cfg = ValidateSSv2Config(min_videos=5, max_quarantine_fraction=0.5, max_missing_fraction=0.1,
                             min_videos_per_class=4)
    msgs = check_thresholds(metrics_of(manifest_of(rows), quarantine, cfg=cfg), cfg)
    text = "\n".join(msgs)
    assert len(msgs) == 7, text
    assert "the validation split has 0 videos, 1 below validate_ssv2.min_validation_videos=1" in text
    assert "manifest has 2 good videos, 3 below validate_ssv2.min_videos=5" in text
    # 4 of 6 items quarantined: 0.6667, 0.1667 above 0.5
    assert ("quarantined fraction is 0.6667 (4 of 6 items), "
            "0.1667 above validate_ssv2.max_quarantine_fraction=0.5") in text
    assert "0.0667 above validate_ssv2.max_missing_fraction=0.1" in text
    assert "1 duplicate ids, 1 above validate_ssv2.max_duplicate_ids=0" in text
    assert "1 above validate_ssv2.max_label_mismatches=0" in text
    assert "class 'Moving something up' has 2 videos, 2 below validate_ssv2.min_videos_per_class=4" in text


@pytest.mark.parametrize("missing", ["train", "validation"])
def test_a_manifest_without_a_trainer_split_fails(missing):
    man = balanced_manifest()
    man = man[man["split"] != missing]
    cfg = ValidateSSv2Config(min_videos=1, min_videos_per_class=1)
    msgs = check_thresholds(metrics_of(man, cfg=cfg), cfg)
    assert msgs == [f"the {missing} split has 0 videos, 1 below validate_ssv2.min_{missing}_videos=1; the trainers "
                    f"{'draw batches from' if missing == 'train' else 'validate on'} it (check the source's "
                    f"{missing} label file, or what was quarantined)"]
    cfg0 = ValidateSSv2Config(min_videos=1, min_videos_per_class=1, **{f"min_{missing}_videos": 0})
    assert check_thresholds(metrics_of(man, cfg=cfg0), cfg0) == []


# ------------------------------------------------------------------------------------------ plots, report


def test_plots_are_png(tmp_path):
    man = balanced_manifest()
    paths = write_plots(man, metrics_of(man, [q("90", "truncated")]), tmp_path / "r")
    assert [p.name for p in paths] == list(PLOT_FILES)
    for p in paths:
        assert p.stat().st_size > 0
        with Image.open(p) as im:
            assert im.format == "PNG" and im.size[0] > 100 and im.size[1] > 100
    assert not [p for p in (tmp_path / "r").iterdir() if p.name.startswith(".")]  # no temp files left


def test_quarantine_plot_written_when_nothing_quarantined(tmp_path):
    man = balanced_manifest()
    paths = write_plots(man, metrics_of(man, []), tmp_path)
    with Image.open(tmp_path / "quarantine.png") as im:
        assert im.format == "PNG"
    assert len(paths) == 4


def test_report_tables_and_pass_status(tmp_path):
    man = balanced_manifest()
    cfg = ValidateSSv2Config(report_dir=str(tmp_path), min_videos_per_class=2, max_quarantine_fraction=0.1)
    m = metrics_of(man, [q("90", "truncated", "stops | early")], cfg=cfg)
    plots = write_plots(man, m, tmp_path)
    text = render_report(m, check_thresholds(m, cfg), plots, cfg)
    assert "FAILED" not in text and "**Status: passed**" in text
    assert "data/raw/x" in text and "**12 good videos**" in text
    assert "| split | videos |" in text and "| train | 8 |" in text
    assert "| real SSv2 videos |" in text
    assert f"| {real_index()[UP[0]]} | Moving something up | 4 | 1 | 5 | {real_counts()[UP[0]]} |" in text
    assert "| `truncated` | decoding stops early" in text
    assert "stops \\| early" in text  # pipes escaped inside table cells
    assert "| train_apt | 300 | 4 | 1 | 1200 | 8 | 150 | risky |" in text
    assert "| train_video_vae | – | – | – | – | – | – | not configured |" in text
    for name in PLOT_FILES:
        assert f"]({name})" in text
    assert "| `validate_ssv2.min_videos_per_class` | 2 | 2 (Covering something with something) | pass |" in text


def test_report_marks_failure(tmp_path):
    man = balanced_manifest()
    cfg = ValidateSSv2Config(report_dir=str(tmp_path), min_videos_per_class=3)
    m = metrics_of(man, cfg=cfg)
    failures = check_thresholds(m, cfg)
    text = render_report(m, failures, [], cfg)
    assert text.splitlines()[2].startswith("**Status: FAILED**")
    assert failures[0] in text
    assert "| `validate_ssv2.min_videos_per_class` | 3 | 2 (Covering something with something) | **FAIL** |" in text
    assert "Nothing was quarantined." in text


def test_dvc_metrics_is_shallow_and_numeric():
    m = metrics_of(balanced_manifest(), [q("90", "zero_bytes")])
    flat = dvc_metrics(m, ["x"])

    def depth(d):
        return 1 + max((depth(v) for v in d.values() if isinstance(v, dict)), default=0)

    assert depth(flat) <= 2
    assert flat["thresholds_failed"] == 1 and flat["videos"] == 12
    assert flat["quarantine"]["zero_bytes"] == 1 and flat["quarantine"]["missing_video"] == 0

    def leaves(d):
        for v in d.values():
            yield from leaves(v) if isinstance(v, dict) else [v]

    assert all(isinstance(v, (int, float)) or v is None for v in leaves(flat))


@pytest.mark.parametrize("bad", [{"max_quarantine_fraction": 1.5}, {"min_videos": -1},
                                 {"exposure_bands": {"conservative": 60, "moderate": 50}}])
def test_config_rejects_bad_values(bad):
    from lib.config import from_dict
    with pytest.raises(ConfigError):
        from_dict(ValidateSSv2Config, bad, "params.yaml: validate_ssv2")
