"""GPU benchmark of the WHOLE APT training step as train_apt runs it: the shared Trainer (accelerate) with
APT's step_fn — D phase (non-saturating loss, lazy R1 with its double backward), G phase (adversarial +
feature matching + L1, D frozen), grad clipping, two Adam steps, EMA of G.

    python benchmarks/bench_apt_step_gpu.py [--batch 2] [--frames 16] [--hq 256] [--steps 24] [--warmup 8]

Each variant (fp32 eager; bf16; bf16 + channels_last_3d; bf16 + channels_last_3d + torch.compile; the same with
the rpgan_r1r2 loss, whose approximate R1/R2 let the compiled D serve every term) runs in
its own process (accelerate's precision is process-wide) on random LQ/HQ tensors already on the GPU, so the
figure is the step, not the loader. Time per step = wall time from the start of step ``warmup`` to the start of
step ``warmup + steps`` (``--steps`` a multiple of r1_every), so EMA, clipping, optimiser and logging count and
the final checkpoint does not.
FLOPs: torch.utils.flop_counter on one eager fp32 step without R1 (the counter cannot follow R1's double
backward), so TFLOP/s is a lower bound. Needs CUDA; never run in CI.
"""
from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from lib.losses.gan import APTLoss  # noqa: E402
from lib.models.video_sr import GPU_PRESET  # noqa: E402
from lib.train.apt import build_models, from_section, make_step_fn  # noqa: E402
from lib.train.loop import Trainer  # noqa: E402

VARIANTS = {
    "fp32 eager": {"mixed_precision": "fp32"},
    "bf16 eager": {"mixed_precision": "bf16"},
    "bf16 + channels_last_3d": {"mixed_precision": "bf16", "channels_last": True},
    "bf16 + channels_last_3d + compile": {"mixed_precision": "bf16", "channels_last": True, "compile": True},
    # SeedVR2's loss: approximate R1/R2 need no double backward, so the compiled D serves every term
    "rpgan_r1r2, bf16 + channels_last_3d + compile": {"mixed_precision": "bf16", "channels_last": True,
                                                      "compile": True, "loss": {"kind": "rpgan_r1r2", "r1": 1000.0,
                                                                                "r2": 1000.0, "fm": 0.1,
                                                                                "recon": 0.1}},
    # the profile's slow D layers replaced: k(3,3,3) convs, a pixel-unshuffle stem instead of the 3-channel conv
    "rpgan_r1r2, D k3 + space_to_depth, bf16 + channels_last_3d + compile": {
        "mixed_precision": "bf16", "channels_last": True, "compile": True, "disc_kernel": 3,
        "disc_stem": "space_to_depth", "loss": {"kind": "rpgan_r1r2", "r1": 1000.0, "r2": 1000.0, "fm": 0.1,
                                                "recon": 0.1}},
}


def section(args, out_dir: str, **variant) -> dict:
    """A train_apt section for the GPU preset at the benchmark's shapes."""
    model = {"scale": GPU_PRESET.scale, "channels": GPU_PRESET.channels, "blocks": GPU_PRESET.blocks}
    return {"steps": args.warmup + args.steps + 1, "batch_size": args.batch, "warmup_steps": 0, "tracker": "none",
            "checkpoint_every": 10_000, "log_every": 4, "out_dir": out_dir, "model": model, "disc": "patch",
            "disc_channels": args.disc_channels, "loss": {"recon": 1.0}, "degrade": {"scale": GPU_PRESET.scale},
            "crop": args.hq, "clip_frames": args.frames, **variant}  # a variant's "loss" replaces the default


def random_data(cfg, batch: int, frames: int, hq: int):
    lq_size = hq // cfg.model.scale
    g = torch.Generator(device="cuda").manual_seed(0)
    lq = torch.rand(batch, 3, frames, lq_size, lq_size, device="cuda", generator=g) * 2 - 1
    hq_t = torch.rand(batch, 3, frames, hq, hq, device="cuda", generator=g) * 2 - 1

    def data(start_step: int):
        while True:
            yield {"lq": lq, "hq": hq_t}

    return data


