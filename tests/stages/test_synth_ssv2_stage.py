"""`python -m stages.synth_ssv2` on tiny params: writes SSv2's layout that ingestion accepts whole."""
import json

import yaml

from lib.ssv2.ingest import IngestSSv2Config, merge_shards, run_shard
from tests.helpers.workspace import run_stage_module


def stage(args, cwd):
    return run_stage_module("synth_ssv2", args, cwd)


def test_help_describes_the_stage(tmp_path):
    out = stage(["--help"], tmp_path).stdout
    assert "20bn-something-something-v2" in out and "--params" in out


def test_tiny_dataset_is_written_and_ingests_clean(tmp_path):
    params = {"synth_ssv2": {"out": "raw", "count": 8, "min_per_class": 2, "height": 48, "widths": [64],
                             "min_seconds": 1.0, "max_seconds": 1.2, "workers": 2,
                             "templates": ["Moving something down", "Something falling like a rock",
                                           "Uncovering something"]}}
    (tmp_path / "params.yaml").write_text(yaml.safe_dump(params))
    proc = stage(["--no-progress"], tmp_path)
    assert proc.returncode == 0, proc.stderr
    assert "writing 8 videos of 3 classes" in proc.stderr
    assert len(list((tmp_path / "raw/20bn-something-something-v2").glob("*.webm"))) == 8
    labels = {n: json.loads((tmp_path / "raw/labels" / f"{n}.json").read_text())
              for n in ("train", "validation", "test")}
    assert sum(len(v) for v in labels.values()) == 8

    cfg = IngestSSv2Config(out=str(tmp_path / "out"), shards=1, expected_height=48, min_seconds=0.5)
    run_shard(tmp_path / "raw", cfg, 0, progress=False)
    summary = merge_shards(tmp_path / "raw", cfg)
    assert summary["videos"] == 8 and summary["quarantined"] == 0
