"""benchmarks/apt_ablation.py and benchmarks/apt_gpu_report.py: each ablation row's params differ from the base only
in the loss and its own paths, rows are read back in the paper's order, and the GPU report records the run's verdict
against bicubic and the ablation table."""
import json
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT / "benchmarks"))

from apt_ablation import ROW_NAMES, collect, row_params  # noqa: E402
from apt_gpu_report import markdown, run_record  # noqa: E402

BASE = {"train_apt": {"steps": 4000, "out_dir": "data/models/train_apt", "tracker": "dvclive", "compile": True,
                      "loss": {"kind": "rpgan_r1r2", "adv": 1.0, "fm": 0.1, "r1": 1000.0, "r2": 1000.0,
                               "sigma": 0.01, "r1_every": 4, "recon": 1.0},
                      "degrade": {"kind": "realesrgan_video"}},
        "eval_apt": {"report_dir": "/run/eval_apt", "seed": 0},
        "synth_ssv2": {"count": 480}}


def test_rows_change_only_the_loss_and_their_own_paths(tmp_path):
    rows = {n: row_params(BASE, n, tmp_path, steps=600, max_minutes=7.5, overrides=[("train_apt.compile", False)])
            for n in ROW_NAMES}
    assert ROW_NAMES == ["ns_r1", "rpgan_r1r2", "rpgan_l1", "rpgan_l1_fm"]  # SeedVR2 Table 3's order
    losses = {n: p["train_apt"]["loss"] for n, p in rows.items()}
    assert losses["ns_r1"] == {**BASE["train_apt"]["loss"], "kind": "ns_r1", "r1": 1.0, "r2": 0.0, "recon": 0.0,
                               "fm": 0.0}
    assert (losses["rpgan_r1r2"]["kind"], losses["rpgan_r1r2"]["recon"], losses["rpgan_r1r2"]["fm"]) == (
        "rpgan_r1r2", 0.0, 0.0)
    assert (losses["rpgan_l1"]["recon"], losses["rpgan_l1"]["fm"]) == (0.1, 0.0)
    assert (losses["rpgan_l1_fm"]["recon"], losses["rpgan_l1_fm"]["fm"]) == (0.1, 0.1)
    for name, params in rows.items():
        train = params["train_apt"]
        assert train["out_dir"] == str(tmp_path / name / "model") and train["tracker"] == "none"
        assert (train["steps"], train["max_minutes"], train["compile"]) == (600, 7.5, False)
        assert params["eval_apt"] == {"report_dir": str(tmp_path / name / "eval_apt"), "seed": 0}
        assert params["bench_loader"] == {"out": str(tmp_path / name / "loader")}
        # everything else is the base's: same data, degradations and seed for every row
        assert params["synth_ssv2"] == BASE["synth_ssv2"] and train["degrade"] == BASE["train_apt"]["degrade"]
    assert BASE["train_apt"]["loss"]["kind"] == "rpgan_r1r2" and "max_minutes" not in BASE["train_apt"]  # not mutated


def fake_row(out_dir, name, psnr, *, fake_std=0.3, finished=True):
    row = out_dir / name
    (row / "model" / "final").mkdir(parents=True)
    (row / "model" / "final" / "metrics.json").write_text(json.dumps(
        {"step": 600, "stop_reason": "steps", "G/fake_std": fake_std, "G/real_std": 0.4, "d/real_logit": 2.0,
         "d/fake_logit": -2.0}))
    if not finished:
        return
    (row / "eval_apt").mkdir()
    block = {"psnr": 25.0, "ssim": 0.7, "temporal_error": 0.04, "flicker": {"ratio": 1.1}}
    (row / "eval_apt" / "metrics.json").write_text(json.dumps(
        {"clips": 16, "bicubic": block, "G": {**block, "psnr": psnr, "flicker": {"ratio": 1.3}},
         "G_ema": {**block, "psnr": psnr - 0.5}}))
    (row / "timings.json").write_text(json.dumps({"stages": {"train_apt": 300.0, "eval_apt": 20.0}}))


