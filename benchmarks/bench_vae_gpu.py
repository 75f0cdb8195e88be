"""GPU benchmark of the video VAE's training step at each phase of the GPU curriculum, as train_curriculum runs it:
the shared Trainer (accelerate, bf16 autocast), the VAE step_fn (micro-batches with gradient accumulation inside
the step), AdamW, grad clipping, activation checkpointing of every ResBlock.

    python benchmarks/bench_vae_gpu.py --out reports/benchmarks [--phases 256px,512px] [--steps 3] [--warmup 2]

For each phase of ``lib.train.curriculum.GPU_PRESET`` (256 px/8 frames batch 16, 512/16 batch 8, 1024/49 batch 4;
``micro_batch`` per phase) and the model ``lib.models.video_vae.GPU_PRESET``, each variant runs in its own process
(so an out-of-memory run is a row, not a crash) on random clips already on the GPU, so the figure is the step, not
the loader:

- ``bf16``: eager; ``bf16 + compile``: every ResBlock and norm compiled (``torch.compile``, regional);
- ``means`` rows (``--means``): the same step with one memory saving taken away at a time (uniform width, the
  whole batch in one forward, the phase's whole-level checkpointing), to say what each one buys.

Each phase runs with its own ``micro_batch`` and ``checkpoint_levels`` (1024 px: whole levels 0-1 recomputed).

Time per step: wall time from the start of step ``warmup`` to the start of step ``warmup + steps``. Peak: the
allocator's peak (``max_memory_allocated``). FLOPs: ``torch.utils.flop_counter`` on the meta device for one
whole-batch forward + backward WITHOUT the recompute of checkpointing (model FLOPs), so TFLOP/s is what the model
needs, not what the GPU executed. Ceiling: Conv3d 3x3x3 forward + backward in bf16 at each level's shape
(micro-batch, width, frames, side), combined weighted by the model's FLOPs at that level. Results go to
``<out>/vae_gpu.json`` (merged with phases already there) and ``<out>/vae_gpu.md``. Needs CUDA; never run in CI.
"""
from __future__ import annotations

import argparse
import dataclasses
import datetime as dt
import json
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from lib.losses.vae import VideoVAELoss  # noqa: E402
from lib.models.video_vae import GPU_PRESET, FrameGroupNorm, ResBlock, VideoVAE, VideoVAEConfig  # noqa: E402
from lib.train.curriculum import GPU_PRESET as GPU_CURRICULUM  # noqa: E402
from lib.train.curriculum import PhaseConfig  # noqa: E402
from lib.train.loop import Trainer  # noqa: E402
from lib.train.video_vae import MODEL, from_section, make_step_fn  # noqa: E402

VARIANTS = {"bf16": {}, "bf16 + compile": {"compile": True}}
MEANS = {  # one saving taken away at a time (eager bf16), to say what each buys
    "no level_channels (width 128 everywhere)": {"uniform": True},
    "no micro-batching (whole batch per forward)": {"whole_batch": True},
    "no whole-level checkpointing (checkpoint_levels 0)": {"checkpoint_levels": 0},
}


def model_config(uniform: bool = False) -> VideoVAEConfig:
    """The GPU preset, or the preset with one width at every level (the schedule taken away)."""
    return dataclasses.replace(GPU_PRESET, level_channels=()) if uniform else GPU_PRESET


def section(phase: PhaseConfig, model: VideoVAEConfig, micro: int, steps: int, out_dir: str) -> dict:
    """A train_video_vae section at one phase's shapes (single resolution: the step is the curriculum's)."""
    return {"steps": steps, "batch_size": phase.batch_size, "micro_batch": micro, "warmup_steps": 0, "lr": phase.lr,
            "mixed_precision": "bf16", "tracker": "none", "checkpoint_every": 10_000, "log_every": 1_000,
            "out_dir": out_dir, "resolution": phase.resolution, "clip_frames": phase.frames,
            "model": {**dataclasses.asdict(model), "level_channels": list(model.level_channels)}}


def random_data(phase: PhaseConfig, micro: int, levels: int | None):
    g = torch.Generator(device="cuda").manual_seed(0)
    video = torch.rand(phase.batch_size, 3, phase.frames, phase.resolution, phase.resolution, device="cuda",
                       generator=g) * 2 - 1

    def data(start_step: int):
        while True:
            yield {"video": video, "noise_seed": 0, "micro_batch": micro, "checkpoint_levels": levels}

    return data


