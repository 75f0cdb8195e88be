"""Snakemake fan-out of SSv2 ingestion in a temporary clone: dry run, real run, kill and resume."""
import json
import os
import signal
import subprocess
import time

import pandas as pd
import pytest

from tests.helpers.ssv2_data import make_good_root
from tests.helpers.workspace import run, set_params, venv_env

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

    # replace one video: only the shard that holds it (and the merge) rerun
    from lib.shards import shard_name, shard_of
    from tests.helpers.ssv2_data import write_good
    before = {n: (clone / "data/interim/ssv2/shards" / n).stat().st_mtime_ns for n in shard_files(clone)}
    write_good(clone / "data/raw/ssv2_synth", ids[0], n=30)
    run(SNAKE, clone)
    after = {n: (clone / "data/interim/ssv2/shards" / n).stat().st_mtime_ns for n in shard_files(clone)}
    rerun = sorted(n for n in before if before[n] != after[n])
    assert rerun == [shard_name(shard_of(ids[0], 6))]
    manifest = pd.read_parquet(clone / "data/interim/ssv2/manifest.parquet")
    assert manifest.set_index("id").loc[ids[0], "probe_frames"] == 30

    # a change to the probing code reruns every shard, although no video or param changed
    with open(clone / "lib/video/probe.py", "a") as fh:
        fh.write("\n# changed\n")
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
