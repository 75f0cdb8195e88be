"""`python -m stages.ingest_ssv2` on tiny data: help, plan, run, and a clear error on a bad param."""
import json
import shutil

import pandas as pd
import yaml

from tests.helpers.ssv2_data import H, make_bad_root
from tests.helpers.workspace import run_stage_module


def stage(args, cwd):
    return run_stage_module("ingest_ssv2", args, cwd)


def write_params(tmp_path, **ingest):
    params = {"ssv2": {"root": "root"},
              "ingest_ssv2": {"out": "out", "shards": 2, "expected_height": H, **ingest}}
    (tmp_path / "params.yaml").write_text(yaml.safe_dump(params))


def test_help_explains_the_subcommands(tmp_path):
    out = stage(["--help"], tmp_path).stdout
    assert "snakemake --cores 8 ingest_ssv2" in out and "shard" in out and "merge" in out


def test_plan_then_run_on_bad_corpus(tmp_path):
    good, cases = make_bad_root(tmp_path / "root", tmp_path / "outside")
    write_params(tmp_path)
    plan = stage(["plan"], tmp_path)
    assert plan.returncode == 0, plan.stderr
    assert json.loads(plan.stdout)["quarantine"]["missing_video"] == 1
    assert not (tmp_path / "out").exists()  # plan writes nothing
    proc = stage(["--no-progress", "run"], tmp_path)
    assert proc.returncode == 0, proc.stderr
    summary = json.loads((tmp_path / "out/summary.json").read_text())
    assert summary["videos"] == len(good) and summary["quarantined"] == len(cases) + 1
    assert proc.stderr.count("item(s) from the run's plan") == 2  # planned once, each shard read its slice
    assert not list((tmp_path / "out/shards").glob(".slices/*"))  # the merge removed the slices


def test_run_with_jobs_equals_run_in_one_process(tmp_path):
    make_bad_root(tmp_path / "root", tmp_path / "outside")
    write_params(tmp_path)
    assert stage(["--no-progress", "run"], tmp_path).returncode == 0
    one = pd.read_parquet(tmp_path / "out/manifest.parquet")
    one_summary = (tmp_path / "out/summary.json").read_text()
    shutil.rmtree(tmp_path / "out")
    proc = stage(["--no-progress", "run", "--jobs", "2"], tmp_path)
    assert proc.returncode == 0, proc.stderr
    pd.testing.assert_frame_equal(pd.read_parquet(tmp_path / "out/manifest.parquet"), one)
    assert (tmp_path / "out/summary.json").read_text() == one_summary
    assert proc.stderr.count("item(s) from the run's plan") == 2  # the shard processes read the parent's plan
    assert len(list((tmp_path / "out/shards").glob("shard-*.parquet"))) == 2


def test_bad_param_fails_before_work_naming_the_key(tmp_path):
    write_params(tmp_path, shardz=3)
    proc = stage(["run"], tmp_path)
    assert proc.returncode == 1
    assert "ingest_ssv2.shardz: unknown key; did you mean 'shards'?" in proc.stderr


def test_shard_index_out_of_range_is_refused(tmp_path):
    make_bad_root(tmp_path / "root", tmp_path / "outside")
    write_params(tmp_path)
    proc = stage(["shard", "--index", "5"], tmp_path)
    assert proc.returncode == 2 and "outside 0..1" in proc.stderr  # a usage error, as argparse reports them


def test_malformed_label_file_is_a_clear_error_naming_it(tmp_path):
    make_bad_root(tmp_path / "root", tmp_path / "outside")
    (tmp_path / "root/labels/validation.json").write_text('[{"id": "1",')
    write_params(tmp_path)
    proc = stage(["run"], tmp_path)
    assert proc.returncode == 1
    assert "root/labels/validation.json: not valid JSON" in proc.stderr and "Traceback" not in proc.stderr