def compile_regions(model: VideoVAE) -> None:
    """Compile each ResBlock and the two output norms in place: small graphs, compiled once per shape."""
    for module in model.modules():
        if isinstance(module, ResBlock | FrameGroupNorm):
            module.compile()


def run_variant(args, phase_name: str, variant: dict) -> dict:
    """Train ``warmup + steps`` steps of one phase with one variant; return its timing and memory."""
    phase = next(p for p in GPU_CURRICULUM.phases if p.name == phase_name)
    micro = phase.batch_size if variant.get("whole_batch") else (phase.micro_batch or phase.batch_size)
    model_cfg = model_config(variant.get("uniform", False))
    cfg = from_section(section(phase, model_cfg, micro, args.warmup + args.steps + 1, tempfile.mkdtemp()))
    torch.manual_seed(0)
    model = VideoVAE(model_cfg)
    if variant.get("compile"):
        compile_regions(model)
    step_fn = make_step_fn(VideoVAELoss(cfg.loss))
    stamps: list[float] = []

    def stamped(trainer, batch, step):
        torch.cuda.synchronize()
        stamps.append(time.perf_counter())
        # a line per step, so a variant cut by the timeout still tells its step time and peak (run_child)
        print(f"STEP {len(stamps) - 1} {stamps[-1] - stamps[0]:.3f} {torch.cuda.max_memory_allocated() / 2**30:.2f}",
              flush=True)
        return step_fn(trainer, batch, step)

    levels = variant.get("checkpoint_levels", phase.checkpoint_levels)  # as the curriculum's step sets it
    trainer = Trainer(cfg.train, {MODEL: model}, stamped, random_data(phase, micro, levels))
    torch.cuda.reset_peak_memory_stats()
    trainer.run(progress=False)
    sec = (stamps[args.warmup + args.steps] - stamps[args.warmup]) / args.steps
    return {"sec": sec, "peak_gib": torch.cuda.max_memory_allocated() / 2**30, "micro_batch": micro,
            "checkpoint_levels": model.checkpoint_levels,
            "first_steps_s": stamps[args.warmup] - stamps[0]}


def model_flops(phase: PhaseConfig, model_cfg: VideoVAEConfig) -> tuple[float, list[tuple[tuple, float]]]:
    """FLOPs of one whole-batch forward + backward (no recompute), and the 3x3x3 conv FLOPs at each level's
    shape ``(width, frames, side)``, counted on the meta device."""
    from torch.utils.flop_counter import FlopCounterMode

    with torch.device("meta"):
        model = VideoVAE(dataclasses.replace(model_cfg, gradient_checkpointing=False))
        x = torch.randn(phase.batch_size, 3, phase.frames, phase.resolution, phase.resolution)
    shapes: dict[tuple, float] = {}

    def record(module, inputs, output):
        _, c, t, h, w = output.shape  # the output's frames: the input has the causal padding's frames too
        if module.kernel_size == (3, 3, 3) and module.in_channels == module.out_channels:
            flops = 3 * 2 * phase.batch_size * t * h * w * c * c * 27
            shapes[(c, t, h)] = shapes.get((c, t, h), 0.0) + flops

    hooks = [m.register_forward_hook(record) for m in model.modules() if isinstance(m, torch.nn.Conv3d)]
    counter = FlopCounterMode(display=False)
    with counter:
        x_hat, mean, logvar = model(x, sample=False)
        (x_hat.abs().mean() + mean.square().mean()).backward()
    for hook in hooks:
        hook.remove()
    return float(counter.get_total_flops()), sorted(shapes.items(), key=lambda kv: -kv[1])


def ceiling(phase: PhaseConfig, micro: int, shapes: list[tuple[tuple, float]], steps: int) -> float:
    """bf16 Conv3d 3x3x3 fwd+bwd TFLOP/s at the model's level shapes, combined as FLOP-weighted time."""
    from benchmarks.bench_apt_gpu import conv_ceiling

    total = sum(f for _, f in shapes)
    seconds = 0.0
    for (c, t, h), flops in shapes:
        rate = conv_ceiling(c, (micro, c, t, h, h), torch.bfloat16, False, steps)
        seconds += flops / (rate * 1e12)
    return total / seconds / 1e12


