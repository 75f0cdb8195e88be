"""Data-loader benchmark: a grid of (batch size, workers, prefetch) points, each timed in its own process.

Generic over the loader: a :class:`LoaderTarget` names a factory ``"module:function"`` that builds an
iterable of batches (``{"video": [B, C, T, H, W], ...}``) and, for the decode-only ceiling, a function
that decodes one clip. Both are imported by name in the child processes, so anything importable
works (the SSv2 loader in :mod:`lib.bench.ssv2_loader`, a fake one in the tests).

Phases: a short burst of ``burst_batches`` for every grid point; a sustained run of
``sustained_batches`` for the ``sustained_top_k`` fastest burst points; the stable configuration
(:data:`STABLE_RULE`) from the sustained runs; then the decode-only ceiling per backend (a process
pool of ``os.cpu_count()`` workers decoding the same clips with no DataLoader). A point whose child
crashes, hangs or raises becomes a row with status "failed" and a failure kind; the run goes on.
"""
from __future__ import annotations

import contextlib
import json
import logging
import math
import os
import shutil
import signal
import subprocess
import sys
import time
from concurrent.futures import ProcessPoolExecutor
from dataclasses import asdict, dataclass, field
from multiprocessing import get_context
from pathlib import Path
from typing import Annotated, Any, Literal

import numpy as np
import psutil
from annotated_types import Ge, Gt, MinLen
from matplotlib.figure import Figure

from lib.bench.loader_child import decode_task, init_pool, warm_task
from lib.config import Checked, load_section
from lib.data.video_dataset import load_stable_config
from lib.io import atomic_write_json, atomic_write_text
from lib.report import fmt_num, md_cell, new_figure, no_data, save_figure, shorten

log = logging.getLogger("bench_loader")

FAILURE_KINDS = ("worker_killed", "bus_error", "shm_exhausted", "timeout", "exception")
FORCE_FAIL_KEYS = ("batch_size", "num_workers", "prefetch_factor", "phase", "kind")
PHASES = ("burst", "sustained")
STABLE_RULE = ("highest sustained clips/s among sustained runs with zero errors; "
               "ties -> fewer workers, then smaller prefetch factor")
RSS_SAMPLE_S = 0.1  # how often the parent samples the child's process tree for peak RSS
REPO_ROOT = Path(__file__).resolve().parents[2]
PLOT_FILE = "throughput.png"
REPORT_FILE = "report.md"
METRICS_FILE = "metrics.json"
STABLE_FILE = "stable.json"
RESULTS_FILE = "results.json"

# substrings of a failed point's error text / stderr (lower case), checked in this order after timeout
_BUS_PATTERNS = ("bus error",)
_SHM_PATTERNS = ("shared memory", "no space left on device", "shm_open", "/dev/shm", "(shm)",
                 "unable to write to file </torch_", "unable to open shared memory")
_KILLED_PATTERNS = ("is killed by signal", "exited unexpectedly", "out of memory", "oom-kill", "oom killer")


PositiveInts = Annotated[list[Annotated[int, Ge(1)]], MinLen(1)]