def test_collect_reads_rows_in_table_order_and_names_the_failed_one(tmp_path):
    fake_row(tmp_path, "rpgan_l1", 26.5)
    fake_row(tmp_path, "ns_r1", 22.0, fake_std=0.05)
    fake_row(tmp_path, "rpgan_r1r2", 24.0, finished=False)
    result = collect(tmp_path, ["rpgan_l1", "rpgan_r1r2", "ns_r1"], 600, 7.5)
    assert [r["name"] for r in result["rows"]] == ["ns_r1", "rpgan_r1r2", "rpgan_l1"]
    ns, failed, l1 = result["rows"]
    assert (ns["psnr"], ns["g_ema"]["psnr"], ns["bicubic"]["psnr"], ns["ssim"]) == (22.0, 21.5, 25.0, 0.7)
    assert (ns["steps"], ns["stop_reason"], ns["minutes"], ns["flicker_ratio"]) == (600, "steps", 5.0, 1.3)
    assert ns["collapse"] == {"fake_std": 0.05, "real_std": 0.4, "d_real_logit": 2.0, "d_fake_logit": -2.0}
    assert l1["loss"]["recon"] == 0.1 and l1["label"] == "+ L1"
    assert "psnr" not in failed and "eval_apt/metrics.json missing" in failed["error"]
    assert str(tmp_path / "rpgan_r1r2" / "run.log") in failed["error"]
    md = markdown({"ablation": result["rows"], "ablation_meta": {"device": "H100", "date": "d", "command": "c"}}, [])
    assert "| NS + R1 | kind ns_r1, r1 1.0, r2 0.0, recon 0.0, fm 0.0 | 600 (steps) | 22.000 | 21.500 |" in md
    assert "| 0.125 | -3.000 |" in md  # G/real std 0.05/0.4, and PSNR against bicubic
    assert "| RpGAN + R1 + R2 |" in md and "failed:" in md


def test_dry_run_writes_each_rows_params_and_rejects_unknown_rows(tmp_path):
    base = tmp_path / "apt.yaml"
    base.write_text(yaml.safe_dump(BASE))
    script = str(ROOT / "benchmarks" / "apt_ablation.py")
    proc = subprocess.run([sys.executable, script, str(tmp_path / "abl"), "--params", str(base), "--steps", "50",
                           "--rows", "ns_r1,rpgan_l1_fm", "--dry-run", "train_apt.crop=32"],
                          capture_output=True, text=True, cwd=ROOT)
    assert proc.returncode == 0, proc.stderr
    written = sorted(p.parent.name for p in (tmp_path / "abl").glob("*/params.yaml"))
    assert written == ["ns_r1", "rpgan_l1_fm"]
    params = yaml.safe_load((tmp_path / "abl" / "rpgan_l1_fm" / "params.yaml").read_text())
    assert (params["train_apt"]["steps"], params["train_apt"]["crop"], params["train_apt"]["loss"]["fm"]) == (
        50, 32, 0.1)
    bad = subprocess.run([sys.executable, script, str(tmp_path / "abl"), "--params", str(base), "--rows", "ns"],
                         capture_output=True, text=True, cwd=ROOT)
    assert bad.returncode == 2 and "unknown row 'ns'" in bad.stderr


def fake_run(run_dir, psnr_g, psnr_ema, psnr_bicubic=25.0):
    run_dir.mkdir(parents=True)
    (run_dir / "apt.yaml").write_text(yaml.safe_dump({**BASE, "train_apt": {**BASE["train_apt"], "batch_size": 2}}))
    (run_dir / "train_apt_final_metrics.json").write_text(json.dumps({"step": 9000, "stop_reason": "time"}))
    (run_dir / "eval_apt").mkdir()
    block = {"ssim": 0.7, "temporal_error": 0.04, "flicker": {"ratio": 1.0}}
    (run_dir / "eval_apt" / "metrics.json").write_text(json.dumps(
        {"clips": 16, "frames": 16, "crop": 224, "bicubic": {**block, "psnr": psnr_bicubic},
         "G": {**block, "psnr": psnr_g}, "G_ema": {**block, "psnr": psnr_ema}}))
    (run_dir / "eval_apt" / "strip.png").write_bytes(b"png")
    timings = []
    for i, seconds in enumerate((480.0, 450.0)):  # a run split over two calls
        timings.append(run_dir / f"t{i}.json")
        timings[-1].write_text(json.dumps({"stages": {"train_apt": seconds, "eval_apt": 30.0}}))
    return timings


