"""Snakemake fan-out of SSv2 ingestion in a temporary clone: dry run, real run, kill and resume; shards that carry
their digest (no trust in .snakemake/, nor in what `dvc checkout` left); one run per fan-out root at a time."""
import json
import os
import re
import shutil
import signal
import subprocess
import time

import pandas as pd
import pyarrow.parquet as pq
import pytest

from lib.locks import exclusive
from tests.helpers.ssv2_data import TEMPLATES, entry, make_good_root
from tests.helpers.workspace import run, run_stage_module, set_params, venv_env

pytestmark = pytest.mark.pipeline
SNAKE = ["snakemake", "ingest_ssv2", "--cores", "2", "--rerun-incomplete", "--nolock"]


@pytest.fixture
def ssv2_clone(clone):
    ids = make_good_root(clone / "data/raw/ssv2_synth", n_per_class=3)
    set_params(clone, {"ingest_ssv2": {"shards": 6}})
    return clone, ids


def shard_files(clone):
    d = clone / "data/interim/ssv2/shards"
    return sorted(p.name for p in d.glob("shard-*.parquet")) if d.is_dir() else []


def shards_by_index(clone):
    """{index: (file name, mtime)} of the shard files (shard-00003-<digest>.parquet)."""
    d = clone / "data/interim/ssv2/shards"
    return {int(re.match(r"shard-(\d+)", p.name)[1]): (p.name, p.stat().st_mtime_ns) for p in d.glob("shard-*.parquet")}


def planned_files(clone):
    """The shard files the clone's current plan asks for (`python -m stages.ingest_ssv2 plan`)."""
    out = run(["python", "-m", "stages.ingest_ssv2", "plan"], clone).stdout
    return sorted(json.loads(out)["shard_files"])


def manifest_sizes(clone):
    m = pd.read_parquet(clone / "data/interim/ssv2/manifest.parquet")
    return set(zip(m["width"], m["height"], strict=True))


def test_dry_run_lists_every_shard_and_the_merge(ssv2_clone):
    clone, _ = ssv2_clone
    out = run(SNAKE + ["-n"], clone).stdout
    counts = {p[0]: p[1] for p in (line.split() for line in out.splitlines()) if len(p) == 2}
    assert counts.get("ssv2_shard") == "6" and counts.get("ssv2_merge") == "1"  # the "Job stats" table
    assert not (clone / "data/interim/ssv2").exists()  # a dry run writes nothing


def test_real_run_then_nothing_to_do_then_one_shard_after_a_change(ssv2_clone):
    clone, ids = ssv2_clone
    run(SNAKE, clone)
    manifest = pd.read_parquet(clone / "data/interim/ssv2/manifest.parquet")
    assert sorted(manifest["id"], key=int) == sorted(ids, key=int)
    assert len(shard_files(clone)) == 6
    assert "Nothing to be done" in run(SNAKE + ["-n"], clone).stdout + run(SNAKE + ["-n"], clone).stderr

    # replace one video: only the shard that holds it (and the merge) rerun, under a new name
    from lib.shards import shard_of
    from tests.helpers.ssv2_data import write_good
    before = shards_by_index(clone)
    write_good(clone / "data/raw/ssv2_synth", ids[0], n=30)
    run(SNAKE, clone)
    after = shards_by_index(clone)
    rerun = sorted(i for i in before if before[i] != after[i])
    assert rerun == [shard_of(ids[0], 6)] and before[rerun[0]][0] != after[rerun[0]][0]
    assert shard_files(clone) == planned_files(clone)  # the replaced shard's old file is gone
    manifest = pd.read_parquet(clone / "data/interim/ssv2/manifest.parquet")
    assert manifest.set_index("id").loc[ids[0], "probe_frames"] == 30

    # a label entry without its video changes only the plan's quarantine: the merge alone reruns, even without
    # Snakemake's metadata
    shutil.rmtree(clone / ".snakemake")
    labels = clone / "data/raw/ssv2_synth/labels/train.json"
    labels.write_text(json.dumps([*json.loads(labels.read_text()), entry("999", TEMPLATES[0])]))
    log = run(SNAKE, clone)
    assert (log.stdout + log.stderr).count("rule ssv2_shard:") == 0
    assert (log.stdout + log.stderr).count("rule ssv2_merge:") == 1
    quarantine = json.loads((clone / "data/interim/ssv2/quarantine.json").read_text())
    assert [(q["id"], q["reason"]) for q in quarantine] == [("999", "missing_video")]

    # a comment changes no code: nothing reruns; a change to code the stage imports (ssv2/layout.py, which the
    # old hand-written module list missed) reruns every shard, although no video or param changed
    with open(clone / "lib/ssv2/layout.py", "a") as fh:
        fh.write("\n# a comment\n")
    assert "Nothing to be done" in run(SNAKE + ["-n"], clone).stdout
    with open(clone / "lib/ssv2/layout.py", "a") as fh:
        fh.write("\nUNUSED_BY_INGEST = 1\n")
    out = run(SNAKE, clone)
    assert (out.stdout + out.stderr).count("rule ssv2_shard:") == 6