@dataclass(frozen=True)
class BenchLoaderConfig(Checked):
    """``bench_loader`` params: the grid, phase lengths, process settings and forced failures (tests)."""

    out: str = "data/loader"  # stable.json (read by trainers) and results.json
    report_dir: str = "reports/bench_loader"
    backend: str = "decord"  # decode backend of the loader under test
    backends_compared: list[str] = field(default_factory=lambda: ["decord", "pyav"])  # decode-only ceilings
    batch_sizes: PositiveInts = field(default_factory=lambda: [2, 4, 8])
    num_workers: Annotated[list[Annotated[int, Ge(0)]], MinLen(1)] = field(default_factory=lambda: [0, 1, 2])
    prefetch_factors: PositiveInts = field(default_factory=lambda: [2])  # only for num_workers > 0
    burst_batches: Annotated[int, Ge(1)] = 8
    sustained_batches: Annotated[int, Ge(1)] = 40
    sustained_top_k: Annotated[int, Ge(0)] = 2
    timeout_s: Annotated[float, Gt(0)] = 120.0  # per grid point, start-up included
    # torch.multiprocessing sharing strategy of each point
    sharing_strategy: Literal["file_system", "file_descriptor"] = "file_system"
    tmp_dir: str = "data/loader/tmp"  # TMPDIR of each point (and its request/log files)
    ceiling_clips: Annotated[int, Ge(1)] = 256
    clip_frames: Annotated[int, Ge(1)] = 8  # clip spec of the loader and the ceiling
    clip_stride: Annotated[int, Ge(1)] = 2
    split: str = "train"  # manifest split the loader reads
    seed: int = 0
    # e.g. {batch_size: 2, num_workers: 1, kind: worker_killed}
    force_fail: list[dict[str, Any]] = field(default_factory=list)

    def __post_init__(self) -> None:
        super().__post_init__()
        for i, entry in enumerate(self.force_fail):
            unknown = set(entry) - set(FORCE_FAIL_KEYS)
            if unknown or entry.get("kind") not in FAILURE_KINDS:
                raise ValueError(f"force_fail[{i}] = {entry}: needs kind in {FAILURE_KINDS} and only keys "
                                 f"{FORCE_FAIL_KEYS}")
            if entry.get("phase", "burst") not in PHASES:
                raise ValueError(f"force_fail[{i}].phase must be one of {PHASES}, got {entry['phase']!r}")

    def ceiling_backends(self) -> list[str]:
        """Return the backends whose decode-only ceiling is measured: ``backends_compared`` plus ``backend``."""
        return list(dict.fromkeys([*self.backends_compared, self.backend]))


@dataclass(frozen=True)
class LoaderTarget:
    """What is benchmarked, by importable name so child processes can rebuild it.

    ``factory(batch_size=, num_workers=, prefetch_factor=, backend=, **factory_kwargs)`` returns an
    iterable of batches; ``decode(index, backend, **decode_kwargs)`` decodes clip ``index`` without a
    DataLoader and returns its frame count (None: no ceiling). ``data`` describes the data for the report.
    """

    factory: str
    factory_kwargs: dict[str, Any] = field(default_factory=dict)
    decode: str | None = None
    decode_kwargs: dict[str, Any] = field(default_factory=dict)
    data: dict[str, Any] = field(default_factory=dict)


@dataclass(frozen=True)
class GridPoint:
    """One loader setting; ``prefetch_factor`` is None when ``num_workers`` is 0 (DataLoader requires it)."""

    batch_size: int
    num_workers: int
    prefetch_factor: int | None

    @property
    def name(self) -> str:
        """Return a short file-safe name such as ``b4_w2_p2``."""
        return f"b{self.batch_size}_w{self.num_workers}_p{self.prefetch_factor or 0}"


def grid_points(cfg: BenchLoaderConfig) -> list[GridPoint]:
    """Return the burst grid: every batch size x workers x prefetch factor (one point for 0 workers)."""
    points = []
    for bs in cfg.batch_sizes:
        for nw in cfg.num_workers:
            for pf in (cfg.prefetch_factors if nw > 0 else [None]):
                points.append(GridPoint(bs, nw, pf))
    return list(dict.fromkeys(points))


def forced_failure(cfg: BenchLoaderConfig, point: GridPoint, phase: str) -> str | None:
    """Return the failure kind ``cfg.force_fail`` sets for ``point`` in ``phase`` (an entry without a
    phase applies to both), or None."""
    values = {**asdict(point), "phase": phase}
    for entry in cfg.force_fail:
        if all(values[k] == v for k, v in entry.items() if k != "kind"):
            return entry["kind"]
    return None


def classify_failure(returncode: int | None, text: str, timed_out: bool) -> str:
    """Return the failure kind of a point from its child's exit status, error text and stderr tail.

    timeout (killed at ``timeout_s``) > bus_error (SIGBUS, "Bus error") > shm_exhausted (shared memory,
    "No space left on device") > worker_killed (SIGKILL / OOM, DataLoader "worker ... is killed by
    signal" or "exited unexpectedly") > exception (anything else).
    """
    low = text.lower()
    if timed_out:
        return "timeout"
    if returncode == -signal.SIGBUS or any(p in low for p in _BUS_PATTERNS):
        return "bus_error"
    if any(p in low for p in _SHM_PATTERNS):
        return "shm_exhausted"
    if returncode in (-signal.SIGKILL, 128 + signal.SIGKILL) or any(p in low for p in _KILLED_PATTERNS):
        return "worker_killed"
    return "exception"


