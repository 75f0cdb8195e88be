"""benchmarks/gpu_cad_run.sh (issue 14's GPU run without DVC) end to end on the CPU with a shrunken model: the
chain synth -> render -> conversations -> train (GPU preset + overrides) -> eval, then cad_vlm_gpu.json with the
issue's keys, read back against eval_cad_vlm's own metrics. Nothing lands in the checkout."""
import json
import sys

import pytest
import yaml

from benchmarks.cad_vlm_gpu_report import KEYS, METHODS
from tests.helpers.workspace import REPO, run

pytestmark = pytest.mark.pipeline
SHRINK = ("train_cad_vlm.epochs=1 train_cad_vlm.image_size=32 train_cad_vlm.model.channels=8 "
          "train_cad_vlm.model.embed_dim=16 train_cad_vlm.model.hidden=32 train_cad_vlm.model.layers=1 "
          "train_cad_vlm.batch_size=8 train_cad_vlm.warmup_steps=2 train_cad_vlm.mixed_precision=fp32 "
          "train_cad_vlm.num_threads=1 eval_cad_vlm.max_images=12")


def test_gpu_cad_run_writes_the_report_from_the_stages_metrics(tmp_path):
    out = tmp_path / "out"
    proc = run(["env", f"PYTHON={sys.executable}", "JOBS=2", f"CAD_OVERRIDES={SHRINK}", "bash",
                "benchmarks/gpu_cad_run.sh", str(out), "2", "30"], REPO, timeout=600)
    params = yaml.safe_load((out / "cad.yaml").read_text())
    assert params["train_cad_vlm"]["lr"] == 0.001 and params["train_cad_vlm"]["max_minutes"] == 2  # preset + run
    assert params["synth_deepcad"]["count"] == 30 and params["render_deepcad"]["shards"] == 2
    report = json.loads((out / "cad_vlm_gpu.json").read_text())
    metrics = json.loads((out / "eval_cad_vlm/metrics.json").read_text())
    render = json.loads((out / "work/render/summary.json").read_text())
    assert report["models"] == render["models"] == 30 - render["quarantined"]
    assert set(METHODS) <= set(report) and {"minutes", "models"} <= set(report)
    for method in METHODS:
        assert report[method] == {k: metrics[method][k] for k in KEYS}
    assert report["quantised_truth"]["mean_iou"] > 0.99
    best = max(metrics["nn_retrieval"]["mean_iou"], metrics["nn_encoder"]["mean_iou"])
    beats = metrics["model"]["mean_iou"] > best and metrics["model"]["invalid_rate"] <= 0.05
    assert report["beats_retrieval"] is beats
    timings = json.loads((out / "cad_timings.json").read_text())
    assert report["minutes"] == pytest.approx(timings["stages"]["train_cad_vlm"] / 60)
    md = (out / "cad_vlm_gpu.md").read_text()
    assert ("beats both retrieval" if beats else "does not beat retrieval") in md and "| quantised_truth |" in md
    assert "train_cad_vlm" in proc.stdout  # the chain's timing table
    written = [params["synth_deepcad"]["out"], params["deepcad"]["root"], params["render_deepcad"]["out"],
               params["build_cad_conversations"]["out"], params["eval_cad_vlm"]["report_dir"],
               *(params["train_cad_vlm"][k] for k in ("out_dir", "report_dir", "tracker_dir"))]
    assert all(path.startswith(str(out)) for path in written), written  # nothing lands in the checkout
