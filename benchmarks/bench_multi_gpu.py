"""Scaling of the real trainer stages over N processes (DDP, and FSDP2 for the VAE curriculum), side by side.

    python benchmarks/bench_multi_gpu.py --out reports/benchmarks --n 1,2,4,8 \\
        [--apt-params apt.yaml] [--vae-params vae.yaml] [--fsdp] [--steps 30] [--phase 256px] [--cpu]

For each trainer given a params file (``--apt-params``: train_apt; ``--vae-params``: train_curriculum; write them
with ``benchmarks/gpu_params.py apt|vae``, the data already ingested), and each N of ``--n``, one run of the stage
itself: N = 1 as ``python -m stages.train_<x>``, N > 1 as ``accelerate launch --config_file
profiles/accelerate/ddp.yaml --num_processes N -m stages.train_<x>`` (``--fsdp``: also
``profiles/accelerate/fsdp_curriculum.yaml`` for the curriculum). ``--cpu``: gloo processes through
``torch.distributed.run`` with ``ACCELERATE_USE_CPU=1`` instead (the smoke test; accelerate would launch
multi-CPU jobs through mpirun).

Each run gets its own out_dir, ``--steps`` steps (the curriculum: only phase ``--phase``, for that many steps), no
tracker, no validation and no checkpoint before the last step, and reports the trainer's own
``final/throughput.json`` (samples/s after a 2-step warm-up, checkpoints and logging excluded; peak GiB of rank
0). The per-process batch stays the preset's (weak scaling: N processes train N times the global batch).
Efficiency: ``samples_per_s(N) / (N * samples_per_s(1))`` against the same trainer's one-process run.

Writes ``<out>/multi_gpu.json`` (``{"device", "date", "command", "runs": [{"trainer", "strategy", "n",
"samples_per_s", "efficiency", "peak_gib", "loader_workers"}]}``) and ``<out>/multi_gpu.md``. A failed run is a row
with its error; the others go on.
"""
from __future__ import annotations

import argparse
import copy
import datetime as dt
import json
import os
import shlex
import subprocess
import sys
import tempfile
from pathlib import Path
from typing import Any

import yaml

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
from benchmarks.device_name import gpu_names  # noqa: E402
from lib.data.video_dataset import load_stable_config  # noqa: E402

TRAINERS = {"apt": "train_apt", "curriculum": "train_curriculum"}
CONFIGS = {"ddp": ROOT / "profiles/accelerate/ddp.yaml", "fsdp": ROOT / "profiles/accelerate/fsdp_curriculum.yaml"}