def child(args) -> None:
    name, key = args.child.split("|")
    variant = {**VARIANTS, **MEANS}[key]
    print("RESULT " + json.dumps(run_variant(args, name, variant)))


def partial_result(stdout: str) -> dict:
    """What a variant cut by the timeout measured: ``STEP i seconds_since_first peak_gib`` lines of its steps.
    Step i's line is printed when step i starts, so ``i`` lines mean i - 1 steps finished; the first step (cuDNN
    autotuning) is left out of the step time when a later one finished."""
    steps = [tuple(float(x) for x in line.split()[1:]) for line in stdout.splitlines() if line.startswith("STEP ")]
    if len(steps) < 2:
        return {}
    done = len(steps) - 1
    sec = (steps[-1][1] - steps[1][1]) / (done - 1) if done >= 2 else steps[1][1]
    return {"partial_steps": done, "sec_partial": sec, "peak_gib_partial": steps[-1][2],
            "first_step_s": steps[1][1]}


def run_child(phase: str, key: str, timeout: float) -> dict:
    cmd = [sys.executable, __file__, "--child", f"{phase}|{key}", *sys.argv[1:]]
    try:
        proc = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout)
    except subprocess.TimeoutExpired as e:
        out = e.stdout.decode() if isinstance(e.stdout, bytes) else (e.stdout or "")
        partial = partial_result(out)
        print(f"  {phase} {key}: no result within {timeout:.0f} s; {partial or 'no step finished'}", flush=True)
        return {"error": f"timed out after {timeout:.0f} s", **partial}
    result = [line for line in proc.stdout.splitlines() if line.startswith("RESULT ")]
    if proc.returncode != 0 or not result:
        oom = "OutOfMemoryError" in proc.stderr or "out of memory" in proc.stderr
        tail = proc.stderr.strip().splitlines()[-1:] or [f"exit {proc.returncode}"]
        print(f"  {phase} {key}: {'out of memory' if oom else 'failed'}: {tail[0][:300]}", flush=True)
        return {"error": "out of memory" if oom else tail[0][:300]}
    row = json.loads(result[0][len("RESULT "):])
    print(f"  {phase} {key}: {row['sec']:.2f} s/step, peak {row['peak_gib']:.1f} GiB", flush=True)
    return row


