"""`python -m stages.train_cad_vlm` then `python -m stages.eval_cad_vlm` on tiny rendered conversations: the stage
CLIs end to end (compact model vs both baselines), a missing base_model's message, and a tiny random LLaVA
fine-tuned (LoRA) through the same stage."""
from __future__ import annotations

import json
import os

import numpy as np
import pytest
import yaml

from lib.eval.cad_vlm import SCORE_KEYS
from tests.helpers.cad_vlm_data import write_cad_conversations
from tests.helpers.workspace import pass_validation, run_stage_module

TRAIN = {"batch_size": 8, "lr": 0.003, "betas": [0.9, 0.99], "warmup_steps": 1, "epochs": 2, "log_every": 1,
         "checkpoint_every": 4, "tracker": "dvclive", "tracker_dir": "reports/train_cad_vlm/dvclive",
         "report_dir": "reports/train_cad_vlm", "out_dir": "models/cad_vlm", "image_size": 32, "max_len": 320,
         "model": {"channels": 8, "embed_dim": 32, "hidden": 64}, "early_stopping": {"patience": 3},
         "num_threads": 1}
EVAL = {"report_dir": "reports/eval_cad_vlm", "grid_rows": 2, "render_size": 48, "chamfer_points": 256,
        "max_images": 4, "hf_max_new_tokens": 12, "batch_size": 4, "num_threads": 1, "best_of": 2}


def write_params(ws, name="params.yaml", **train):
    params = {"render_deepcad": {"out": "render", "image_size": 64},
              "build_cad_conversations": {"out": "conversations"},
              "train_cad_vlm": {**TRAIN, **train}, "eval_cad_vlm": EVAL}
    (ws / name).write_text(yaml.safe_dump(params))
    return name


def ok(proc):
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert "Traceback" not in proc.stderr
    return proc


@pytest.fixture(scope="module")
def ws(tmp_path_factory):
    """A workspace with 12 tiny models' renders and conversations (27 train / 9 validation)."""
    root = tmp_path_factory.mktemp("cad_vlm_stages")
    write_cad_conversations(root, count=12)
    (root / ".git").mkdir()  # dvclive looks for a repo root: keep it inside the workspace
    pass_validation(root, "validate_deepcad")
    return root


def test_train_then_eval_compact_model_against_both_baselines(ws):
    params = write_params(ws)
    ok(run_stage_module("train_cad_vlm", ["--params", params, "--no-progress"], ws))
    assert (ws / "models/cad_vlm/final/raw/cad_vlm.safetensors").is_file()
    live = json.loads((ws / "reports/train_cad_vlm/dvclive/metrics.json").read_text())
    last = json.loads((ws / "reports/train_cad_vlm/convergence.json").read_text())
    epochs = json.loads((ws / "reports/train_cad_vlm/convergence_epochs.json").read_text())
    assert live["step"] == 8 and last["epochs"] == len(epochs) == 2  # 27 conversations / batch 8: 4 steps an epoch
    assert last["val_loss"] == epochs[-1]["val_loss"] == pytest.approx(live["val"]["loss"], rel=1e-6)
    assert last["gap"] == pytest.approx(last["val_loss"] - last["train_loss"])
    text = (ws / "reports/train_cad_vlm/convergence.md").read_text()
    assert "per-batch loss variance" in text and "(convergence.png)" in text
    assert (ws / "reports/train_cad_vlm/convergence.png").stat().st_size > 0
    assert "27 train / 9 validation" in text

    ev = ok(run_stage_module("eval_cad_vlm", ["--params", params], ws))
    out = ws / "reports/eval_cad_vlm"
    metrics = json.loads((out / "metrics.json").read_text())
    assert metrics["n"] == 4
    for name in ("model", "nn_retrieval", "nn_encoder", "most_frequent", "quantised_truth"):
        assert set(SCORE_KEYS) <= set(metrics[name]), name
        assert metrics[name]["n"] == 4
    assert metrics["model"]["parse_rate"] == 1.0  # grammar-constrained decoding always parses
    assert metrics["quantised_truth"]["exact_match"] == 1.0
    assert metrics["quantised_truth"]["acc_cmd"] == 1.0 and metrics["quantised_truth"]["acc_param"] == 1.0
    best = metrics["model_best_of"]
    assert best["best_of"] == 2 and set(SCORE_KEYS) <= set(best) and best["mean_iou"] >= 0.0
    items = json.loads((out / "items.json").read_text())
    assert len(items) == 4
    for name in ("model", "nn_retrieval", "most_frequent"):
        assert metrics[name]["mean_iou"] == pytest.approx(np.mean([it[name]["iou"] for it in items]))
    assert len({it["most_frequent"]["answer"] for it in items}) == 1
    report = (out / "report.md").read_text()
    assert "| `model`, best of 2 |" in report and "ACC_param" in report
    assert "| `nn_retrieval` |" in report and "| `most_frequent` |" in report and "(grid.png)" in report
    from PIL import Image
    assert Image.open(out / "grid.png").size == (3 * 48, 2 * 48)
    assert "mean IoU: model" in ev.stderr


