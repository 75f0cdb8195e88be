"""Peak memory of one video VAE training step at the GPU curriculum's shapes, estimated on the CPU in seconds.

    python benchmarks/estimate_vae_memory.py [--out reports/benchmarks]

The step (bf16 autocast forward, the VAE loss, backward) runs on fake tensors (``torch._subclasses.FakeTensorMode``:
shapes and dtypes, no data) under ``torch.distributed._tools.mem_tracker.MemTracker``, which follows every tensor's
lifetime and reports the peak: activations, gradients, temporaries. It runs on the CPU's autocast, whose op lists
are close to CUDA's but not equal, and it has no allocator fragmentation, so it is an estimate: its calibration
row runs the old preset at 256 px/8 frames/batch 16, which the H200 measured at a 59 GiB peak (issue 12), and
the ratio is printed. What it is for is the comparison: the same step with one memory saving at a time, to say
what each buys, and whether each phase of the GPU curriculum can fit 120 GiB before a GPU is spent on it.
Writes ``<out>/vae_memory_estimate.json`` and ``.md``.
"""
from __future__ import annotations

import argparse
import dataclasses
import datetime as dt
import json
import sys
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from lib.models.video_vae import GPU_PRESET, ResBlock, VideoVAE, VideoVAEConfig  # noqa: E402
from lib.models.video_vae import checkpoint as _checkpoint  # noqa: E402
from lib.train.curriculum import GPU_PRESET as GPU_CURRICULUM  # noqa: E402

GIB = 2**30
MEASURED_OLD_256 = 59.0  # GiB: peak of the old preset at 256 px/8 f/batch 16 on one H200 (issue 12's table)
OLD_PRESET = VideoVAEConfig(channels=128, latent_channels=16, temporal_compression=4, spatial_compression=8,
                            blocks=2, gradient_checkpointing=True)


class BlocksOnlyVAE(VideoVAE):
    """The VAE as it checkpointed before: ResBlocks only, whole clips (no Up, heads or time chunks)."""

    def _run(self, layer, x):
        if self.config.gradient_checkpointing and self.training and isinstance(layer, ResBlock):
            return _checkpoint(layer, x, use_reentrant=False)
        return layer(x)


def estimate_peak_gib(cfg: VideoVAEConfig, batch: int, frames: int, side: int, blocks_only: bool = False) -> float:
    """Peak GiB of one step (forward under bf16 autocast, L1 + KL loss, backward) of ``batch`` clips."""
    from torch._subclasses.fake_tensor import FakeTensorMode
    from torch.distributed._tools.mem_tracker import MemTracker

    with FakeTensorMode(allow_non_fake_inputs=True):
        model = (BlocksOnlyVAE if blocks_only else VideoVAE)(cfg).train()
        x = torch.randn(batch, 3, frames, side, side)
        tracker = MemTracker()
        tracker.track_external(model)
        with tracker:
            with torch.autocast("cpu", dtype=torch.bfloat16):
                x_hat, mean, logvar = model(x)
                loss = (x_hat.float() - x).abs().mean() + 1e-4 * (mean.float().square() + logvar.float().exp()
                                                                   - logvar.float()).mean()
            loss.backward()
        return tracker.get_tracker_snapshot("peak")[torch.device("cpu")]["Total"] / GIB


def means_rows() -> list[dict]:
    """1024 px, 49 frames, batch 4: from the old preset, one saving added at a time, to the GPU preset."""
    phase = next(p for p in GPU_CURRICULUM.phases if p.resolution == 1024)
    steps = [
        ("old preset: width 128 at every level, whole batch, ResBlocks checkpointed", OLD_PRESET, phase.batch_size,
         True),
        ("+ micro-batches of 1 (gradient accumulation inside the step)", OLD_PRESET, 1, True),
        ("+ level_channels 64/128/128 (Up narrows before it up-samples)",
         dataclasses.replace(OLD_PRESET, level_channels=GPU_PRESET.level_channels), 1, True),
        ("+ Up and output heads checkpointed too",
         dataclasses.replace(GPU_PRESET, checkpoint_chunk_frames=None), 1, False),
        (f"+ ResBlocks and heads recomputed {GPU_PRESET.checkpoint_chunk_frames} frames at a time (GPU_PRESET)",
         GPU_PRESET, 1, False),
        ("+ levels 0 and 1 recomputed as whole segments (the 1024px phase's checkpoint_levels: 2)",
         dataclasses.replace(GPU_PRESET, checkpoint_levels=2), 1, False),
    ]
    rows = []
    for name, cfg, micro, blocks_only in steps:
        peak = estimate_peak_gib(cfg, micro, phase.frames, phase.resolution, blocks_only)
        rows.append({"means": name, "micro_batch": micro, "peak_gib": peak})
        print(f"{peak:8.1f} GiB  {name}", flush=True)
    return rows


