"""The four DeepCAD stages as `python -m stages.<name>` subprocesses in a temp folder with a tiny params.yaml:
help texts, synth -> render -> conversations -> validate end to end, and clean errors on bad params."""
from __future__ import annotations

import json
import shutil

import pytest
import yaml

from tests.helpers.archives import members, rewrite_member
from tests.helpers.workspace import run_stage_module

STAGES = ("synth_deepcad", "render_deepcad", "build_cad_conversations", "validate_deepcad")


def tiny_params(**overrides) -> dict:
    params = {
        "deepcad": {"root": "raw/deepcad"},
        "synth_deepcad": {"out": "raw/deepcad", "count": 10},
        "render_deepcad": {"out": "render", "shards": 2, "image_size": 64},
        "build_cad_conversations": {"out": "conversations"},
        "validate_deepcad": {"report_dir": "reports/validate_deepcad", "min_models": 3},
    }
    for section, keys in overrides.items():
        params[section] = {**params[section], **keys}
    return params


def write_params(path, **overrides):
    path.write_text(yaml.safe_dump(tiny_params(**overrides)))
    return path


def ok(proc):
    assert proc.returncode == 0, proc.stderr[-3000:]
    return proc


@pytest.fixture(scope="module")
def pipeline(tmp_path_factory):
    """A workspace after running the four stages in order with the tiny params."""
    ws = tmp_path_factory.mktemp("deepcad_stages")
    write_params(ws / "params.yaml")
    ok(run_stage_module("synth_deepcad", ["--no-progress"], ws))
    ok(run_stage_module("render_deepcad", ["--no-progress", "run"], ws))
    ok(run_stage_module("build_cad_conversations", ["--no-progress"], ws))
    proc = ok(run_stage_module("validate_deepcad", ["--no-progress"], ws))
    return ws, proc


@pytest.mark.parametrize("name, expected", [
    ("synth_deepcad", ["cad_json/", "train_val_test_split.json", "synth_deepcad.out"]),
    ("render_deepcad", ["models.parquet", "quarantine.json", "summary.json", "shard", "merge", "run",
                        "snakemake --cores 8 render_deepcad"]),
    ("build_cad_conversations", ["train.json", "val.json", "summary.json", "quarantine.json"]),
    ("validate_deepcad", ["report.md", "metrics.json", "samples", "validate_deepcad.*"]),
])
def test_help_names_the_outputs(tmp_path, name, expected):
    proc = ok(run_stage_module(name, ["--help"], tmp_path))
    for text in expected:
        assert text in proc.stdout, (name, text)
    assert "--params" in proc.stdout


def test_four_stages_in_order_produce_report_and_metrics(pipeline):
    ws, proc = pipeline
    split = json.loads((ws / "raw/deepcad/train_val_test_split.json").read_text())
    assert sum(len(v) for v in split.values()) == 10
    assert len(list((ws / "render/shards").glob("*.parquet"))) == 2
    summary = json.loads((ws / "render/summary.json").read_text())
    conv = {s: json.loads((ws / f"conversations/{f}").read_text()) for s, f in
            (("train", "train.json"), ("validation", "val.json"))}
    report = ws / "reports/validate_deepcad"
    metrics = json.loads((report / "metrics.json").read_text())
    text = (report / "report.md").read_text()
    assert "**Status: passed**" in text and "FAILED" not in text
    assert metrics["models"] == summary["models"] >= 3
    assert metrics["images"] == summary["models"] * 3 == summary["images"]
    assert metrics["conversations"] == sum(len(v) for v in conv.values())
    for s in ("train", "validation"):
        assert metrics["splits"][f"{s}_conversations"] == len(conv[s]) == 3 * summary["by_split"].get(s, 0)
    assert metrics["images_check"] == {"missing": 0, "unreadable": 0, "blank": 0}
    for name in ("counts.png", "png_sizes.png", "lengths.png", "foreground.png", "samples.png"):
        assert (report / name).is_file() and f"({name})" in text
    assert "Traceback" not in proc.stderr


def test_unknown_key_is_refused_with_a_suggestion(tmp_path):
    write_params(tmp_path / "params.yaml", render_deepcad={"shardz": 2})
    proc = run_stage_module("render_deepcad", ["run"], tmp_path)
    assert proc.returncode == 1
    assert "render_deepcad.shardz: unknown key; did you mean 'shards'?" in proc.stderr
    assert "Traceback" not in proc.stderr and not (tmp_path / "render").exists()


def test_failed_threshold_exits_1_and_still_writes_the_report(pipeline):
    ws, _ = pipeline
    params = write_params(ws / "strict.yaml", validate_deepcad={"min_models": 1000, "report_dir": "reports/strict"})
    proc = run_stage_module("validate_deepcad", ["--params", params.name, "--no-progress"], ws)
    assert proc.returncode == 1
    assert "validate_deepcad.min_models" in proc.stderr and "limit 1000" in proc.stderr
    assert "Traceback" not in proc.stderr
    text = (ws / "reports/strict/report.md").read_text()
    assert "**Status: FAILED**" in text and "| `validate_deepcad.min_models` | 1000 |" in text
    assert (ws / "reports/strict/metrics.json").is_file()


def test_shard_index_out_of_range_is_a_usage_error(tmp_path):
    write_params(tmp_path / "params.yaml")
    proc = run_stage_module("render_deepcad", ["shard", "--index", "9"], tmp_path)
    assert proc.returncode == 2 and "outside 0..1" in proc.stderr
    assert not (tmp_path / "render").exists()


def test_corrupt_image_fails_the_threshold_and_still_writes_the_report(pipeline):
    """A corrupt PNG among the sample models used to crash the sample sheet (traceback, no report)."""
    ws, _ = pipeline
    shutil.copytree(ws / "render", ws / "render_bad")
    rewrite_member(members(ws / "render_bad", ".png")[0], b"not a png")
    params = write_params(ws / "corrupt.yaml", render_deepcad={"out": "render_bad"},
                          validate_deepcad={"report_dir": "reports/corrupt"})
    proc = run_stage_module("validate_deepcad", ["--params", params.name, "--no-progress"], ws)
    assert proc.returncode == 1 and "Traceback" not in proc.stderr, proc.stderr[-3000:]
    assert "validate_deepcad.max_unreadable_images: limit 0, measured 1 (missing 0, unreadable 1)" in proc.stderr
    metrics = json.loads((ws / "reports/corrupt/metrics.json").read_text())
    assert metrics["images_check"] == {"missing": 0, "unreadable": 1, "blank": 0}
    assert "**Status: FAILED**" in (ws / "reports/corrupt/report.md").read_text()
    assert (ws / "reports/corrupt/samples.png").is_file()
