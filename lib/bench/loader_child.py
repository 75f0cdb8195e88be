"""One loader benchmark point, run in its own process so that a crash cannot take the stage down.

    python -m lib.bench.loader_child REQUEST.json

The parent (:func:`lib.bench.loader_bench.run_point`) writes the request and reads the result file
the request names. The request says how to build the loader (a ``"module:function"`` factory plus
keyword arguments), how many batches to time, the torch sharing strategy and temporary directory to
use, and optionally a failure to force (``force_fail``, for tests of the harness). This module keeps
its imports light: torch comes in through the factory and the sharing-strategy call only.

The result is ``{"status": "ok", batches, clips, frames, latencies_s, epochs}`` (lists per batch) or
``{"status": "failed", "error", "traceback"}``; a process killed by a signal writes nothing, and the
parent reads its exit status and stderr instead.
"""
from __future__ import annotations

import importlib
import json
import os
import resource
import signal
import sys
import tempfile
import time
import traceback
from collections.abc import Callable, Iterable
from typing import Any

FORCED = "(forced by bench_loader.force_fail)"
# a forced worker death waits this long, so the DataLoader's SIGCHLD handler is installed and reports it at once
# (a worker dying before that is only noticed by the DataLoader's 5 s status poll)
KILL_DELAY_S = 0.3


def resolve(target: str) -> Callable[..., Any]:
    """Return the callable named by ``"package.module:function"``; ValueError names the bad part."""
    module_name, sep, attr = target.partition(":")
    if not sep or not module_name or not attr:
        raise ValueError(f"factory {target!r}: expected 'package.module:function'")
    module = importlib.import_module(module_name)
    try:
        return getattr(module, attr)
    except AttributeError as err:
        raise ValueError(f"factory {target!r}: module {module_name} has no {attr!r}") from err


def batch_counts(batch: Any) -> tuple[int, int]:
    """Return (clips, frames) in one batch: ``batch["video"]`` (or the first item of a tuple, or the
    batch itself) is ``[B, C, T, H, W]``, so clips = B and frames = B * T (T = 1 for other ranks)."""
    video = batch["video"] if isinstance(batch, dict) else batch[0] if isinstance(batch, (tuple, list)) else batch
    shape = tuple(video.shape)
    clips = int(shape[0])
    return clips, clips * (int(shape[2]) if len(shape) == 5 else 1)


class _KillWorker:
    """A ``worker_init_fn`` that runs the loader's own one; worker 0 then waits :data:`KILL_DELAY_S` and sends
    itself ``signum`` before producing anything (forced failure)."""

    def __init__(self, inner: Callable[[int], None] | None, signum: int):
        self.inner, self.signum = inner, signum

    def __call__(self, worker_id: int) -> None:
        if self.inner is not None:
            self.inner(worker_id)
        if worker_id == 0:
            time.sleep(KILL_DELAY_S)
            os.kill(os.getpid(), self.signum)


def sabotage_workers(loader: Any, kind: str | None) -> bool:
    """For kinds worker_killed / bus_error on a loader with worker processes, make worker 0 kill itself
    with SIGKILL / SIGBUS as it starts; return True when the loader was changed. Without workers the
    failure is forced in this process instead (:func:`fail_in_process`)."""
    signum = {"worker_killed": signal.SIGKILL, "bus_error": signal.SIGBUS}.get(kind or "")
    if signum is None or getattr(loader, "num_workers", 0) == 0 or not hasattr(loader, "worker_init_fn"):
        return False
    loader.worker_init_fn = _KillWorker(loader.worker_init_fn, signum)
    return True


def fail_in_process(kind: str) -> None:
    """Force failure ``kind`` in this process (called after the first batch, so it strikes mid-run)."""
    if kind == "worker_killed":
        os.kill(os.getpid(), signal.SIGKILL)  # what the OOM killer does
    elif kind == "bus_error":
        os.kill(os.getpid(), signal.SIGBUS)
    elif kind == "shm_exhausted":
        raise RuntimeError(f"unable to write to file </torch_{os.getpid()}_0>: No space left on device (28) {FORCED}")
    elif kind == "timeout":
        while True:
            time.sleep(3600)
    elif kind == "exception":
        raise RuntimeError(f"failure {FORCED}")
    else:
        raise ValueError(f"unknown forced failure kind {kind!r}")