def latency_stats(latencies: list[float], clips: list[int], frames: list[int]) -> dict[str, float]:
    """Return throughput and latency figures from per-batch waits, clips and frames; the first batch (worker
    start-up) is reported alone and left out of clips/s, frames/s and the mean/p95 (unless it is the only one)."""
    lat = np.asarray(latencies, dtype=float)
    skip = 1 if lat.size > 1 else 0
    steady = lat[skip:]
    seconds = float(steady.sum())
    return {
        "clips_per_s": sum(clips[skip:]) / seconds if seconds > 0 else math.nan,
        "frames_per_s": sum(frames[skip:]) / seconds if seconds > 0 else math.nan,
        "first_batch_s": float(lat[0]),
        "latency_mean_s": float(steady.mean()),
        "latency_p95_s": float(np.percentile(steady, 95)),
    }


def _tree_rss(proc: psutil.Process) -> int:
    """Return the summed RSS (bytes) of ``proc`` and all its descendants (pages shared between them count
    once per process)."""
    try:
        procs = [proc, *proc.children(recursive=True)]
    except psutil.Error:
        return 0
    total = 0
    for p in procs:
        with contextlib.suppress(psutil.Error):
            total += p.memory_info().rss
    return total


def _kill_group(pgid: int) -> None:
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(pgid, signal.SIGKILL)


def _import_paths() -> list[str]:
    """Where child processes look for the factory modules first: the repository root and the working directory."""
    return list(dict.fromkeys([str(REPO_ROOT), os.getcwd()]))


def _child_env(tmp_dir: Path) -> dict[str, str]:
    env = dict(os.environ)
    env["TMPDIR"] = str(tmp_dir)
    path = [*_import_paths(), *filter(None, env.get("PYTHONPATH", "").split(os.pathsep))]
    env["PYTHONPATH"] = os.pathsep.join(dict.fromkeys(path))
    return env


def run_point(target: LoaderTarget, point: GridPoint, cfg: BenchLoaderConfig, *, batches: int,
              phase: str) -> dict[str, Any]:
    """Time ``batches`` batches of ``point`` in a child process (``python -m lib.bench.loader_child``) in a
    session of its own, killed as a whole at ``cfg.timeout_s``; return the row for the results table.

    The row has the point, phase, status ("ok" / "failed"), kind (a :data:`FAILURE_KINDS` entry or None),
    error, batches, clips, frames, clips/s, frames/s, first-batch and mean/p95 latency (s), peak RSS
    of the child and its workers (MiB, sampled every :data:`RSS_SAMPLE_S`), wall time and exit status.
    """
    tmp_dir = Path(cfg.tmp_dir).resolve()
    work = tmp_dir / "points" / f"{phase}_{point.name}"
    work.mkdir(parents=True, exist_ok=True)
    result_path = work / "result.json"
    result_path.unlink(missing_ok=True)
    request = {"factory": target.factory, "kwargs": target.factory_kwargs, "point": asdict(point),
               "backend": cfg.backend, "batches": batches, "sharing_strategy": cfg.sharing_strategy,
               "tmp_dir": str(tmp_dir), "fail": forced_failure(cfg, point, phase),
               "result_path": str(result_path)}
    (work / "request.json").write_text(json.dumps(request, indent=1))
    row: dict[str, Any] = {"phase": phase, **asdict(point), "backend": cfg.backend, "status": "ok", "kind": None,
                           "error": None, "errors": 0, "forced": request["fail"], "log_dir": work.name}
    peak = 0
    timed_out = False
    start = time.monotonic()
    with open(work / "stdout.log", "wb") as out, open(work / "stderr.log", "wb") as err:
        proc = subprocess.Popen([sys.executable, "-m", "lib.bench.loader_child", str(work / "request.json")],
                                stdout=out, stderr=err, env=_child_env(tmp_dir), start_new_session=True)
        ps = psutil.Process(proc.pid)
        try:
            while True:
                peak = max(peak, _tree_rss(ps))
                try:
                    proc.wait(timeout=RSS_SAMPLE_S)
                    break
                except subprocess.TimeoutExpired:
                    pass
                if time.monotonic() - start > cfg.timeout_s:
                    timed_out = True
                    _kill_group(proc.pid)
                    proc.wait()
                    break
        finally:
            _kill_group(proc.pid)  # orphaned DataLoader workers of a crashed child
            if proc.poll() is None:
                proc.kill()
                proc.wait()
    row["wall_s"] = time.monotonic() - start
    row["returncode"] = proc.returncode
    row["peak_rss_mb"] = peak / 2**20
    result = json.loads(result_path.read_text()) if result_path.is_file() else None
    if result is not None and result["status"] == "ok" and not timed_out:
        row.update(batches=result["batches"], clips=sum(result["clips"]), frames=sum(result["frames"]),
                   epochs=result["epochs"], **latency_stats(result["latencies_s"], result["clips"], result["frames"]))
        return row
    stderr_tail = (work / "stderr.log").read_bytes()[-4000:].decode("utf-8", "replace")
    message = result["error"] if result else ""
    if timed_out:
        message = f"no result after {cfg.timeout_s:g} s; killed"
    elif not message:
        lines = [ln for ln in stderr_tail.splitlines() if ln.strip()]
        message = lines[-1] if lines else ""
        if proc.returncode is not None and proc.returncode < 0:
            message = f"child killed by {signal.Signals(-proc.returncode).name}" + (f": {message}" if message else "")
    kind = classify_failure(proc.returncode, f"{message}\n{stderr_tail}", timed_out)
    if classify_failure(proc.returncode, message, timed_out) != kind:  # the kind shows only in stderr: quote it
        message += f" | stderr: {evidence_line(stderr_tail, kind)}"
    row.update(status="failed", errors=1, error=message, kind=kind)
    return row