def test_killed_run_resumes_with_only_the_missing_shards(ssv2_clone):
    clone, ids = ssv2_clone
    proc = subprocess.Popen(SNAKE[:2] + ["--cores", "1", "--rerun-incomplete", "--nolock"], cwd=clone,
                            env=venv_env(), stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                            start_new_session=True)
    # Kill once two shards are finished and recorded, i.e. the next shard's job has started (its log
    # exists): one job in flight, its output not yet written.
    logs = clone / "logs/ingest_ssv2"
    deadline = time.time() + 120
    while time.time() < deadline and proc.poll() is None:
        started = len(list(logs.glob("shard-*.log"))) if logs.is_dir() else 0
        if len(shard_files(clone)) >= 2 and started > len(shard_files(clone)):
            break
        time.sleep(0.02)
    os.killpg(proc.pid, signal.SIGKILL)  # no clean-up at all: the harshest interruption
    proc.wait()
    done = shard_files(clone)
    assert 2 <= len(done) < 6, f"kill landed outside the run ({len(done)} shards done)"
    assert not (clone / "data/interim/ssv2/manifest.parquet").exists()
    stamps = {n: (clone / "data/interim/ssv2/shards" / n).stat().st_mtime_ns for n in done}

    log = run(SNAKE, clone)
    assert len(shard_files(clone)) == 6
    for n, t in stamps.items():  # finished shards were not redone
        assert (clone / "data/interim/ssv2/shards" / n).stat().st_mtime_ns == t
    assert (log.stdout + log.stderr).count("rule ssv2_shard:") == 6 - len(done)
    summary = json.loads((clone / "data/interim/ssv2/summary.json").read_text())
    assert summary["videos"] == len(ids) and summary["quarantined"] == 0
    # no temp litter from the killed job survives in the outputs
    litter = [p for p in (clone / "data/interim/ssv2").rglob(".*tmp-*")]
    assert litter == []


@pytest.fixture
def small_clone(clone):
    make_good_root(clone / "data/raw/ssv2_synth", n_per_class=1)  # 8 videos, 96x64
    set_params(clone, {"ingest_ssv2": {"shards": 3}})
    return clone


def test_a_param_change_reruns_every_shard_without_snakemake_metadata(small_clone):
    clone = small_clone
    run(SNAKE, clone)
    assert manifest_sizes(clone) == {(96, 64)}
    before = shards_by_index(clone)
    shutil.rmtree(clone / ".snakemake")  # what a fresh checkout, or a wiped .snakemake/, leaves
    set_params(clone, {"ingest_ssv2": {"short_side": 32}})
    log = run(SNAKE, clone)
    assert manifest_sizes(clone) == {(48, 32)}
    assert (log.stdout + log.stderr).count("rule ssv2_shard:") == 3
    after = shards_by_index(clone)
    assert sorted(after) == [0, 1, 2] and all(after[i][0] != before[i][0] for i in range(3))
    assert shard_files(clone) == planned_files(clone)


def test_dvc_checkout_of_an_older_experiment_then_repro_with_newer_params(clone):
    def commit(message):
        run(["git", "add", "-A"], clone)
        run(["git", "-c", "user.email=t@t", "-c", "user.name=t", "commit", "-qm", message], clone)
        return run(["git", "rev-parse", "HEAD"], clone).stdout.strip()

    set_params(clone, {"ingest_ssv2": {"short_side": 32}})
    run(["dvc", "repro", "ingest_ssv2"], clone)
    exp_a = commit("params A")
    set_params(clone, {"ingest_ssv2": {"short_side": 48}})
    run(["dvc", "repro", "ingest_ssv2"], clone)
    commit("params B")
    params_b = (clone / "params.yaml").read_text()

    run(["git", "checkout", "-q", exp_a], clone)
    run(["dvc", "checkout", "ingest_ssv2"], clone)
    assert manifest_sizes(clone) == {(48, 32)}  # A's outputs are back, Snakemake's metadata says B
    (clone / "params.yaml").write_text(params_b)
    run(["dvc", "repro", "ingest_ssv2"], clone)
    assert manifest_sizes(clone) == {(72, 48)}
    files = shard_files(clone)
    assert files == planned_files(clone)
    for name in files:  # each shard holds the digest its name says
        meta = pq.read_schema(clone / "data/interim/ssv2/shards" / name).metadata
        assert name.endswith(f"-{meta[b'shard_digest'].decode()}.parquet")


def test_a_second_run_on_a_locked_root_fails_naming_the_holder(small_clone):
    clone = small_clone
    with exclusive(clone / "data/interim/ssv2", "test"):
        proc = run(SNAKE, clone, check=False)
        assert proc.returncode != 0
        assert f"data/interim/ssv2: ingest_ssv2 fan-out root is in use by pid {os.getpid()}" in proc.stderr
        assert shard_files(clone) == []  # no job started
        direct = run_stage_module("ingest_ssv2", ["--no-progress", "run"], clone)
        assert direct.returncode == 1 and f"in use by pid {os.getpid()}" in direct.stderr
        assert "Traceback" not in direct.stderr
    run(SNAKE, clone)  # released: the next run goes through
    assert len(shard_files(clone)) == 3