def phase_rows() -> list[dict]:
    rows = []
    for p in GPU_CURRICULUM.phases:
        micro = p.micro_batch or p.batch_size
        levels = GPU_PRESET.checkpoint_levels if p.checkpoint_levels is None else p.checkpoint_levels
        peak = estimate_peak_gib(dataclasses.replace(GPU_PRESET, checkpoint_levels=levels), micro, p.frames,
                                 p.resolution)
        rows.append({"name": p.name, "resolution": p.resolution, "frames": p.frames, "batch_size": p.batch_size,
                     "micro_batch": micro, "checkpoint_levels": levels, "peak_gib": peak})
        print(f"{peak:8.1f} GiB  {p.name} ({p.frames} frames, batch {p.batch_size} as micro-batches of {micro})",
              flush=True)
    return rows


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--out", type=Path, default=Path("reports/benchmarks"))
    args = ap.parse_args()
    calibration = estimate_peak_gib(OLD_PRESET, 16, 8, 256, blocks_only=True)
    print(f"calibration: old preset 256 px/8 f/batch 16: {calibration:.1f} GiB estimated, {MEASURED_OLD_256} "
          f"measured on the H200 ({MEASURED_OLD_256 / calibration:.2f}x)", flush=True)
    report = {"date": dt.date.today().isoformat(), "torch": torch.__version__,
              "command": "python benchmarks/estimate_vae_memory.py",
              "model": f"{VideoVAE(GPU_PRESET).param_count():,} params, {GPU_PRESET}",
              "calibration": {"shape": "256 px, 8 frames, batch 16, old preset", "estimated_gib": calibration,
                              "measured_gib": MEASURED_OLD_256, "ratio": MEASURED_OLD_256 / calibration},
              "means_1024px": means_rows(), "phases": phase_rows()}
    ratio = report["calibration"]["ratio"]
    lines = ["# Video VAE training step: peak memory estimated on the CPU", "",
             f"{report['date']}, torch {report['torch']}, `{report['command']}` (fake tensors under MemTracker, "
             f"CPU bf16 autocast; no GPU). Model: {report['model']}.", "",
             f"Calibration: the old preset at 256 px/8 frames/batch 16 estimates {calibration:.1f} GiB; the H200 "
             f"measured {MEASURED_OLD_256:.0f} GiB, {ratio:.2f}x. The last column scales by that ratio.", "",
             "## What each saving buys (1024 px, 49 frames, batch 4)", "",
             "| means | micro-batch | estimated peak GiB | x calibration |", "|---|---:|---:|---:|"]
    lines += [f"| {r['means']} | {r['micro_batch']} | {r['peak_gib']:.1f} | {r['peak_gib'] * ratio:.1f} |"
              for r in report["means_1024px"]]
    lines += ["", "## The GPU curriculum with GPU_PRESET", "",
              "| phase | frames | batch | micro-batch | checkpoint_levels | estimated peak GiB | x calibration |",
              "|---|---:|---:|---:|---:|---:|---:|"]
    lines += [f"| {r['name']} | {r['frames']} | {r['batch_size']} | {r['micro_batch']} | {r['checkpoint_levels']} | "
              f"{r['peak_gib']:.1f} | {r['peak_gib'] * ratio:.1f} |" for r in report["phases"]]
    lines += ["", "Estimates, not measurements: `benchmarks/bench_vae_gpu.py` measures the same phases on a GPU. On "
              "an H100 on 2026-12-06 (`vae_gpu.md`, before checkpoint_levels) it measured 27.2 GiB at 256px and 44.4 "
              "at 512px, within 3% of the calibrated column; 1024px without checkpoint_levels ran out of 80 GB.", ""]
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / "vae_memory_estimate.json").write_text(json.dumps(report, indent=1))
    (args.out / "vae_memory_estimate.md").write_text("\n".join(lines))
    print(f"wrote {args.out / 'vae_memory_estimate.md'}")


if __name__ == "__main__":
    main()