def evidence_line(text: str, kind: str) -> str:
    """Return the first line of ``text`` holding one of ``kind``'s patterns (the last line when none does)."""
    patterns = {"bus_error": _BUS_PATTERNS, "shm_exhausted": _SHM_PATTERNS, "worker_killed": _KILLED_PATTERNS}
    lines = [ln.strip() for ln in text.splitlines() if ln.strip()]
    for ln in lines:
        if any(p in ln.lower() for p in patterns.get(kind, ())):
            return ln
    return lines[-1] if lines else ""


def rank_key(row: dict[str, Any]) -> tuple:
    """Sort key: fastest first; ties -> fewer workers, then smaller prefetch factor."""
    return (-row["clips_per_s"], row["num_workers"], row["prefetch_factor"] or 0)


def select_stable(rows: list[dict[str, Any]]) -> dict[str, Any] | None:
    """Return the row :data:`STABLE_RULE` picks from ``rows`` (sustained runs), or None when no row has
    status "ok" and zero errors."""
    ok = [r for r in rows if r.get("status") == "ok" and not r.get("errors") and not math.isnan(r["clips_per_s"])]
    return min(ok, key=rank_key) if ok else None


def top_points(rows: list[dict[str, Any]], k: int) -> list[GridPoint]:
    """Return the ``k`` successful points of ``rows`` with the highest clips/s (ties as in :func:`rank_key`)."""
    ok = sorted((r for r in rows if r["status"] == "ok" and not r["errors"]), key=rank_key)
    return [GridPoint(r["batch_size"], r["num_workers"], r["prefetch_factor"]) for r in ok[:k]]


def decode_ceiling(target: LoaderTarget, backends: list[str], clips: int, workers: int,
                   timeout_s: float) -> dict[str, dict]:
    """Decode clips 0..``clips``-1 with ``target.decode`` in a spawn process pool of ``workers`` processes
    per backend (no DataLoader); return ``{backend: {status, clips_per_s, frames_per_s, seconds, error}}``.

    Every worker first decodes one clip untimed and waits at a barrier for the others, so process
    start-up and imports are left out; a crash or a wait past ``timeout_s`` is a failed backend, not an error.
    """
    out: dict[str, dict] = {}
    if target.decode is None:
        return out
    ctx = get_context("spawn")
    for backend in backends:
        tasks = [(target.decode, backend, i, target.decode_kwargs) for i in range(clips)]
        try:
            with ProcessPoolExecutor(workers, mp_context=ctx, initializer=init_pool,
                                     initargs=(_import_paths(), ctx.Barrier(workers))) as pool:
                warm = [pool.submit(warm_task, tasks[i % clips], timeout_s) for i in range(workers)]
                for future in warm:
                    future.result(timeout=timeout_s)
                t0 = time.perf_counter()
                frames = sum(pool.map(decode_task, tasks, timeout=timeout_s))
                seconds = time.perf_counter() - t0
            out[backend] = {"status": "ok", "clips_per_s": clips / seconds, "frames_per_s": frames / seconds,
                            "seconds": seconds, "clips": clips, "workers": workers, "error": None}
        except Exception as err:  # a broken pool (crashed worker), a timeout or a decode error: recorded
            out[backend] = {"status": "failed", "clips_per_s": math.nan, "frames_per_s": math.nan,
                            "seconds": math.nan, "clips": clips, "workers": workers,
                            "error": f"{type(err).__name__}: {err}"}
        log.info("ceiling %s: %s", backend, out[backend]["error"] or f"{out[backend]['clips_per_s']:.1f} clips/s")
    return out


