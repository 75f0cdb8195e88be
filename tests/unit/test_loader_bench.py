"""Loader benchmark harness on a fake in-memory loader: forced failures of every kind are failed rows with
the right kind while the run goes on, the stable rule, the report and the metrics."""
from __future__ import annotations

import json
import math

import pytest

from lib.bench.loader_bench import (
    STABLE_RULE,
    BenchLoaderConfig,
    GridPoint,
    LoaderTarget,
    classify_failure,
    dvc_metrics,
    grid_points,
    run_benchmark,
    run_point,
    select_stable,
    write_outputs,
)
from lib.config import ConfigError, from_dict
from tests.helpers import fake_loader

TARGET = LoaderTarget(factory=fake_loader.FACTORY,
                      factory_kwargs={"clips": 16, "frames": 4, "size": 16, "delay_s": 0.005},
                      decode=fake_loader.DECODE, decode_kwargs={"frames": 4, "size": 16},
                      data={"source": "fake in-memory clips"})
# one forced failure per kind on its own point; (4, 0) and (4, 1, prefetch 3) survive
FORCED = [{"batch_size": 2, "num_workers": 0, "kind": "exception"},
          {"batch_size": 2, "num_workers": 1, "prefetch_factor": 2, "kind": "worker_killed"},
          {"batch_size": 2, "num_workers": 1, "prefetch_factor": 3, "kind": "timeout"},
          {"batch_size": 4, "num_workers": 1, "prefetch_factor": 2, "kind": "bus_error"}]
SURVIVORS = {(4, 0, None), (4, 1, 3)}


def _cfg(tmp_path, **kw) -> BenchLoaderConfig:
    base = dict(out=str(tmp_path / "out"), report_dir=str(tmp_path / "report"), tmp_dir=str(tmp_path / "tmp"),
                batch_sizes=[2, 4], num_workers=[0, 1], prefetch_factors=[2, 3], burst_batches=4,
                sustained_batches=6, sustained_top_k=2, timeout_s=6.0, ceiling_clips=8, backends_compared=["decord"])
    base.update(kw)
    return BenchLoaderConfig(**base)


@pytest.fixture(scope="module")
def bench(tmp_path_factory):
    tmp_path = tmp_path_factory.mktemp("bench")
    cfg = _cfg(tmp_path, force_fail=FORCED)
    result = run_benchmark(cfg, TARGET)
    paths = write_outputs(result, cfg, TARGET)
    return cfg, result, paths


def _key(row) -> tuple:
    return row["batch_size"], row["num_workers"], row["prefetch_factor"]


def test_forced_failures_are_rows_of_their_kind_and_the_run_goes_on(bench):
    cfg, result, _ = bench
    rows = {_key(r): r for r in result["grid"]}
    assert set(rows) == {(p.batch_size, p.num_workers, p.prefetch_factor) for p in grid_points(cfg)}
    expected = {(f["batch_size"], f["num_workers"], f.get("prefetch_factor")): f["kind"] for f in FORCED}
    for key, kind in expected.items():
        assert rows[key]["status"] == "failed", rows[key]
        assert rows[key]["kind"] == kind, rows[key]
        assert rows[key]["error"]
    assert rows[(2, 1, 3)]["wall_s"] < cfg.timeout_s + 3  # killed at the limit, not waited on
    for key in SURVIVORS:
        row = rows[key]
        assert row["status"] == "ok" and row["kind"] is None, row
        assert row["batches"] == cfg.burst_batches and row["clips"] == 4 * cfg.burst_batches
        assert row["frames"] == 4 * row["clips"]
        assert row["clips_per_s"] > 0 and row["latency_p95_s"] >= 0 and row["first_batch_s"] > 0
        assert row["peak_rss_mb"] > 10


def test_stable_config_is_the_best_surviving_sustained_run(bench):
    cfg, result, paths = bench
    assert {_key(r) for r in result["sustained"]} == SURVIVORS  # top 2 of the burst = the survivors
    assert all(r["status"] == "ok" and r["batches"] == cfg.sustained_batches for r in result["sustained"])
    best = max(result["sustained"], key=lambda r: r["clips_per_s"])
    stable = json.loads(paths["stable"].read_text())
    assert (stable["batch_size"], stable["num_workers"]) == (best["batch_size"], best["num_workers"])
    assert stable["clips_per_s"] == pytest.approx(best["clips_per_s"])
    assert stable["rule"] == STABLE_RULE and stable["sharing_strategy"] == "file_system"
    assert isinstance(stable["prefetch_factor"], int)  # an int even with 0 workers: VideoLoaderConfig needs one
    assert result["ceilings"]["decord"]["status"] == "ok" and result["efficiency"] > 0