def run_params(params: dict[str, Any], section: str, out_dir: Path, steps: int, phase: str | None) -> dict:
    """``params`` with the trainer ``section`` set up for one timed run in ``out_dir`` (see the module docstring)."""
    p = copy.deepcopy(params)
    s = p[section]
    s.update(out_dir=str(out_dir), tracker="none", checkpoint_every=10**9, log_every=max(1, steps // 3),
             max_minutes=None)
    if "val_every" in s:
        s["val_every"] = 10**9  # (the last step still validates: outside the timed work)
    if section == "train_curriculum":
        phases = s["curriculum"]["phases"]
        names = [ph["name"] for ph in phases]
        pick = phase or names[0]
        if pick not in names:
            raise ValueError(f"--phase {pick!r}: the curriculum's phases are {names}")
        chosen = dict(phases[names.index(pick)], steps=steps, warmup_steps=1)
        chosen.pop("transition", None)
        s["curriculum"]["phases"] = [chosen]
        s.pop("steps", None)
    else:
        s.update(steps=steps, warmup_steps=1)
    return p


def launch_command(stage: str, params: Path, n: int, strategy: str, cpu: bool) -> tuple[list[str], dict[str, str]]:
    """Command and extra environment of one run."""
    module = ["-m", f"stages.{stage}", "--params", str(params), "--no-progress"]
    if n == 1:
        return [sys.executable, *module], ({"ACCELERATE_USE_CPU": "1"} if cpu else {})
    if cpu:
        return ([sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", str(n), *module],
                {"ACCELERATE_USE_CPU": "1", "OMP_NUM_THREADS": "1"})
    return [sys.executable, "-m", "accelerate.commands.launch", "--config_file", str(CONFIGS[strategy]),
            "--num_processes", str(n), *module], {}


def efficiency(sps: float | None, n: int, base: float | None) -> float | None:
    """``sps / (n * base)``, None when either figure is missing."""
    return None if sps is None or not base else sps / (n * base)


def device_name(cpu: bool) -> str:
    if cpu:
        import platform

        return f"CPU ({os.cpu_count()} cores, {platform.processor() or platform.machine()}), gloo"
    names = gpu_names()
    return f"{len(names)} x {names[0]}" if names else "no GPU found by nvidia-smi"


def render_md(result: dict[str, Any]) -> str:
    lines = ["# Training on several processes: samples/s and scaling efficiency", "",
             f"Measured {result['date']} on {result['device']} by", "", "```bash", result["command"], "```", "",
             "Each row is one run of the trainer stage itself (its `final/throughput.json`: samples/s after a 2-step "
             "warm-up, checkpoints and logging excluded; peak GiB of rank 0). Per-process batch = the preset's "
             "(weak scaling). Efficiency = samples/s(N) / (N x samples/s(1)) of the same trainer.", "",
             "| trainer | strategy | N | samples/s | efficiency | peak GiB | loader workers/rank | note |",
             "|---|---|---:|---:|---:|---:|---:|---|"]

    def f(v, fmt):
        return "–" if v is None else format(v, fmt)

    for r in result["runs"]:
        lines.append(f"| {r['trainer']} | {r['strategy']} | {r['n']} | {f(r['samples_per_s'], '.3g')} | "
                     f"{f(r['efficiency'], '.2f')} | {f(r['peak_gib'], '.1f')} | {f(r['loader_workers'], 'd')} | "
                     f"{r.get('error', '')} |")
    return "\n".join(lines) + "\n"


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--out", type=Path, default=ROOT / "reports/benchmarks", help="folder of multi_gpu.json / .md")
    ap.add_argument("--n", default="1,2", help="process counts, comma-separated (default: %(default)s)")
    ap.add_argument("--apt-params", type=Path, help="params file for train_apt (gpu_params.py apt)")
    ap.add_argument("--vae-params", type=Path, help="params file for train_curriculum (gpu_params.py vae)")
    ap.add_argument("--fsdp", action="store_true", help="also the curriculum under FSDP2 (N > 1)")
    ap.add_argument("--steps", type=int, default=30, help="optimiser steps per run (default: %(default)s)")
    ap.add_argument("--phase", help="the curriculum phase to time (default: its first)")
    ap.add_argument("--cpu", action="store_true", help="gloo processes on the CPU (smoke test)")
    ap.add_argument("--work", type=Path, help="folder for the runs' params and out_dirs (default: a temp dir)")
    ap.add_argument("--timeout", type=float, default=1800, help="seconds one run may take")
    args = ap.parse_args()
    counts = sorted({int(x) for x in args.n.split(",")})
    if not (args.apt_params or args.vae_params):
        ap.error("give --apt-params and/or --vae-params")
    if counts[0] != 1:
        ap.error("--n must include 1 (the efficiency's baseline)")
    work = args.work or Path(tempfile.mkdtemp(prefix="bench_multi_gpu_"))
    work.mkdir(parents=True, exist_ok=True)
    jobs = [(t, p) for t, p in (("apt", args.apt_params), ("curriculum", args.vae_params)) if p]
    runs: list[dict[str, Any]] = []
    for trainer, params_path in jobs:
        section = TRAINERS[trainer]
        params = yaml.safe_load(params_path.read_text())
        stable = Path(((params.get("bench_loader") or {}).get("out")) or "data/loader") / "stable.json"
        stable = stable if stable.is_absolute() else ROOT / stable
        workers = load_stable_config(stable, default={}).get("num_workers")
        strategies = ["ddp"] + (["fsdp"] if args.fsdp and trainer == "curriculum" else [])
        base = None
        for strategy in strategies:
            for n in counts:
                if n == 1 and strategy != "ddp":
                    continue  # one process shards nothing: the DDP N=1 run is every strategy's baseline
                name = f"{trainer}_{strategy}_{n}"
                p = run_params(params, section, work / name, args.steps, args.phase)
                (work / f"{name}.yaml").write_text(yaml.safe_dump(p, sort_keys=False))
                cmd, env = launch_command(section, work / f"{name}.yaml", n, strategy, args.cpu)
                print(f"== {name}: {shlex.join(cmd)}", flush=True)
                row: dict[str, Any] = {"trainer": section, "strategy": "single" if n == 1 else strategy, "n": n,
                                       "samples_per_s": None, "efficiency": None, "peak_gib": None,
                                       "loader_workers": workers}
                log = work / f"{name}.log"  # the run's output, kept for every run
                try:
                    with log.open("w") as fh:
                        proc = subprocess.run(cmd, cwd=ROOT, env={**os.environ, **env}, stdout=fh,
                                              stderr=subprocess.STDOUT, timeout=args.timeout)
                    if proc.returncode != 0:
                        raise RuntimeError(f"exit {proc.returncode}; see {log}")
                    speed = json.loads((work / name / "final/throughput.json").read_text())
                    row.update(samples_per_s=speed["samples_per_s"], peak_gib=speed["peak_gib"])
                except (RuntimeError, subprocess.TimeoutExpired, OSError) as err:
                    row["error"] = str(err)[:300]
                if n == 1:
                    base = row["samples_per_s"]
                row["efficiency"] = efficiency(row["samples_per_s"], n, base)
                print(f"   {row}", flush=True)
                runs.append(row)
    result = {"device": device_name(args.cpu), "date": dt.date.today().isoformat(),
              "command": shlex.join(["python", "benchmarks/bench_multi_gpu.py", *sys.argv[1:]]), "runs": runs}
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / "multi_gpu.json").write_text(json.dumps(result, indent=1) + "\n")
    (args.out / "multi_gpu.md").write_text(render_md(result))
    print(render_md(result))
    return 0 if all(r["samples_per_s"] is not None for r in runs) else 1


if __name__ == "__main__":
    sys.exit(main())