def run_benchmark(cfg: BenchLoaderConfig, target: LoaderTarget) -> dict[str, Any]:
    """Run all phases and return ``{grid, sustained, stable, ceilings, efficiency, machine}``.

    ``grid`` and ``sustained`` are lists of :func:`run_point` rows; ``stable`` is the row
    :func:`select_stable` picks from ``sustained`` (None when none qualifies); ``efficiency`` is the best
    sustained clips/s over the ceiling of ``cfg.backend`` (None when either is missing).
    """
    points_dir = Path(cfg.tmp_dir) / "points"
    shutil.rmtree(points_dir, ignore_errors=True)  # logs of an earlier run
    grid = []
    for point in grid_points(cfg):
        row = run_point(target, point, cfg, batches=cfg.burst_batches, phase="burst")
        _log_row(row)
        grid.append(row)
    sustained = []
    for point in top_points(grid, cfg.sustained_top_k):
        row = run_point(target, point, cfg, batches=cfg.sustained_batches, phase="sustained")
        _log_row(row)
        sustained.append(row)
    stable = select_stable(sustained)
    for row in grid + sustained:  # keep the request and logs of failed points only
        if row["status"] == "ok":
            shutil.rmtree(points_dir / row["log_dir"], ignore_errors=True)
    workers = os.cpu_count() or 1
    ceilings = decode_ceiling(target, cfg.ceiling_backends(), cfg.ceiling_clips, workers, cfg.timeout_s)
    best = max((r["clips_per_s"] for r in sustained if r["status"] == "ok"), default=None)
    ceiling = ceilings.get(cfg.backend, {}).get("clips_per_s")
    efficiency = best / ceiling if best is not None and ceiling and not math.isnan(ceiling) else None
    machine = {"cpu_count": workers, "memory_gib": psutil.virtual_memory().total / 2**30,
               "python": sys.version.split()[0]}
    return {"grid": grid, "sustained": sustained, "stable": stable, "ceilings": ceilings,
            "efficiency": efficiency, "machine": machine}


def _log_row(row: dict[str, Any]) -> None:
    if row["status"] == "ok":
        log.info("%s %s: %.1f clips/s, first batch %.2f s, peak RSS %.0f MiB", row["phase"],
                 GridPoint(row["batch_size"], row["num_workers"], row["prefetch_factor"]).name,
                 row["clips_per_s"], row["first_batch_s"], row["peak_rss_mb"])
    else:
        log.warning("%s %s: FAILED (%s) %s", row["phase"],
                    GridPoint(row["batch_size"], row["num_workers"], row["prefetch_factor"]).name,
                    row["kind"], shorten(row["error"] or "", 200))


def stable_record(cfg: BenchLoaderConfig, stable: dict[str, Any]) -> dict[str, Any]:
    """Return the ``stable.json`` content for the chosen row: the loader settings trainers use, its measured
    figures, the rule, and the process settings it was measured under.

    With 0 workers the DataLoader takes no prefetch factor; the smallest configured one is written (an
    int, as ``VideoLoaderConfig`` requires) and ``prefetch_used`` says it has no effect.
    """
    used = stable["prefetch_factor"] is not None
    return {"batch_size": stable["batch_size"], "num_workers": stable["num_workers"],
            "prefetch_factor": stable["prefetch_factor"] if used else min(cfg.prefetch_factors),
            "prefetch_used": used, "backend": stable["backend"],
            "sharing_strategy": cfg.sharing_strategy, "clips_per_s": stable["clips_per_s"],
            "frames_per_s": stable["frames_per_s"], "latency_p95_s": stable["latency_p95_s"],
            "first_batch_s": stable["first_batch_s"], "peak_rss_mb": stable["peak_rss_mb"],
            "sustained_batches": stable["batches"], "clip_frames": cfg.clip_frames, "clip_stride": cfg.clip_stride,
            "rule": STABLE_RULE}