def write_markdown(report: dict, path: Path) -> None:
    lines = ["# Video VAE training step on one GPU, per curriculum phase", "",
             f"Measured {report['date']} on {report['device']}, torch {report['torch']}, by `{report['command']}`.",
             f"Model: `lib.models.video_vae.GPU_PRESET` ({report['model']}), bf16 autocast, AdamW, activation "
             f"checkpointing of every ResBlock, random clips on the GPU (the step, not the loader). The model's "
             f"checkpoint_levels is each phase's (`lib.train.curriculum.GPU_PRESET`: "
             + ", ".join(f"{p.name} {p.checkpoint_levels or 0}" for p in GPU_CURRICULUM.phases)
             + "): that many levels from full resolution are recomputed as whole segments.", "",
             "| phase | batch | micro-batch | variant | s/step | samples/s | peak GiB | TFLOP/s | ceiling TFLOP/s | "
             "% of ceiling |", "|---|---:|---:|---|---:|---:|---:|---:|---:|---:|"]
    for p in report["phases"]:
        for v in p["variants"]:
            if "error" in v and "sec_partial" in v:  # cut by the timeout after some steps: say so beside them
                lines.append(f"| {p['name']} | {p['batch_size']} | {p['micro_batch']} | {v['variant']} | "
                             f"{v['sec_partial']:.2f} ({v['partial_steps']} of the steps, {v['error']}) | "
                             f"{p['batch_size'] / v['sec_partial']:.2f} | >= {v['peak_gib_partial']:.1f} | | "
                             f"{p['ceiling_tflops']:.0f} | |")
                continue
            if "error" in v:
                lines.append(f"| {p['name']} | {p['batch_size']} | – | {v['variant']} | {v['error']} | | | | | |")
                continue
            lines.append(f"| {p['name']} | {p['batch_size']} | {v['micro_batch']} | {v['variant']} | "
                         f"{v['sec']:.2f} | {p['batch_size'] / v['sec']:.2f} | {v['peak_gib']:.1f} | "
                         f"{v['tflops']:.0f} | {p['ceiling_tflops']:.0f} | "
                         f"{100 * v['tflops'] / p['ceiling_tflops']:.0f}% |")
    lines += ["", "TFLOP/s: model FLOPs of a whole-batch forward + backward (no checkpoint recompute) per second. "
              "Ceiling: bf16 Conv3d 3x3x3 forward + backward at each level's shape, weighted by the model's FLOPs "
              "there, measured in the same run.", ""]
    path.write_text("\n".join(lines))


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--out", type=Path, default=Path("reports/benchmarks"), help="folder of vae_gpu.json / .md")
    ap.add_argument("--phases", default=",".join(p.name for p in GPU_CURRICULUM.phases),
                    help="comma-separated phase names of lib.train.curriculum.GPU_PRESET")
    ap.add_argument("--steps", type=int, default=3, help="timed optimiser steps per variant")
    ap.add_argument("--warmup", type=int, default=2, help="untimed steps first (cuDNN autotuning, compilation)")
    ap.add_argument("--means", action="store_true", help="also run the rows that take one saving away")
    ap.add_argument("--no-compile", action="store_true", help="skip the torch.compile variant")
    ap.add_argument("--child-timeout", type=float, default=420, help="seconds one variant may take")
    ap.add_argument("--child", help=argparse.SUPPRESS)  # internal: one phase|variant, print JSON
    args = ap.parse_args()
    if not torch.cuda.is_available():
        sys.exit("bench_vae_gpu: needs a CUDA GPU (see README, 'GPU install')")
    torch.backends.cudnn.benchmark = True
    if args.child:
        child(args)
        return

    json_path = args.out / "vae_gpu.json"
    report = json.loads(json_path.read_text()) if json_path.is_file() else {}
    report.update({"device": torch.cuda.get_device_name(), "torch": torch.__version__,
                   "date": dt.date.today().isoformat(), "command": "python " + " ".join(sys.argv),
                   "model": f"{VideoVAE(GPU_PRESET).param_count():,} params, {GPU_PRESET}"})
    phases = {p["name"]: p for p in report.get("phases", [])}
    print(f"{report['device']}, torch {report['torch']}; {report['model']}", flush=True)
    for name in args.phases.split(","):
        phase = next(p for p in GPU_CURRICULUM.phases if p.name == name)
        micro = phase.micro_batch or phase.batch_size
        flops, shapes = model_flops(phase, GPU_PRESET)
        ceil = ceiling(phase, micro, shapes, 10)
        torch.cuda.empty_cache()  # the ceiling's cached blocks (~4 GiB at 1024 px) would sit beside each child run
        print(f"{name}: {flops / 1e12:.1f} TFLOP per step; conv ceiling {ceil:.0f} TFLOP/s", flush=True)
        keys = [k for k in VARIANTS if not (args.no_compile and "compile" in k)] + (list(MEANS) if args.means else [])
        rows = []
        for key in keys:
            row = {"variant": key, **run_child(name, key, args.child_timeout)}
            if "sec" in row:
                row["tflops"] = flops / row["sec"] / 1e12
            rows.append(row)
        ok = [r for r in rows if "sec" in r and r["variant"] in VARIANTS]
        best = min(ok, key=lambda r: r["sec"]) if ok else {}
        phases[name] = {"name": name, "resolution": phase.resolution, "frames": phase.frames,
                        "batch_size": phase.batch_size, "micro_batch": micro, "variants": rows,
                        "best_variant": best.get("variant"), "peak_gib": best.get("peak_gib"),
                        "samples_per_s": phase.batch_size / best["sec"] if best else None,
                        "tflops": best.get("tflops"), "ceiling_tflops": ceil}
        report["phases"] = [phases[p.name] for p in GPU_CURRICULUM.phases if p.name in phases]
        args.out.mkdir(parents=True, exist_ok=True)
        json_path.write_text(json.dumps(report, indent=1))
        write_markdown(report, args.out / "vae_gpu.md")
    print(f"wrote {json_path} and {args.out / 'vae_gpu.md'}")


if __name__ == "__main__":
    main()
