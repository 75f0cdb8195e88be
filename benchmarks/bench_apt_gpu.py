"""GPU benchmark of the APT generator's training step (GPU preset): fp32 eager vs bf16 variants, beside the
cuDNN conv3d ceiling measured at the trunk's shapes in the same run.

    python benchmarks/bench_apt_gpu.py [--batch 2] [--frames 16] [--hq 256] [--steps 20]

Prints samples/s, peak memory, speed-up over fp32 eager, achieved TFLOP/s of a training step (FLOPs counted
with torch.utils.flop_counter on one step) and the ceiling TFLOP/s of one Conv3d(C, C, 3) forward+backward
at the trunk's activation shape, for fp32 and bf16 channels_last_3d. Needs CUDA; never run in CI.
"""
from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import torch
import torch.nn.functional as F
from torch.utils.flop_counter import FlopCounterMode

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from lib.models.video_sr import GPU_PRESET, VideoSRGenerator  # noqa: E402


def timed(fn, steps: int) -> float:
    """Seconds per call of ``fn`` over ``steps`` calls after 3 warm-up calls."""
    for _ in range(3):
        fn()
    torch.cuda.synchronize()
    t = time.perf_counter()
    for _ in range(steps):
        fn()
    torch.cuda.synchronize()
    return (time.perf_counter() - t) / steps


def train_step_fn(model, opt, lq, hq, dtype, channels_last):
    def step():
        x = lq.to(memory_format=torch.channels_last_3d) if channels_last else lq
        with torch.autocast("cuda", dtype=dtype, enabled=dtype != torch.float32):
            loss = F.l1_loss(model(x).float(), hq)
        loss.backward()
        opt.step()
        opt.zero_grad(set_to_none=True)
    return step


def conv_ceiling(channels: int, shape: tuple[int, ...], dtype, channels_last: bool, steps: int) -> float:
    """TFLOP/s of Conv3d(channels, channels, 3, padding=1) forward + backward at ``shape`` [B, C, T, H, W]."""
    conv = torch.nn.Conv3d(channels, channels, 3, padding=1).cuda().to(dtype)
    x = torch.randn(shape, device="cuda", dtype=dtype, requires_grad=True)
    if channels_last:
        conv = conv.to(memory_format=torch.channels_last_3d)
        x = x.detach().to(memory_format=torch.channels_last_3d).requires_grad_()

    def step():
        conv(x).sum().backward()

    b, c, t, h, w = shape
    flops = 3 * 2 * b * t * h * w * c * c * 27  # forward + grad input + grad weight
    return flops / timed(step, steps) / 1e12


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--batch", type=int, default=2)
    ap.add_argument("--frames", type=int, default=16)
    ap.add_argument("--hq", type=int, default=256)
    ap.add_argument("--steps", type=int, default=20)
    args = ap.parse_args()
    if not torch.cuda.is_available():
        sys.exit("needs a CUDA GPU")
    torch.backends.cudnn.benchmark = True
    torch.backends.cuda.matmul.allow_tf32 = False
    torch.backends.cudnn.allow_tf32 = False  # fp32 means fp32 here
    cfg = GPU_PRESET
    lr_size = args.hq // cfg.scale
    lq = torch.rand(args.batch, 3, args.frames, lr_size, lr_size, device="cuda") * 2 - 1
    hq = torch.rand(args.batch, 3, args.frames, args.hq, args.hq, device="cuda") * 2 - 1
    print(f"{torch.cuda.get_device_name()}, torch {torch.__version__}; generator {cfg} "
          f"({sum(p.numel() for p in VideoSRGenerator(cfg).parameters()) / 1e6:.1f} M params); "
          f"batch {args.batch} x {args.frames} frames, LQ {lr_size}^2 -> HQ {args.hq}^2")

    model = VideoSRGenerator(cfg).cuda()
    flops_counter = FlopCounterMode(display=False)
    with flops_counter:
        F.l1_loss(model(lq), hq).backward()
    step_flops = flops_counter.get_total_flops()
    model.zero_grad(set_to_none=True)

    variants = [("fp32 eager", torch.float32, False, False), ("bf16 eager", torch.bfloat16, False, False),
                ("bf16 + channels_last_3d", torch.bfloat16, True, False),
                ("bf16 + channels_last_3d + compile", torch.bfloat16, True, True)]
    rows = []
    for name, dtype, cl, compiled in variants:
        torch.manual_seed(0)
        m = VideoSRGenerator(cfg).cuda()
        if cl:  # only 5-D conv weights have a channels_last_3d layout
            for mod in m.modules():
                if isinstance(mod, torch.nn.Conv3d):
                    mod.to(memory_format=torch.channels_last_3d)
        opt = torch.optim.Adam(m.parameters(), lr=1e-4, betas=(0.0, 0.99))
        run = torch.compile(m) if compiled else m
        torch.cuda.reset_peak_memory_stats()
        try:
            sec = timed(train_step_fn(run, opt, lq, hq, dtype, cl), args.steps)
            rows.append((name, sec, torch.cuda.max_memory_allocated() / 2**30))
        except Exception as err:  # a variant that fails is reported, the others still run
            rows.append((name, float("nan"), float("nan")))
            print(f"{name}: failed: {type(err).__name__}: {err}")
        del m, opt, run
        torch.cuda.empty_cache()

    base = rows[0][1]
    print(f"\n{'variant':36} {'ms/step':>8} {'samples/s':>10} {'peak GiB':>9} {'speed-up':>9} {'TFLOP/s':>8}")
    for name, sec, mem in rows:
        print(f"{name:36} {sec * 1e3:8.1f} {args.batch / sec:10.2f} {mem:9.2f} {base / sec:9.2f} "
              f"{step_flops / sec / 1e12:8.1f}")
    trunk = (args.batch, cfg.channels, args.frames, lr_size, lr_size)
    fp32_ceiling = conv_ceiling(cfg.channels, trunk, torch.float32, False, args.steps)
    bf16_ceiling = conv_ceiling(cfg.channels, trunk, torch.bfloat16, True, args.steps)
    print(f"\nconv3d 3x3x3 fwd+bwd ceiling at {list(trunk)}: fp32 {fp32_ceiling:.1f} TFLOP/s, "
          f"bf16 channels_last_3d {bf16_ceiling:.1f} TFLOP/s")
    best = min((r for r in rows if r[1] == r[1]), key=lambda r: r[1])
    print(f"best variant '{best[0]}': {step_flops / best[1] / 1e12:.1f} TFLOP/s = "
          f"{100 * step_flops / best[1] / 1e12 / bf16_ceiling:.0f}% of the bf16 ceiling; step FLOPs {step_flops:.3e}")


if __name__ == "__main__":
    main()