def _num(value: Any) -> float | int | None:
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return None
    return value


def dvc_metrics(result: dict[str, Any]) -> dict[str, Any]:
    """Return metrics.json content: numbers only, at most two levels (stable settings and figures, best
    burst/sustained clips/s, ceiling per backend, efficiency, grid and failed point counts)."""
    rows = result["grid"] + result["sustained"]
    metrics: dict[str, Any] = {
        "grid_points": len(result["grid"]),
        "failed_points": sum(r["status"] == "failed" for r in rows),
        "stable_found": int(result["stable"] is not None),
    }
    stable = result["stable"]
    if stable is not None:
        metrics["stable"] = {"batch_size": stable["batch_size"], "num_workers": stable["num_workers"],
                             "prefetch_factor": stable["prefetch_factor"] or 0,
                             "clips_per_s": stable["clips_per_s"], "frames_per_s": stable["frames_per_s"],
                             "latency_p95_s": stable["latency_p95_s"], "peak_rss_mb": stable["peak_rss_mb"]}
    for phase, key in (("grid", "best_burst_clips_per_s"), ("sustained", "best_sustained_clips_per_s")):
        best = max((r["clips_per_s"] for r in result[phase] if r["status"] == "ok"), default=None)
        if best is not None:
            metrics[key] = best
    ceilings = {b: c["clips_per_s"] for b, c in result["ceilings"].items() if _num(c["clips_per_s"]) is not None}
    if ceilings:
        metrics["ceiling_clips_per_s"] = ceilings
    if result["efficiency"] is not None:
        metrics["efficiency"] = result["efficiency"]
    return metrics


# ------------------------------------------------------------------------------------------------ report
def plot_throughput(grid: list[dict[str, Any]]) -> Figure:
    """Return clips/s against num_workers, one line per batch size (and prefetch factor when several);
    failed points are drawn as an x at zero in their line's colour."""
    fig = new_figure(7, 4.5)
    ax = fig.add_subplot()
    ax.set_title("Loader throughput (burst), per batch size")
    if not grid:
        no_data(ax, "no grid points")
        return fig
    several_pf = len({r["prefetch_factor"] for r in grid if r["num_workers"] > 0}) > 1
    groups: dict[tuple, list[dict]] = {}
    for r in grid:
        key = (r["batch_size"], r["prefetch_factor"] if several_pf else None)
        groups.setdefault(key, []).append(r)
        if several_pf and r["num_workers"] == 0:  # the 0-worker point belongs to every prefetch line
            for pf in {x["prefetch_factor"] for x in grid if x["num_workers"] > 0}:
                groups.setdefault((r["batch_size"], pf), []).append(r)
    groups = {k: v for k, v in groups.items() if not (several_pf and k[1] is None)}
    for i, (key, rows) in enumerate(sorted(groups.items(), key=lambda kv: (kv[0][0], kv[0][1] or 0))):
        color = f"C{i % 10}"
        label = f"batch {key[0]}" + (f", prefetch {key[1]}" if several_pf else "")
        ok = sorted((r for r in rows if r["status"] == "ok"), key=lambda r: r["num_workers"])
        ax.plot([r["num_workers"] for r in ok], [r["clips_per_s"] for r in ok], "o-", color=color, label=label)
        bad = [r for r in rows if r["status"] != "ok"]
        if bad:
            ax.plot([r["num_workers"] for r in bad], [0] * len(bad), "x", color=color, markersize=11,
                    markeredgewidth=2.5, linestyle="none")
    if any(r["status"] != "ok" for r in grid):
        ax.plot([], [], "x", color="black", linestyle="none", label="failed (drawn at 0)")
    ax.set_xticks(sorted({r["num_workers"] for r in grid}))
    ax.set_xlabel("num_workers")
    ax.set_ylabel("clips/s (first batch excluded)")
    ax.set_ylim(bottom=0)
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8)
    return fig


def _ms(value: float | None) -> str:
    return "–" if value is None else fmt_num(1000 * value)


