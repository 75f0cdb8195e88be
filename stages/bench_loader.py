"""Stage bench_loader: time the SSv2 clip loader over a grid of settings and choose a stable one.

    python -m stages.bench_loader [--params params.yaml]

Reads <ingest_ssv2.out>/manifest.parquet and section bench_loader (grid, phase lengths, clip spec,
sharing strategy, tmp dir, timeouts). Every grid point (batch size x workers x prefetch factor) runs in
its own process for `burst_batches` batches; the `sustained_top_k` fastest then run `sustained_batches`.
A point that crashes, hangs past `timeout_s` or raises is a failed row with its kind (worker_killed,
bus_error, shm_exhausted, timeout, exception); the stage goes on. The stable configuration is the
fastest sustained run with zero errors (ties: fewer workers, then smaller prefetch). A decode-only
ceiling (a process pool of all cores, no DataLoader) per backend in `backends_compared` gives the
loader's efficiency.

Writes:
    <out>/stable.json            batch_size, num_workers, prefetch_factor, backend, ... (trainers read it
                                 through lib.data.video_dataset.load_stable_config)
    <out>/results.json           every row of every phase, and the ceilings
    <report_dir>/report.md       what was measured, tables (failed rows marked), rule, ceilings, efficiency
    <report_dir>/metrics.json    numbers for `dvc metrics show`
    <report_dir>/throughput.png  clips/s vs num_workers, one line per batch size, failed points as x

Logs of failed points stay in <tmp_dir>/points/. Exits 1 (after writing the report) when no sustained
run finished without errors, so no stable configuration exists.
"""
from __future__ import annotations

import logging
from pathlib import Path

from lib.bench.loader_bench import BenchLoaderConfig, LoaderTarget, run_benchmark, write_outputs
from lib.bench.ssv2_loader import DECODE, FACTORY, describe_split
from lib.cli import StageCheckFailed, run_stage, stage_parser
from lib.config import load_section
from lib.ssv2.ingest import MANIFEST, IngestSSv2Config

log = logging.getLogger("bench_loader")


def main() -> None:
    args = stage_parser("bench_loader", __doc__).parse_args()
    cfg = load_section(args.params, "bench_loader", BenchLoaderConfig)
    ingest = load_section(args.params, "ingest_ssv2", IngestSSv2Config)
    manifest = Path(ingest.out) / MANIFEST
    if not manifest.is_file():
        raise FileNotFoundError(f"{manifest}: manifest missing; run `dvc repro ingest_ssv2` first")
    loader_kwargs = {"manifest": str(manifest), "split": cfg.split, "clip_frames": cfg.clip_frames,
                     "clip_stride": cfg.clip_stride, "seed": cfg.seed}
    target = LoaderTarget(factory=FACTORY, factory_kwargs=loader_kwargs, decode=DECODE, decode_kwargs=loader_kwargs,
                          data=describe_split(str(manifest), cfg.split))

    result = run_benchmark(cfg, target)
    paths = write_outputs(result, cfg, target)
    if result["stable"] is None:
        raise StageCheckFailed(f"bench_loader: no sustained run finished without errors, so {cfg.out}/stable.json "
                               f"was not written; see {paths['report']} and the logs in {cfg.tmp_dir}/points/")
    stable = result["stable"]
    log.info("stable: batch %d, %d workers, prefetch %s: %.1f clips/s; report in %s", stable["batch_size"],
             stable["num_workers"], stable["prefetch_factor"], stable["clips_per_s"], paths["report"])


if __name__ == "__main__":
    run_stage(main)