def run_variant(args, name: str) -> dict:
    """Train ``warmup + steps`` steps with one variant; return its timing and memory."""
    cfg = from_section(section(args, tempfile.mkdtemp(), **VARIANTS[name]))
    stamps: list[float] = []
    step_fn = make_step_fn(APTLoss(cfg.loss), compile=cfg.compile, channels_last=cfg.channels_last)

    profiler = None

    def stamped(trainer, batch, step):
        nonlocal profiler
        torch.cuda.synchronize()
        stamps.append(time.perf_counter())
        if args.profile and step == args.warmup:
            profiler = torch.profiler.profile(record_shapes=True)
            profiler.__enter__()
        if args.profile and step == args.warmup + 4:  # 4 steps: one R1 step among them
            profiler.__exit__(None, None, None)
            table = profiler.key_averages(group_by_input_shape=True).table(
                sort_by="cuda_time_total", row_limit=25, max_name_column_width=40, max_shapes_column_width=70)
            print(table, file=sys.stderr)
        return step_fn(trainer, batch, step)

    trainer = Trainer(cfg.train, build_models(cfg), stamped, random_data(cfg, args.batch, args.frames, args.hq),
                      ema_models=["G"])
    torch.cuda.reset_peak_memory_stats()
    trainer.run(progress=False)
    # from the start of step `warmup` to the start of step `warmup + steps`: whole R1 cycles, and not the
    # final checkpoint and weight export that follow the last step
    sec = (stamps[args.warmup + args.steps] - stamps[args.warmup]) / args.steps
    return {"variant": name, "sec": sec, "peak_gib": torch.cuda.max_memory_allocated() / 2**30,
            "first_steps_s": stamps[args.warmup] - stamps[0]}


