"""`python -m stages.bench_loader` on a tiny ingested SSv2 set: a forced failing point is a failed row, the
stage still succeeds, and the stable configuration trainers read is the surviving one."""
import json

import yaml

from lib.data.video_dataset import load_stable_config
from lib.ssv2.ingest import IngestSSv2Config, merge_shards, run_shard
from tests.helpers.ssv2_data import H, make_good_root
from tests.helpers.workspace import run_stage_module


def test_tiny_grid_with_a_forced_failure(tmp_path):
    make_good_root(tmp_path / "root", n_per_class=3)
    ingest = IngestSSv2Config(out=str(tmp_path / "interim"), shards=1, expected_height=H)
    run_shard(tmp_path / "root", ingest, 0, progress=False)
    merge_shards(tmp_path / "root", ingest)
    params = {"ingest_ssv2": {"out": "interim", "expected_height": H},
              "bench_loader": {"out": "loader", "report_dir": "report", "tmp_dir": "loader/tmp",
                               "batch_sizes": [2], "num_workers": [0, 1], "burst_batches": 3,
                               "sustained_batches": 4, "sustained_top_k": 2, "ceiling_clips": 4,
                               "backends_compared": ["decord", "pyav"], "clip_frames": 4, "clip_stride": 1,
                               "force_fail": [{"batch_size": 2, "num_workers": 1, "kind": "worker_killed"}]}}
    (tmp_path / "params.yaml").write_text(yaml.safe_dump(params))
    proc = run_stage_module("bench_loader", ["--no-progress"], tmp_path)
    assert proc.returncode == 0, proc.stderr[-2000:]

    stable = load_stable_config(tmp_path / "loader/stable.json")
    assert (stable["batch_size"], stable["num_workers"]) == (2, 0)  # the forced failure can't be chosen
    metrics = json.loads((tmp_path / "report/metrics.json").read_text())
    assert json.dumps(metrics)  # numbers only, written
    report = (tmp_path / "report/report.md").read_text()
    assert "worker_killed" in report and "failed" in report
    assert (tmp_path / "report/throughput.png").stat().st_size > 0
