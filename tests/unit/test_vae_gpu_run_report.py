"""benchmarks/vae_gpu_run_report.py: the "run" record of a (split) GPU VAE run and its verdict against bicubic."""
import json
import subprocess
import sys
from pathlib import Path

import yaml

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT / "benchmarks"))

from vae_gpu_run_report import run_record  # noqa: E402


def fake_run(tmp_path, psnr):
    phases = [{"name": f"{r}px", "steps": s} for r, s in ((256, 100), (512, 15), (1024, 1))]
    (tmp_path / "vae.yaml").write_text(yaml.safe_dump({"synth_ssv2": {"count": 144, "height": 1024},
                                                       "train_curriculum": {"curriculum": {"phases": phases}}}))
    (tmp_path / "train_curriculum_final_metrics.json").write_text(json.dumps(
        {"step": 116, "stop_reason": "curriculum", "curriculum/phase": 2.0, "val/psnr": 25.0}))
    points = {f"{r}px_{t}f": (r, t) for r, t in ((256, 8), (512, 16), (1024, 49))}
    video = {"clips": 6, "points": list(points), "train_curriculum": {"model": {}}}
    for point, (vae, base) in zip(points, psnr, strict=True):
        video["train_curriculum"][point] = {"vae": {"psnr": vae, "ssim": 0.8},
                                            "bicubic_values": {"psnr": base, "ssim": 0.7}}
    (tmp_path / "eval_vae").mkdir()
    (tmp_path / "eval_vae" / "metrics.json").write_text(json.dumps({"video": video}))
    (tmp_path / "eval_vae" / "strip_train_curriculum_256px_8f.png").write_bytes(b"png")
    for i, seconds in enumerate((300.0, 150.0)):  # a run split over two calls
        (tmp_path / f"t{i}.json").write_text(json.dumps({"stages": {"train_curriculum": seconds, "eval_vae": 9.0}}))
    return [tmp_path / "t0.json", tmp_path / "t1.json"]


def test_record_sums_the_calls_and_keys_psnr_by_resolution(tmp_path):
    timings = fake_run(tmp_path, [(31.0, 29.5), (30.2, 29.0), (29.0, 28.5)])
    run = run_record(tmp_path, timings)
    assert run["minutes"] == 7.5 and run["steps"] == 116 and run["clips"] == 144 and run["eval_clips"] == 6
    assert set(run["psnr"]) == {"256", "512", "1024"}
    assert run["psnr"]["1024"]["frames"] == 49 and run["psnr"]["512"] == {
        "vae": 30.2, "baseline": 29.0, "frames": 16, "ssim_vae": 0.8, "ssim_baseline": 0.7}
    assert run["beats_baseline_by_1db"] is False  # 1024 px gains only 0.5 dB
    assert run_record(tmp_path, timings[:1])["minutes"] == 5.0


def test_cli_writes_the_run_key_beside_the_benchmark_and_says_a_loss(tmp_path):
    (tmp_path / "run").mkdir()
    timings = fake_run(tmp_path / "run", [(20.0, 25.0)] * 3)
    reports = tmp_path / "reports"
    reports.mkdir()
    (reports / "vae_gpu.json").write_text(json.dumps({"device": "H100", "phases": [1]}))
    proc = subprocess.run([sys.executable, str(ROOT / "benchmarks/vae_gpu_run_report.py"), str(tmp_path / "run"),
                           "--report-dir", str(reports), "--timings", *map(str, timings), "--device", "H100",
                           "--command", "bash benchmarks/gpu_runs.sh", "--date", "2026-12-07"],
                          capture_output=True, text=True, cwd=ROOT)
    assert proc.returncode == 0, proc.stderr
    data = json.loads((reports / "vae_gpu.json").read_text())
    assert data["phases"] == [1] and data["run"]["psnr"]["256"]["vae"] == 20.0  # merged, not replaced
    md = (reports / "vae_gpu_run.md").read_text()
    assert "A loss against the goal" in md and "| 256 px | 8 | 20.00 | 25.00 | -5.00 |" in md
    assert (reports / "vae_gpu_run/strip_train_curriculum_256px_8f.png").read_bytes() == b"png"