def _row_cells(r: dict[str, Any]) -> list[str]:
    base = [str(r["batch_size"]), str(r["num_workers"]), str(r["prefetch_factor"] or "–")]
    if r["status"] != "ok":
        return base + ["**FAILED**", "–", "–", "–", "–", "–", fmt_num(r["peak_rss_mb"]),
                       f"**{r['kind']}**: {md_cell(shorten(r['error'] or '', 140))}"]
    return base + ["ok", fmt_num(r["clips_per_s"]), fmt_num(r["frames_per_s"]), fmt_num(r["first_batch_s"]),
                   _ms(r["latency_mean_s"]), _ms(r["latency_p95_s"]), fmt_num(r["peak_rss_mb"]), ""]


_TABLE_HEAD = ("| batch | workers | prefetch | status | clips/s | frames/s | first batch (s) | latency mean (ms) "
               "| latency p95 (ms) | peak RSS (MiB) | failure |\n"
               "|---:|---:|---:|---|---:|---:|---:|---:|---:|---:|---|")


def _table(rows: list[dict[str, Any]]) -> str:
    return "\n".join([_TABLE_HEAD, *("| " + " | ".join(_row_cells(r)) + " |" for r in rows)])


def render_report(result: dict[str, Any], cfg: BenchLoaderConfig, target: LoaderTarget) -> str:
    """Return the markdown report: what was measured and on what data, the burst grid (failed rows marked
    with their kind), the sustained runs, the stable rule and choice, ceilings per backend and efficiency,
    and the process settings (sharing strategy, tmp dir)."""
    stable, machine = result["stable"], result["machine"]
    failed = [r for r in result["grid"] + result["sustained"] if r["status"] != "ok"]
    lines = ["# Loader benchmark (bench_loader)", ""]
    if stable is None:
        lines += ["**FAILED: no sustained run finished with zero errors, so no stable configuration was "
                  f"written.** Check the failed rows below and the logs under `{cfg.tmp_dir}/points/`.", ""]
    else:
        lines += [f"Stable configuration: **batch {stable['batch_size']}, {stable['num_workers']} workers, "
                  f"prefetch {stable['prefetch_factor'] or '–'}**, backend {stable['backend']}, "
                  f"{fmt_num(stable['clips_per_s'])} clips/s sustained "
                  f"(written to `{Path(cfg.out) / STABLE_FILE}`).", ""]
    if failed:
        lines += [f"{len(failed)} point run(s) failed: " +
                  ", ".join(f"{r['phase']} b{r['batch_size']}/w{r['num_workers']}: {r['kind']}" for r in failed)
                  + ".", ""]
    lines += ["## What was measured", "",
              f"- Loader: `{target.factory}`, decode backend **{cfg.backend}**.",
              *(f"- {k}: {md_cell(v)}" for k, v in target.data.items()),
              f"- Clip: {cfg.clip_frames} frames, stride {cfg.clip_stride}.",
              f"- Grid: batch sizes {cfg.batch_sizes} x workers {cfg.num_workers} x prefetch factors "
              f"{cfg.prefetch_factors} (prefetch applies only with workers > 0).",
              f"- Burst: {cfg.burst_batches} batches per point; sustained: {cfg.sustained_batches} batches for the "
              f"{cfg.sustained_top_k} fastest burst points.",
              "- Each point runs in its own process (`python -m lib.bench.loader_child`) in its own session, "
              f"killed with its workers after {cfg.timeout_s:g} s; a crash there is a failed row, not a failed stage.",
              f"- Sharing strategy: `{cfg.sharing_strategy}`; TMPDIR / tempfile.tempdir: `{cfg.tmp_dir}`.",
              f"- Machine: {machine['cpu_count']} CPU cores, {machine['memory_gib']:.1f} GiB memory, "
              f"Python {machine['python']}.",
              "- clips/s and frames/s: clips (frames) of batches 2..N over their summed wait; the first batch, "
              "which includes worker start-up, is reported alone. Latency mean and p95 are over batches 2..N.",
              f"- Peak RSS: sum of the RSS of the point's process and its workers, sampled every {RSS_SAMPLE_S:g} s "
              "(pages shared between processes count once per process, so it is an upper bound).",
              "- Failure kinds: timeout (killed at the limit), bus_error (SIGBUS / \"Bus error\"), shm_exhausted "
              "(shared memory / \"No space left on device\"), worker_killed (SIGKILL / OOM, or DataLoader's "
              "\"worker ... is killed by signal\"), exception (anything else).", ""]
    if cfg.force_fail:
        lines += [f"Forced failures (`force_fail`, for tests of the harness): {md_cell(cfg.force_fail)}", ""]
    lines += ["## Burst grid", "", _table(result["grid"]), "", f"![throughput]({PLOT_FILE})", "",
              "## Sustained runs", ""]
    lines += [_table(result["sustained"]) if result["sustained"] else "No burst point succeeded; nothing to sustain.",
              ""]
    lines += ["## Stable configuration", "", f"Rule: {STABLE_RULE}.", ""]
    if stable is None:
        lines += ["No sustained run qualifies: none written.", ""]
    else:
        lines += ["```json", json.dumps(stable_record(cfg, stable), indent=1), "```", ""]
    lines += ["## Decode-only ceiling", "",
              f"{cfg.ceiling_clips} clips (the same clip spec and videos as the loader) decoded by a process pool of "
              f"{machine['cpu_count']} workers (os.cpu_count()), no DataLoader, after an untimed warm-up "
              "(one clip per worker: start-up and imports excluded).", ""]
    if not result["ceilings"]:
        lines += ["Not measured: the target names no decode function.", ""]
    else:
        lines += ["| backend | status | clips/s | frames/s | seconds | error |", "|---|---|---:|---:|---:|---|"]
        for backend, c in result["ceilings"].items():
            lines.append(f"| {backend}{' (loader)' if backend == cfg.backend else ''} | {c['status']} | "
                         f"{fmt_num(_num(c['clips_per_s']))} | {fmt_num(_num(c['frames_per_s']))} | "
                         f"{fmt_num(_num(c['seconds']))} | {md_cell(shorten(c['error'] or '', 140))} |")
        lines.append("")
    if result["efficiency"] is None:
        lines += ["Loader efficiency: – (no successful sustained run or no ceiling for the loader's backend).", ""]
    else:
        lines += [f"Loader efficiency = best sustained loader clips/s / {cfg.backend} ceiling clips/s = "
                  f"**{result['efficiency'] * 100:.1f}%**.", ""]
        if result["efficiency"] > 1:
            seconds = result["ceilings"][cfg.backend]["seconds"]
            lines += [f"Above 100%: the ceiling run is short ({cfg.ceiling_clips} clips in {seconds:.2f} s) against "
                      f"{cfg.sustained_batches} sustained batches, so it is the noisier figure; raise `ceiling_clips` "
                      "for a steadier one.", ""]
    return "\n".join(lines)


