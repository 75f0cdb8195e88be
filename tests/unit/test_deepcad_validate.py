"""lib.deepcad.validate on a tiny real render (bad_root at 64 px) and its conversations.

Every expected number is computed here from the files (split file, quarantine.json, models.parquet,
the PNGs), not taken from lib.
"""
from __future__ import annotations

import io
import json
import shutil
from collections import Counter
from dataclasses import replace
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from PIL import Image

from lib.archive import read_bytes
from lib.deepcad.conversations import CADConversationsConfig, build_conversations
from lib.deepcad.render_models import RenderDeepCADConfig, merge_shards, read_models, run_shard
from lib.deepcad.validate import (
    PLOT_FILES,
    ValidateDeepCADConfig,
    check_thresholds,
    compute_metrics,
    dvc_metrics,
    failures,
    image_stats,
    render_report,
    write_plots,
)
from tests.helpers.archives import members, rewrite_member, save_image
from tests.helpers.deepcad_data import bad_root

SIZE = 64
# bad_root puts everything in train; move the square to validation and the cylinder copy to test, so every
# split has a model, train and validation answers differ in length, and test (not in the default
# conversation splits) has images but no conversations.
SPLIT_OF = {"0000/00000001": "train", "0000/00000002": "validation", "0001/00001003": "test"}
LOOSE = ValidateDeepCADConfig(min_models=0, max_quarantine_fraction=1.0, max_unreadable_images=10**6,
                              max_blank_images=10**6, max_dropped_fraction=1.0)


@pytest.fixture(scope="module")
def rendered(tmp_path_factory):
    """(out dir, render cfg, models, quarantine list) of a real render of bad_root; never modified."""
    base = tmp_path_factory.mktemp("deepcad_validate")
    good, _ = bad_root(base / "root")
    assert sorted(good) == sorted(SPLIT_OF)
    split_file = base / "root/train_val_test_split.json"
    splits = json.loads(split_file.read_text())
    splits["train"] = [i for i in splits["train"] if SPLIT_OF.get(i, "train") == "train"]
    splits["validation"] = [i for i, s in SPLIT_OF.items() if s == "validation"]
    splits["test"] = [i for i, s in SPLIT_OF.items() if s == "test"]
    split_file.write_text(json.dumps(splits))
    cfg = RenderDeepCADConfig(out=str(base / "out"), shards=1, image_size=SIZE)
    run_shard(base / "root", cfg, 0, progress=False)
    merge_shards(base / "root", cfg)
    quarantine = json.loads((base / "out/quarantine.json").read_text())
    return base / "out", cfg, read_models(base / "out"), quarantine


def image_names(models: pd.DataFrame, views: list[str]) -> list[str]:
    return [n for v in views for n in models[f"image_{v}"]]


def measure(out: Path, cfg: RenderDeepCADConfig, models, quarantine, conv_cfg=None, vcfg=LOOSE):
    """Run the library the way stages.validate_deepcad does; return (metrics, conversations, images)."""
    conv_cfg = conv_cfg or CADConversationsConfig()
    conv = build_conversations(models, cfg.views, out, conv_cfg)
    images = image_stats(out, image_names(models, cfg.views))
    summary = {"truncated": conv.truncated, "dropped": conv.dropped}
    metrics = compute_metrics(models, cfg.views, images, quarantine, conv.by_split, summary, vcfg)
    return metrics, conv.by_split, images


@pytest.fixture
def copy(rendered, tmp_path):
    """A private copy of the render output that a test may damage."""
    out, cfg, models, quarantine = rendered
    shutil.copytree(out, tmp_path / "out")
    return tmp_path / "out", cfg, models, quarantine


def test_per_split_counts_match_the_split_file(rendered):
    out, cfg, models, quarantine = rendered
    metrics, conversations, _ = measure(out, cfg, models, quarantine)
    n_views = len(cfg.views)
    conv_splits = CADConversationsConfig().splits
    for split in ("train", "validation", "test"):
        n = sum(1 for s in SPLIT_OF.values() if s == split)
        expected = {"models": n, "images": n * n_views, "conversations": n * n_views if split in conv_splits else 0}
        assert metrics["splits"][split] == expected, split
    assert metrics["models"] == len(SPLIT_OF)
    pngs = members(out, ".png")
    assert metrics["images"] == len(pngs) == len(SPLIT_OF) * n_views
    assert metrics["conversations"] == sum(len(v) for v in conversations.values()) == 2 * n_views