@pytest.mark.parametrize(("psnr_g", "psnr_ema", "met"), [(26.2, 25.5, True), (25.4, 25.9, False)])
def test_run_record_sums_the_calls_and_judges_the_best_of_g_and_ema(tmp_path, psnr_g, psnr_ema, met):
    timings = fake_run(tmp_path / "run", psnr_g, psnr_ema)
    run = run_record(tmp_path / "run", timings)
    assert run["minutes"] == 15.5 and run["steps"] == 9000 and run["clips"] == 480 and run["batch_size"] == 2
    assert (run["psnr_bicubic"], run["psnr_g"], run["psnr_g_ema"]) == (25.0, psnr_g, psnr_ema)
    assert run["beats_bicubic_by_1db"] is met and run["gain_db"] == round(max(psnr_g, psnr_ema) - 25.0, 3)
    assert run["degrade"] == "realesrgan_video" and run["loss"]["kind"] == "rpgan_r1r2"


def test_cli_merges_run_and_ablation_into_the_report(tmp_path):
    timings = fake_run(tmp_path / "run", 25.4, 25.9)
    fake_row(tmp_path / "abl", "ns_r1", 22.0)
    (tmp_path / "abl" / "ablation.json").write_text(json.dumps(collect(tmp_path / "abl", ["ns_r1"], 600, None)))
    reports = tmp_path / "reports"
    reports.mkdir()
    (reports / "apt_gpu.json").write_text(json.dumps({"step": {"v": 1}, "run": None, "ablation": None,
                                                      "notes": {"run": "not yet", "ablation": "not yet", "x": "y"}}))
    script = str(ROOT / "benchmarks" / "apt_gpu_report.py")
    common = ["--report-dir", str(reports), "--device", "H100", "--command", "bash gpu_runs.sh", "--date", "2026-12-08"]
    proc = subprocess.run([sys.executable, script, "--run", str(tmp_path / "run"), "--timings", *map(str, timings),
                           *common], capture_output=True, text=True, cwd=ROOT)
    assert proc.returncode == 0, proc.stderr
    proc = subprocess.run([sys.executable, script, "--ablation", str(tmp_path / "abl"), *common, "--notes", "short"],
                          capture_output=True, text=True, cwd=ROOT)
    assert proc.returncode == 0, proc.stderr
    data = json.loads((reports / "apt_gpu.json").read_text())
    assert data["step"] == {"v": 1} and data["notes"] == {"x": "y"}  # merged; the "not yet" notes gone
    assert data["run"]["psnr_g_ema"] == 25.9 and data["run"]["device"] == "H100"
    assert [r["name"] for r in data["ablation"]] == ["ns_r1"] and data["ablation"][0]["psnr"] == 22.0
    md = (reports / "apt_gpu_run.md").read_text()  # the run's section survives the ablation-only call
    assert "A loss against the goal" in md and "| EMA-G | 25.900 |" in md and "| NS + R1 |" in md and "short" in md
    assert (reports / "apt_gpu_run" / "run_strip.png").read_bytes() == b"png"


def test_dvc_mode_queues_one_experiment_per_row_with_the_same_shared_sets():
    from apt_ablation import dvc_commands

    cmds = dvc_commands(["rpgan_l1", "ns_r1"], steps=600, max_minutes=None, sets=["train_apt=gpu_h200"])
    assert [c[c.index("--name") + 1] for c in cmds] == ["apt-ns-r1", "apt-rpgan-l1"]  # the paper's order
    for cmd in cmds:
        assert cmd[:4] == ["dvc", "exp", "run", "--queue"] and cmd[-1] == "eval_apt"
        sets = [cmd[i + 1] for i, arg in enumerate(cmd) if arg == "-S"]
        assert sets[:2] == ["train_apt.steps=600", "train_apt=gpu_h200"]
        assert not any(s.startswith("train_apt.max_minutes") for s in sets)
    ns_sets = [cmds[0][i + 1] for i, arg in enumerate(cmds[0]) if arg == "-S"]
    assert ns_sets[2:] == ["train_apt.loss.kind=ns_r1", "train_apt.loss.r1=1.0", "train_apt.loss.r2=0.0",
                           "train_apt.loss.recon=0.0", "train_apt.loss.fm=0.0"]
    proc = subprocess.run([sys.executable, str(ROOT / "benchmarks" / "apt_ablation.py"), "--dvc", "--dry-run",
                           "--rows", "rpgan_l1_fm", "train_apt.degrade.kind=realesrgan_video"],
                          capture_output=True, text=True, cwd=ROOT)
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.strip() == (
        "dvc exp run --queue --name apt-rpgan-l1-fm -S train_apt.degrade.kind=realesrgan_video "
        "-S train_apt.loss.kind=rpgan_r1r2 -S train_apt.loss.r1=1000.0 -S train_apt.loss.r2=1000.0 "
        "-S train_apt.loss.recon=0.1 -S train_apt.loss.fm=0.1 eval_apt")