def test_stable_json_loads_in_the_video_loader_config(bench):
    video_dataset = pytest.importorskip("lib.data.video_dataset")
    _, _, paths = bench
    stable = video_dataset.load_stable_config(paths["stable"])
    cfg = video_dataset.VideoLoaderConfig().with_stable(stable)
    assert cfg.batch_size == stable["batch_size"] and cfg.num_workers == stable["num_workers"]


def test_report_marks_failed_rows_with_their_kind_and_states_the_rule(bench):
    cfg, _, paths = bench
    report = paths["report"].read_text()
    assert STABLE_RULE in report
    failed_lines = [ln for ln in report.splitlines() if "**FAILED**" in ln]
    assert len(failed_lines) == len(FORCED)
    for kind in ("exception", "worker_killed", "timeout", "bus_error"):
        assert any(f"**{kind}**" in ln for ln in failed_lines), kind
    assert cfg.sharing_strategy in report and cfg.tmp_dir in report
    assert "Decode-only ceiling" in report and "efficiency" in report
    assert paths["plot"].read_bytes()[:4] == b"\x89PNG"


def test_metrics_are_numbers_at_most_two_levels(bench):
    _, result, paths = bench
    metrics = json.loads(paths["metrics"].read_text())
    assert metrics == json.loads(json.dumps(dvc_metrics(result)))
    for value in metrics.values():
        inner = value.values() if isinstance(value, dict) else [value]
        for v in inner:
            assert isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v), metrics
    assert metrics["failed_points"] == len(FORCED) and metrics["grid_points"] == 6
    assert metrics["stable_found"] == 1 and "decord" in metrics["ceiling_clips_per_s"]


@pytest.mark.parametrize("kind", ["worker_killed", "shm_exhausted"])
def test_in_process_failures_without_workers(tmp_path, kind):
    cfg = _cfg(tmp_path, force_fail=[{"kind": kind}])
    row = run_point(TARGET, GridPoint(2, 0, None), cfg, batches=3, phase="burst")
    assert (row["status"], row["kind"]) == ("failed", kind), row
    if kind == "worker_killed":
        assert row["returncode"] == -9


def test_select_stable_on_a_hand_made_table():
    def row(bs, nw, pf, cps, status="ok", errors=0):
        return {"batch_size": bs, "num_workers": nw, "prefetch_factor": pf, "clips_per_s": cps,
                "status": status, "errors": errors}

    rows = [row(8, 2, 2, 99.0, status="failed", errors=1),  # fastest, but failed
            row(8, 2, 4, 95.0, errors=2),                    # errors are disqualifying
            row(4, 2, 4, 50.0), row(4, 2, 2, 50.0),          # tie: same workers -> smaller prefetch
            row(2, 1, 2, 50.0),                              # tie: fewer workers wins
            row(2, 0, None, 30.0)]
    assert (select_stable(rows)["batch_size"], select_stable(rows)["num_workers"]) == (2, 1)
    assert select_stable(rows[:4])["prefetch_factor"] == 2
    assert select_stable(rows[:2]) is None
    assert select_stable([]) is None


@pytest.mark.parametrize("returncode, text, timed_out, kind", [
    (None, "", True, "timeout"),
    (-7, "", False, "bus_error"),
    (1, "ERROR: Unexpected bus error encountered in worker. This might be caused by insufficient shared "
        "memory (shm)", False, "bus_error"),
    (1, "RuntimeError: unable to open shared memory object </torch_1_2> in read-write mode", False, "shm_exhausted"),
    (1, "OSError: [Errno 28] No space left on device", False, "shm_exhausted"),
    (-9, "", False, "worker_killed"),
    (1, "RuntimeError: DataLoader worker (pid 123) is killed by signal: Killed.", False, "worker_killed"),
    (1, "RuntimeError: DataLoader worker (pid(s) 123) exited unexpectedly", False, "worker_killed"),
    (1, "ValueError: a zoom of the room", False, "exception"),
])
def test_classify_failure(returncode, text, timed_out, kind):
    assert classify_failure(returncode, text, timed_out) == kind


def test_grid_has_one_point_without_workers_and_config_checks_force_fail():
    cfg = BenchLoaderConfig(batch_sizes=[2], num_workers=[0, 2], prefetch_factors=[2, 4])
    assert grid_points(cfg) == [GridPoint(2, 0, None), GridPoint(2, 2, 2), GridPoint(2, 2, 4)]
    with pytest.raises(ConfigError, match="force_fail"):
        from_dict(BenchLoaderConfig, {"force_fail": [{"batch_size": 2, "kind": "meltdown"}]})
    with pytest.raises(ConfigError, match="unknown key"):
        from_dict(BenchLoaderConfig, {"batch_size": [2]})
