"""benchmarks/cad_vlm_gpu_report.py: the verdict follows the numbers (above both retrieval baselines on mean IoU,
invalid <= 5%), and the report keeps the issue's keys."""
import json

from benchmarks.cad_vlm_gpu_report import KEYS, METHODS, build, markdown


def fake_run(tmp_path, model_iou, model_invalid):
    (tmp_path / "eval").mkdir()
    (tmp_path / "render").mkdir()
    metrics = {"n": 40, **{m: {k: 0.1 for k in KEYS} for m in METHODS}}
    metrics["nn_retrieval"]["mean_iou"], metrics["nn_encoder"]["mean_iou"] = 0.30, 0.35
    metrics["model"].update(mean_iou=model_iou, invalid_rate=model_invalid)
    (tmp_path / "eval/metrics.json").write_text(json.dumps(metrics))
    (tmp_path / "render/summary.json").write_text(json.dumps({"models": 5000}))
    params = {"eval_cad_vlm": {"report_dir": str(tmp_path / "eval")},
              "render_deepcad": {"out": str(tmp_path / "render")}}
    return build(params, {"stages": {"train_cad_vlm": 600.0}, "argv": ["out", "10"]})


def test_a_model_above_both_baselines_with_few_invalid_beats_retrieval(tmp_path):
    r = fake_run(tmp_path, 0.40, 0.02)
    assert r["beats_retrieval"] is True and r["minutes"] == 10.0 and r["models"] == 5000
    assert "beats both retrieval baselines" in markdown(r) and "0.3500 (nn_encoder)" in markdown(r)


def test_too_many_invalid_answers_is_a_loss_even_above_the_baselines(tmp_path):
    r = fake_run(tmp_path, 0.40, 0.06)
    assert r["beats_retrieval"] is False
    assert "does not beat retrieval** (a loss)" in markdown(r) and "invalid 6.0%" in markdown(r)


def test_below_the_better_baseline_is_a_loss(tmp_path):
    r = fake_run(tmp_path, 0.32, 0.0)  # above nn_retrieval, below nn_encoder
    assert r["beats_retrieval"] is False and set(r["model"]) == set(KEYS)
