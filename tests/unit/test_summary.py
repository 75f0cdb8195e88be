"""reports/summary.json: the headline names read from the stages' own metrics files."""
import json

from lib.summary import HEADLINE, SOURCES, largest_resolution, metrics_files, summarize
from tests.helpers.workspace import REPO, run_stage_module


def test_every_name_comes_from_the_metrics_it_names(tmp_path):
    apt = {"G_ema": {"psnr": 24.123456, "psnr_gain_db": 0.31}, "bicubic": {"psnr": 23.81}}
    vae = {"video": {"train_video_vae": {"model": {}, "32px_4f": {"psnr_gain_db": -1.0},
                                         "128px_16f": {"psnr_gain_db": -9.5, "vae": {"psnr": 17.0},
                                                       "bicubic_values": {"psnr": 26.5}},
                                         "64px_8f": {"psnr_gain_db": -5.0}}},
           "audio": {"vae_lsd_gain_db": 3.7}}
    files = {}
    for stage in SOURCES:
        files[stage] = tmp_path / stage / "metrics.json"
    files["eval_apt"].parent.mkdir()
    files["eval_apt"].write_text(json.dumps(apt))
    files["eval_vae"].parent.mkdir()
    files["eval_vae"].write_text(json.dumps(vae))
    s = summarize(files)["summary"]
    assert s["apt"] == {"psnr_db": 24.1235, "baseline_psnr_db": 23.81, "gain_db": 0.31}
    # the largest resolution by number, not by string ("32px" > "128px" as text)
    assert s["video_vae"] == {"psnr_db": 17.0, "baseline_psnr_db": 26.5, "gain_db": -9.5}
    assert s["curriculum_vae"]["gain_db"] is None and s["audio_vae"]["lsd_gain_db"] == 3.7
    assert s["ssv2"]["videos"] is None and s["stages_missing"] == len(SOURCES) - 2
    assert sum(len(v) for v in s.values() if isinstance(v, dict)) == len(HEADLINE) <= 20


def test_largest_resolution_ignores_other_keys():
    assert largest_resolution({"model": {}, "256px_8f": 1, "256px_16f": 2, "1024px_4f": 3}) == 3
    assert largest_resolution({"model": {}}) is None and largest_resolution(None) is None


def test_on_this_checkouts_reports_each_value_equals_its_source():
    params = __import__("yaml").safe_load((REPO / "params.yaml").read_text())
    files = {stage: REPO / path for stage, path in metrics_files(params).items()}
    s = summarize(files)["summary"]
    if files["eval_apt"].is_file():
        apt = json.loads(files["eval_apt"].read_text())
        assert s["apt"]["gain_db"] == round(apt["G_ema"]["psnr_gain_db"], 4)
        assert s["apt"]["baseline_psnr_db"] == round(apt["bicubic"]["psnr"], 4)
    if files["eval_cad_vlm"].is_file():
        cad = json.loads(files["eval_cad_vlm"].read_text())
        assert s["cad_vlm"]["baseline_mean_iou"] == round(cad["nn_retrieval"]["mean_iou"], 4)


def test_stage_reads_report_dirs_from_the_params_file(tmp_path):
    (tmp_path / "apt").mkdir()
    (tmp_path / "apt/metrics.json").write_text(json.dumps({"G_ema": {"psnr_gain_db": 1.5}}))
    params = tmp_path / "params.yaml"
    params.write_text(f"summarize:\n  out: {tmp_path}/out/summary.json\neval_apt:\n  report_dir: {tmp_path}/apt\n"
                      f"validate_ssv2:\n  report_dir: {tmp_path}/none\n")
    proc = run_stage_module("summarize", ["--params", str(params)], tmp_path)
    assert proc.returncode == 0, proc.stderr
    out = json.loads((tmp_path / "out/summary.json").read_text())["summary"]
    assert out["apt"]["gain_db"] == 1.5 and out["ssv2"]["videos"] is None
    assert "no metrics yet from validate_ssv2" in proc.stderr


def test_malformed_metrics_file_fails_the_stage_naming_the_file(tmp_path):
    (tmp_path / "apt").mkdir()
    (tmp_path / "apt/metrics.json").write_text('{"G_ema": {"psnr_gain_db": 1.5}')  # truncated write
    params = tmp_path / "params.yaml"
    params.write_text(f"summarize:\n  out: {tmp_path}/out/summary.json\neval_apt:\n  report_dir: {tmp_path}/apt\n")
    proc = run_stage_module("summarize", ["--params", str(params)], tmp_path)
    assert proc.returncode == 1
    assert f"{tmp_path}/apt/metrics.json: not valid JSON" in proc.stderr
    assert not (tmp_path / "out/summary.json").exists()
