"""benchmarks/apt_ablation.py end to end on CPU: two rows (one per loss kind) train and evaluate through the stages
on a tiny manifest, side by side, and ablation.json holds their scores against the same bicubic baseline."""
import json
import subprocess
import sys
from pathlib import Path

import yaml

from tests.stages.test_apt_stages import tiny_manifest

ROOT = Path(__file__).resolve().parents[2]


def test_two_rows_train_and_evaluate_side_by_side(tmp_path):
    tiny_manifest(tmp_path / "interim")  # + a passed validate_ssv2 under tmp_path/reports
    base = {  # absolute paths: run_stages.py runs the stages in the repository root
        "ingest_ssv2": {"out": str(tmp_path / "interim"), "expected_height": 64},
        "validate_ssv2": {"report_dir": str(tmp_path / "reports" / "validate_ssv2")},
        "train_apt": {"steps": 9, "batch_size": 2, "warmup_steps": 1, "checkpoint_every": 50, "log_every": 1,
                      "model": {"scale": 4, "channels": 8, "blocks": 1}, "disc_channels": 8, "degrade": {"scale": 4},
                      "crop": 32, "clip_frames": 4, "clip_stride": 1, "val_clips": 2, "loss": {"r1_every": 2}},
        "eval_apt": {"strip_clips": 1, "batch_size": 2},
    }
    (tmp_path / "base.yaml").write_text(yaml.safe_dump(base))
    proc = subprocess.run([sys.executable, str(ROOT / "benchmarks" / "apt_ablation.py"), str(tmp_path / "abl"),
                           "--params", str(tmp_path / "base.yaml"), "--steps", "3", "--rows", "rpgan_l1_fm,ns_r1",
                           "--parallel", "2", "--loader-workers", "0"], capture_output=True, text=True, cwd=ROOT)
    logs = "".join(p.read_text()[-2000:] for p in (tmp_path / "abl").glob("*/run.log"))
    assert proc.returncode == 0, proc.stdout + proc.stderr + logs
    result = json.loads((tmp_path / "abl" / "ablation.json").read_text())
    assert [r["name"] for r in result["rows"]] == ["ns_r1", "rpgan_l1_fm"] and result["steps"] == 3
    ns, final = result["rows"]
    for row in (ns, final):
        assert "error" not in row and row["steps"] == 3 and row["stop_reason"] == "steps"
        assert 0 < row["ssim"] <= 1 and row["psnr"] > 5 and row["temporal_error"] >= 0
    assert ns["bicubic"] == final["bicubic"]  # the same held-out clips and degradations in every row
    assert ns["psnr"] != final["psnr"]  # different losses, different generators
    trained = yaml.safe_load((tmp_path / "abl" / "ns_r1" / "params.yaml").read_text())["train_apt"]["loss"]
    assert (trained["kind"], trained["recon"], trained["r1_every"]) == ("ns_r1", 0.0, 2)
    assert "NS + R1" in proc.stdout and "+ L1 + FM" in proc.stdout