def time_batches(loader: Iterable, batches: int, fail: str | None = None) -> dict[str, Any]:
    """Pull ``batches`` batches from ``loader`` (starting a new epoch when it runs out) and return
    ``{batches, clips, frames, latencies_s, epochs}`` (clips, frames and latencies per batch); latency ``i``
    is the wait for batch ``i``, the first one including worker start-up. ``fail`` (a forced kind) strikes
    after the first batch."""
    latencies: list[float] = []
    clips: list[int] = []
    frames: list[int] = []
    epochs = 1
    it = iter(loader)
    prev = time.perf_counter()
    empty_epoch = True
    while len(latencies) < batches:
        try:
            batch = next(it)
        except StopIteration:
            if empty_epoch:
                raise RuntimeError("the loader yielded no batch in a whole epoch (empty dataset or split?)") from None
            epochs += 1
            empty_epoch = True
            it = iter(loader)
            continue
        now = time.perf_counter()
        latencies.append(now - prev)
        prev = now
        empty_epoch = False
        c, f = batch_counts(batch)
        clips.append(c)
        frames.append(f)
        del batch
        if fail is not None and len(latencies) == 1:
            fail_in_process(fail)
    return {"batches": len(latencies), "clips": clips, "frames": frames, "latencies_s": latencies, "epochs": epochs}


_POOL_BARRIER: Any = None


def init_pool(paths: list[str], barrier: Any) -> None:
    """Process-pool initializer: put ``paths`` first on ``sys.path`` (so factories named by module import)
    and keep ``barrier`` for :func:`warm_task`."""
    global _POOL_BARRIER
    for path in reversed(paths):
        if path not in sys.path:
            sys.path.insert(0, path)
    _POOL_BARRIER = barrier


def warm_task(task: tuple[str, str, int, dict[str, Any]], timeout_s: float) -> int:
    """Untimed warm-up: :func:`decode_task`, then wait at the pool barrier until every worker has warmed
    up too (so each worker runs exactly one warm-up task and pays its imports before the timing)."""
    frames = decode_task(task)
    _POOL_BARRIER.wait(timeout_s)
    return frames


def decode_task(task: tuple[str, str, int, dict[str, Any]]) -> int:
    """Decode-only ceiling task ``(decode "module:function", backend, clip index, kwargs)``: call
    ``decode(index, backend, **kwargs)`` and return the number of frames it decoded."""
    target, backend, index, kwargs = task
    return int(resolve(target)(index, backend, **kwargs))


def run_request(req: dict[str, Any]) -> dict[str, Any]:
    """Apply the request's process settings, build its loader and time it; return the result dict
    (status "failed" with the error text when anything raises)."""
    tmp_dir = req["tmp_dir"]
    os.makedirs(tmp_dir, exist_ok=True)
    os.environ["TMPDIR"] = tmp_dir
    tempfile.tempdir = tmp_dir
    try:
        import torch.multiprocessing as tmp

        tmp.set_sharing_strategy(req["sharing_strategy"])
        point = req["point"]
        kwargs = dict(req["kwargs"], batch_size=point["batch_size"], num_workers=point["num_workers"],
                      prefetch_factor=point["prefetch_factor"], backend=req["backend"])
        loader = resolve(req["factory"])(**kwargs)
        fail = req.get("fail")
        if sabotage_workers(loader, fail):
            fail = None
        result = time_batches(loader, req["batches"], fail)
        result["status"] = "ok"
        return result
    except Exception as err:  # the parent classifies the text
        return {"status": "failed", "error": f"{type(err).__name__}: {err}", "traceback": traceback.format_exc()}


def main(argv: list[str]) -> int:
    """Entry point: run the request file ``argv[0]`` and write its result file; return 0 (ok) or 1."""
    resource.setrlimit(resource.RLIMIT_CORE, (0, 0))  # a forced or real SIGBUS leaves no core file
    with open(argv[0], encoding="utf-8") as fh:
        req = json.load(fh)
    result = run_request(req)
    tmp_path = req["result_path"] + ".tmp"
    with open(tmp_path, "w", encoding="utf-8") as fh:
        json.dump(result, fh)
    os.replace(tmp_path, req["result_path"])
    if result["status"] != "ok":
        print(result.get("traceback", result["error"]), file=sys.stderr)
    sys.stderr.flush()
    # os._exit: skip interpreter teardown, where a loader with broken workers can hang in its finalizer
    os._exit(0 if result["status"] == "ok" else 1)


if __name__ == "__main__":
    main(sys.argv[1:])