def write_outputs(result: dict[str, Any], cfg: BenchLoaderConfig, target: LoaderTarget) -> dict[str, Path]:
    """Write ``<out>/stable.json`` (removed when there is no stable configuration), ``<out>/results.json``
    (every row), and ``<report_dir>/{report.md, metrics.json, throughput.png}``, all atomically; return
    their paths by name."""
    out, report_dir = Path(cfg.out), Path(cfg.report_dir)
    paths = {"results": atomic_write_json(out / RESULTS_FILE, _json_safe(result)),
             "plot": save_figure(plot_throughput(result["grid"]), report_dir / PLOT_FILE),
             "metrics": atomic_write_json(report_dir / METRICS_FILE, dvc_metrics(result)),
             "report": atomic_write_text(report_dir / REPORT_FILE, render_report(result, cfg, target))}
    stable_path = out / STABLE_FILE
    if result["stable"] is None:
        stable_path.unlink(missing_ok=True)  # never leave an old choice for trainers to read
    else:
        paths["stable"] = atomic_write_json(stable_path, stable_record(cfg, result["stable"]))
    return paths


def _json_safe(obj: Any) -> Any:
    if isinstance(obj, dict):
        return {k: _json_safe(v) for k, v in obj.items()}
    if isinstance(obj, list):
        return [_json_safe(v) for v in obj]
    return _num(obj)


def stable_loader(params_path: str | Path) -> tuple[dict, Path]:
    """Return ``(stable, path)``: the loader settings ``bench_loader`` chose for the params file ``params_path``
    (``{}`` when its stable.json does not exist yet) and that file's path. Trainers take workers, prefetch and
    the decode backend from it; validation and evaluation take the backend, so every decode of a run goes
    through the backend the machine has and the benchmark picked."""
    path = Path(load_section(params_path, "bench_loader", BenchLoaderConfig).out) / STABLE_FILE
    return load_stable_config(path, default={}), path