def test_missing_base_model_exits_1_with_the_fix(ws):
    params = write_params(ws, "missing.yaml", base_model="models/nowhere", out_dir="models/missing")
    proc = run_stage_module("train_cad_vlm", ["--params", params, "--no-progress"], ws)
    assert proc.returncode == 1 and "Traceback" not in proc.stderr
    assert "train_cad_vlm.base_model: models/nowhere does not exist or is not a folder" in proc.stderr
    assert "hf download" in proc.stderr and "train_cad_vlm.base_model: null" in proc.stderr
    assert not (ws / "models/missing/final").exists()


def test_tiny_llava_base_model_trains_two_lora_steps_through_the_stage(ws):
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    from tests.helpers.tiny_vlm import save_tiny_vlm

    save_tiny_vlm(ws / "tiny_llava")
    params = write_params(ws, "llava.yaml", base_model="tiny_llava", out_dir="models/llava", epochs=None, steps=2,
                          batch_size=2, hf_max_length=160, training_mode="lora", checkpoint_every=2,
                          tracker="none", report_dir="reports/llava", model={})
    proc = ok(run_stage_module("train_cad_vlm", ["--params", params, "--no-progress"], ws))
    assert "lora_targets: none given" in proc.stderr
    assert (ws / "models/llava/final/raw/vlm.safetensors").is_file()
    history = [json.loads(line) for line in (ws / "models/llava/history.jsonl").read_text().splitlines()]
    assert [r["step"] for r in history if r["kind"] == "train"] == [0, 1]
    assert all(np.isfinite(r["loss"]) for r in history)
    assert json.loads((ws / "models/llava/final/metrics.json").read_text())["step"] == 2

    ev = ok(run_stage_module("eval_cad_vlm", ["--params", params], ws))  # free text of an untrained LLaVA
    metrics = json.loads((ws / "reports/eval_cad_vlm/metrics.json").read_text())
    assert metrics["model"]["invalid_rate"] == 1.0 and metrics["model"]["mean_iou"] == 0.0
    assert metrics["model"]["mean_chamfer"] is None  # no valid answer: no distance (null, not NaN)
    assert "nn_encoder" not in metrics and {"nn_retrieval", "most_frequent"} <= set(metrics)
    assert "model_best_of" not in metrics  # best of N: compact model only
    assert "greedy (free text)" in (ws / "reports/eval_cad_vlm/report.md").read_text()
    assert "mean IoU: model 0.000" in ev.stderr


def test_openecad_answers_train_and_score_through_the_stages(tmp_path):
    """Conversations in OpenECAD's format: the compact model trains on them (its tokenizer reads them) and
    eval_cad_vlm scores every method on them; the references' quantised form is exact."""
    write_cad_conversations(tmp_path, count=8, answer_format="openecad")
    (tmp_path / ".git").mkdir()
    pass_validation(tmp_path, "validate_deepcad")
    val = json.loads((tmp_path / "conversations/val.json").read_text())
    assert all(c["conversations"][1]["value"].startswith("SketchPlane0 = add_sketchplane(") for c in val)
    params = write_params(tmp_path, epochs=1, tracker="none")
    ok(run_stage_module("train_cad_vlm", ["--params", params, "--no-progress"], tmp_path))
    ok(run_stage_module("eval_cad_vlm", ["--params", params], tmp_path))
    metrics = json.loads((tmp_path / "reports/eval_cad_vlm/metrics.json").read_text())
    truth = metrics["quantised_truth"]
    assert truth["exact_match"] == 1.0 and truth["acc_cmd"] == 1.0 and truth["invalid_rate"] == 0.0
    assert truth["mean_iou"] > 0.95
    assert metrics["model"]["parse_rate"] == 1.0
    items = json.loads((tmp_path / "reports/eval_cad_vlm/items.json").read_text())
    assert all(it["nn_retrieval"]["answer"].startswith("SketchPlane0") for it in items)