def count_flops(args, variant: str) -> tuple[float, bool]:
    """Mean FLOPs of one step of ``variant``'s loss (eager fp32), and whether that is exact.

    rpgan_r1r2: exact, the penalty step and a plain step counted and weighted by ``r1_every``. ns_r1: the step
    WITHOUT R1, a lower bound: FlopCounterMode's module tracking cannot run inside R1's
    ``autograd.grad(create_graph=True)`` (torch 2.11: "A leaf node was passed to _will_engine_execute_node").
    """
    from torch.utils.flop_counter import FlopCounterMode

    overrides = {k: v for k, v in VARIANTS[variant].items() if k == "loss"}
    cfg = from_section(section(args, tempfile.mkdtemp(), **overrides))
    models = {k: m.cuda() for k, m in build_models(cfg).items()}
    loss = APTLoss(cfg.loss)
    batch = next(random_data(cfg, args.batch, args.frames, args.hq)(0))

    def one_step(step: int) -> float:
        counter = FlopCounterMode(display=False)
        with counter:
            with torch.no_grad():
                fake = models["G"](batch["lq"])
            loss.discriminator_step(models["D"], batch["hq"], fake, step=step)[0].backward()
            loss.generator_step(models["G"], models["D"], batch["lq"], batch["hq"])[0].backward()
        return float(counter.get_total_flops())

    plain = one_step(1)  # step 1: no penalty
    if loss.needs_double_backward:
        return plain, False
    every = cfg.loss.r1_every
    return (one_step(0) + (every - 1) * plain) / every, True


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--batch", type=int, default=2)
    ap.add_argument("--frames", type=int, default=16)
    ap.add_argument("--hq", type=int, default=256)
    ap.add_argument("--disc-channels", type=int, default=64)
    ap.add_argument("--steps", type=int, default=24, help="timed steps (a multiple of loss.r1_every=4)")
    ap.add_argument("--warmup", type=int, default=8)
    ap.add_argument("--json", type=Path, help="merge the figures into this JSON under 'step' "
                    "(reports/benchmarks/apt_gpu.json)")
    ap.add_argument("--only", action="append", choices=list(VARIANTS), metavar="VARIANT",
                    help="run only this variant (repeatable; the first is the speed-up's reference); "
                         f"variants: {'; '.join(VARIANTS)}")
    ap.add_argument("--variant", help=argparse.SUPPRESS)  # internal: run one variant, print JSON
    ap.add_argument("--profile", action="store_true",
                    help="with --variant NAME: print torch.profiler's top ops (by CUDA time) over 4 steps")
    args = ap.parse_args()
    if not torch.cuda.is_available():
        sys.exit("needs a CUDA GPU")
    torch.backends.cudnn.benchmark = True
    torch.backends.cuda.matmul.allow_tf32 = False
    torch.backends.cudnn.allow_tf32 = False  # fp32 means fp32 here
    if args.variant:
        print("RESULT " + json.dumps(run_variant(args, args.variant)))
        return

    cfg = from_section(section(args, "unused"))
    print(f"{torch.cuda.get_device_name()}, torch {torch.__version__}; G {cfg.model} + PatchDiscriminator3D"
          f"(channels={cfg.disc_channels}); loss {cfg.loss}; batch {args.batch} x {args.frames} frames, "
          f"LQ {cfg.lq_size}^2 -> HQ {args.hq}^2", flush=True)
    names = args.only or list(VARIANTS)
    flops = {name: count_flops(args, name) for name in names}
    rows = []
    for name in names:
        cmd = [sys.executable, __file__, "--variant", name, *sys.argv[1:]]
        proc = subprocess.run(cmd, capture_output=True, text=True)
        result = [line for line in proc.stdout.splitlines() if line.startswith("RESULT ")]
        if proc.returncode != 0 or not result:
            print(f"{name}: failed (exit {proc.returncode}):\n{proc.stderr[-2500:]}", flush=True)
            rows.append({"variant": name, "sec": float("nan"), "peak_gib": float("nan"), "first_steps_s": 0.0})
        else:
            rows.append(json.loads(result[0][len("RESULT "):]))
            print(f"{name}: {rows[-1]['sec'] * 1e3:.1f} ms/step", flush=True)
    from benchmarks.bench_apt_gpu import conv_ceiling

    trunk = (args.batch, cfg.model.channels, args.frames, cfg.lq_size, cfg.lq_size)
    ceiling = conv_ceiling(cfg.model.channels, trunk, torch.bfloat16, True, 20)
    base = rows[0]["sec"]
    print(f"\n{'variant':48} {'ms/step':>8} {'samples/s':>10} {'peak GiB':>9} {'speed-up':>9} {'TFLOP/s':>8} "
          f"{'% ceil':>7} {'warm-up s':>9}")
    step = {}
    for r in rows:
        f, exact = flops[r["variant"]]
        tflops = f / r["sec"] / 1e12
        step[r["variant"]] = {"samples_per_s": args.batch / r["sec"], "tflops": tflops, "tflops_exact": exact,
                              "ceiling_tflops": ceiling, "peak_gib": r["peak_gib"], "ms_per_step": r["sec"] * 1e3}
        print(f"{r['variant']:48} {r['sec'] * 1e3:8.1f} {args.batch / r['sec']:10.2f} {r['peak_gib']:9.2f} "
              f"{base / r['sec']:9.2f} {tflops:8.1f}{'' if exact else '+'} {100 * tflops / ceiling:6.0f}% "
              f"{r['first_steps_s']:9.1f}")
    print(f"+: ns_r1 FLOPs without R1's double backward, a lower bound. conv3d 3x3x3 fwd+bwd bf16 channels_last_3d "
          f"ceiling at G's trunk {list(trunk)}: {ceiling:.1f} TFLOP/s")
    if args.json:
        report = json.loads(args.json.read_text()) if args.json.is_file() else {}
        report.update({"device": torch.cuda.get_device_name(), "torch": torch.__version__,
                       "date": __import__("datetime").date.today().isoformat(),
                       "command": "python " + " ".join(sys.argv), "step": step})
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps(report, indent=1))
        print(f"wrote the step figures to {args.json} (key 'step'; other keys kept)")


if __name__ == "__main__":
    main()