def test_pristine_render_is_clean_uniform_and_sized(rendered):
    out, cfg, models, quarantine = rendered
    metrics, _, images = measure(out, cfg, models, quarantine)
    assert images["exists"].all() and images["readable"].all()
    ic = metrics["images_check"]
    assert (ic["missing"], ic["unreadable"], ic["blank"]) == (0, 0, 0)
    assert ic["resolutions"] == [f"{SIZE}x{SIZE}"] and ic["modes"] == ["RGB"] and ic["uniform"]
    n_images = len(SPLIT_OF) * len(cfg.views)
    assert metrics["in_memory_mib"] == pytest.approx(n_images * SIZE * SIZE * 3 / 2**20)
    sizes = [len(read_bytes(p)) for p in members(out, ".png")]
    assert metrics["png_bytes"] == pytest.approx({"min": min(sizes), "mean": sum(sizes) / len(sizes),
                                                  "max": max(sizes)})
    # foreground measured independently: any channel differing from pure white
    for name, fg in zip(images["image"], images["foreground"], strict=False):
        rgb = np.asarray(Image.open(io.BytesIO(read_bytes(out / name))).convert("RGB"))
        assert fg == pytest.approx((rgb != 255).any(axis=-1).mean())
        assert fg > 0.01


def test_missing_corrupt_and_blank_images_are_flagged(copy):
    out, cfg, models, quarantine = copy
    front, top, right = cfg.views
    first, second = models.iloc[0], models.iloc[1]
    missing, corrupt, white = first[f"image_{front}"], first[f"image_{top}"], second[f"image_{right}"]
    rewrite_member(out / missing, None)
    rewrite_member(out / corrupt, b"this is not a PNG at all" * 10)
    save_image(Image.new("RGB", (SIZE, SIZE), (255, 255, 255)), out / white)

    metrics, _, images = measure(out, cfg, models, quarantine)
    by_name = images.set_index("image")
    assert not by_name.loc[missing, "exists"] and not by_name.loc[missing, "readable"]
    assert by_name.loc[corrupt, "exists"] and not by_name.loc[corrupt, "readable"]
    assert by_name.loc[white, "readable"] and by_name.loc[white, "foreground"] == 0.0
    ic = metrics["images_check"]
    assert (ic["missing"], ic["unreadable"], ic["blank"]) == (1, 1, 1)
    assert ic["blank_examples"] == [white]
    # the blank image is counted for its own view only; missing / unreadable images are not "blank"
    assert {v: d["blank"] for v, d in metrics["per_view"].items()} == {front: 0, top: 0, right: 1}
    assert sum(d["blank"] for d in metrics["per_view"].values()) == ic["blank"]
    # ... nor do they pull a view's foreground down to 0
    assert metrics["per_view"][front]["min_foreground"] > 0.01 and metrics["per_view"][top]["min_foreground"] > 0.01
    assert metrics["per_view"][right]["min_foreground"] == 0.0
    assert ic["uniform"]  # the white image has the same size and mode


def test_resized_image_makes_resolutions_non_uniform(copy):
    out, cfg, models, quarantine = copy
    name = models.iloc[2][f"image_{cfg.views[0]}"]
    with Image.open(io.BytesIO(read_bytes(out / name))) as im:
        small = im.resize((32, 32))
    save_image(small, out / name)
    metrics, _, _ = measure(out, cfg, models, quarantine)
    ic = metrics["images_check"]
    assert ic["resolutions"] == ["32x32", f"{SIZE}x{SIZE}"] and not ic["uniform"]
    results = check_thresholds(metrics, LOOSE)
    assert [r[0] for r in results if not r[3]] == ["uniform resolution and colour mode"]
    expected = f"uniform resolution and colour mode: limit one size, one mode, measured 32x32, {SIZE}x{SIZE} / RGB"
    assert failures(results) == [expected]


def test_quarantine_matches_quarantine_json(rendered):
    out, cfg, models, _ = rendered
    on_disk = json.loads((out / "quarantine.json").read_text())
    metrics, _, _ = measure(out, cfg, models, on_disk)
    q = metrics["quarantine"]
    assert q["count"] == len(on_disk) > 0
    assert q["fraction"] == pytest.approx(len(on_disk) / (len(on_disk) + len(SPLIT_OF)))
    assert q["by_reason"] == dict(Counter(e["reason"] for e in on_disk))
    assert list(q["by_reason"]) == sorted(q["by_reason"])


def test_response_lengths_are_the_code_lengths(rendered):
    out, cfg, models, quarantine = rendered
    metrics, _, _ = measure(out, cfg, models, quarantine)
    splits = CADConversationsConfig().splits
    lengths = [len(code) for code, split in zip(models["code"], models["split"], strict=False) if split in splits
               for _ in cfg.views]
    assert len(lengths) == 2 * len(cfg.views)
    assert metrics["lengths"]["response_chars"] == pytest.approx(
        {"min": min(lengths), "mean": sum(lengths) / len(lengths), "max": max(lengths)})
    prompt = len("<image>\n" + CADConversationsConfig().prompts[0])
    assert metrics["lengths"]["prompt_chars"] == pytest.approx({"min": prompt, "mean": prompt, "max": prompt})


@pytest.fixture
def stressed(copy):
    """Metrics with something to measure for every threshold: a missing, a corrupt and a blank image,
    quarantined models, and conversations dropped for length."""
    out, cfg, models, quarantine = copy
    a, b = models.iloc[0], models.iloc[1]
    rewrite_member(out / a[f"image_{cfg.views[0]}"], None)
    rewrite_member(out / a[f"image_{cfg.views[1]}"], b"\x89PNG garbage")
    save_image(Image.new("RGB", (SIZE, SIZE), "white"), out / b[f"image_{cfg.views[2]}"])
    codes = dict(zip(models["id"], models["code"], strict=False))
    train, val = (i for i, s in SPLIT_OF.items() if s in ("train", "validation"))
    assert len(codes[train]) != len(codes[val])
    limit = min(len(codes[train]), len(codes[val]))  # the longer of the two is dropped
    conv_cfg = CADConversationsConfig(max_answer_chars=limit)
    metrics, conversations, images = measure(out, cfg, models, quarantine, conv_cfg)
    return out, cfg, models, quarantine, metrics, conversations, images


def test_measured_values_of_the_stressed_render(stressed):
    metrics = stressed[4]
    n_views = 3
    assert metrics["conversation_limits"]["dropped"] == n_views
    assert metrics["conversation_limits"]["dropped_fraction"] == pytest.approx(n_views / (2 * n_views))
    assert metrics["images_check"]["missing"] + metrics["images_check"]["unreadable"] == 2
    assert metrics["images_check"]["blank"] == 1


@pytest.mark.parametrize("key, measured_of, past", [
    ("min_models", lambda m: m["models"], lambda v: v + 1),
    ("max_quarantine_fraction", lambda m: m["quarantine"]["fraction"], lambda v: v - 1e-6),
    ("max_unreadable_images",
     lambda m: m["images_check"]["missing"] + m["images_check"]["unreadable"], lambda v: v - 1),
    ("max_blank_images", lambda m: m["images_check"]["blank"], lambda v: v - 1),
    ("max_dropped_fraction", lambda m: m["conversation_limits"]["dropped_fraction"], lambda v: v - 1e-6),
])
def test_each_threshold_fails_just_past_the_measured_value(stressed, key, measured_of, past):
    metrics = stressed[4]
    value = measured_of(metrics)
    assert value > 0
    at = check_thresholds(metrics, replace(LOOSE, **{key: value}))
    assert failures(at) == []
    beyond = check_thresholds(metrics, replace(LOOSE, **{key: past(value)}))
    failed = failures(beyond)
    assert len(failed) == 1 and failed[0].startswith(f"validate_deepcad.{key}: limit {past(value)}")
    assert [r[0] for r in beyond if not r[3]] == [f"validate_deepcad.{key}"]


def test_dvc_metrics_are_shallow_numbers(stressed):
    metrics = stressed[4]
    flat = dvc_metrics(metrics)
    json.dumps(flat)

    def is_number(v):
        return isinstance(v, (int, float)) and not isinstance(v, bool)

    for k, v in flat.items():
        if isinstance(v, dict):
            assert v and all(is_number(x) for x in v.values()), k
        else:
            assert is_number(v), k
    assert flat["models"] == len(SPLIT_OF) and flat["images_check"] == {"missing": 1, "unreadable": 1, "blank": 1}
    assert flat["splits"]["test_conversations"] == 0 and flat["splits"]["validation_models"] == 1
    assert flat["quarantine"]["count"] == len(stressed[3])


def test_plots_open_and_the_sample_sheet_has_one_tile_per_view(stressed, tmp_path):
    out, cfg, models, _, metrics, conversations, images = stressed
    vcfg = ValidateDeepCADConfig()
    # the first model (a sample) has a missing and a corrupt view: its tiles stay blank, nothing raises
    paths = write_plots(models, cfg.views, images, conversations, metrics, out, tmp_path / "r", vcfg)
    assert [p.name for p in paths] == list(PLOT_FILES) and len(paths) == 5
    for p in paths:
        with Image.open(p) as im:
            im.load()
            assert im.format == "PNG" and im.width > 0
    with Image.open(tmp_path / "r/samples.png") as im:
        assert im.size == (160 * len(cfg.views), 160 * min(vcfg.sample_models, len(models)))


def test_report_says_failed_or_passed(stressed, tmp_path):
    out, cfg, models, _, metrics, conversations, images = stressed
    plots = write_plots(models, cfg.views, images, conversations, metrics, out, tmp_path, LOOSE)
    src = {"root": "root", "render_out": str(out), "conversations_out": "conv"}
    ok = render_report(metrics, check_thresholds(metrics, LOOSE), plots, models, cfg.views, src, LOOSE)
    assert "**Status: passed**" in ok and "FAILED" not in ok and "**FAIL**" not in ok
    strict = replace(LOOSE, min_models=len(SPLIT_OF) + 1)
    bad = render_report(metrics, check_thresholds(metrics, strict), plots, models, cfg.views, src, strict)
    assert "**Status: FAILED**" in bad and "Status: passed" not in bad
    assert "| `validate_deepcad.min_models` | 4 | 3 | **FAIL** |" in bad
    for p in plots:
        assert f"({p.name})" in ok
