"""Benchmark: what the video VAE's 256 px phase costs the trainer's process per step on 1024 px clips, with the
square crop + resize made there (as before) or in the loader's workers (``iterate_steps(transform=)``, now).

    python benchmarks/bench_vae_loader.py [--clips 16] [--height 1024] [--steps 6] [--workers 2] [--json out.json]

Writes ``--clips`` SSv2-format clips (VP9, 1024 px high, 4:3) into a temporary folder, then for each variant,
one after the other on the same clips and loader settings (batch 16 x 8 frames, the GPU preset's 256 px phase):

  crop in main     loader batches of uint8 1024 px frames, ``training_crop`` in this process (the old data path)
  crop in workers  ``make_data_fn``'s path: the loader's workers return 256 px float crops

and prints per step: wall seconds, and the CPU seconds of this process (what a GPU's feeder thread has to spend:
unpickling the batch from shared memory, the crop). Beside them, the crop alone on one 1024 px batch, resized as
uint8 (now) and as float32 (before), one thread. Ratios are measured side by side in one run.
"""
from __future__ import annotations

import argparse
import functools
import json
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import pandas as pd
import torch
import torch.nn.functional as F

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from lib.data.clips import ClipSpec  # noqa: E402
from lib.data.video_dataset import VideoLoaderConfig, iterate_steps  # noqa: E402
from lib.train.video_vae import micro_batch_seed, square_resize_crop, training_crop  # noqa: E402
from lib.video.encode import EncodeSettings, write_video  # noqa: E402

FRAMES, BATCH, SIZE = 8, 16, 256  # lib.train.curriculum.GPU_PRESET's first phase


def write_clips(root: Path, count: int, height: int) -> Path:
    """``count`` VP9 clips of 24 frames, ``height`` px high, 4:3, and their ingest-style manifest."""
    width = height * 4 // 3
    rows = []
    for k in range(count):
        rng = np.random.default_rng(k)
        coarse = rng.integers(0, 255, (height // 16 + 1, (width + 48) // 16 + 1, 3), dtype=np.uint8)
        base = coarse.repeat(16, axis=0).repeat(16, axis=1)[:height, :width + 48]
        frames = [np.ascontiguousarray(base[:, 2 * i:2 * i + width]) for i in range(24)]
        write_video(root / f"{k}.webm", frames, fps=12, settings=EncodeSettings(keyframe_interval=12))
        rows.append({"id": str(k), "split": "train", "label": "l", "template": "t", "class_index": 0,
                     "path": f"{k}.webm", "frames": 24, "fps": 12.0, "width": width, "height": height})
    manifest = root / "manifest.parquet"
    pd.DataFrame(rows).to_parquet(manifest)
    return manifest


def run(loader: VideoLoaderConfig, steps: int, in_workers: bool) -> dict:
    crop = {"seed": 0, "phase_index": 0, "resolution": SIZE}
    transform = functools.partial(training_crop, **crop) if in_workers else None
    it = iterate_steps(loader, steps + 1, transform=transform)
    next(it)  # workers started, first batch in: not timed
    wall, cpu = time.perf_counter(), time.process_time()
    for step, batch in it:
        out = batch if in_workers else training_crop(step, batch, **crop)
        assert out["video"].shape[1:] == (3, FRAMES, SIZE, SIZE)
    return {"wall_s_per_step": (time.perf_counter() - wall) / steps,
            "main_cpu_s_per_step": (time.process_time() - cpu) / steps}


def crop_alone(height: int) -> dict:
    """One 1024 px batch's crop + resize, one thread: uint8 resize (now) against float32 (before)."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    video = torch.randint(0, 256, (BATCH, 3, FRAMES, height, height * 4 // 3), dtype=torch.uint8)
    t = time.perf_counter()
    square_resize_crop(video, SIZE, torch.Generator().manual_seed(micro_batch_seed(0, 0, 0)))
    uint8_s = time.perf_counter() - t
    t = time.perf_counter()
    x = video[..., :height].to(torch.float32) / 127.5 - 1.0
    frames = x.transpose(1, 2).reshape(BATCH * FRAMES, 3, height, height)
    F.interpolate(frames, size=(SIZE, SIZE), mode="bilinear", align_corners=False, antialias=True)
    float_s = time.perf_counter() - t
    torch.set_num_threads(threads)
    return {"uint8_s": uint8_s, "float32_s": float_s}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--clips", type=int, default=16)
    ap.add_argument("--height", type=int, default=1024)
    ap.add_argument("--steps", type=int, default=6, help="timed steps per variant (after one untimed)")
    ap.add_argument("--workers", type=int, default=2)
    ap.add_argument("--json", type=Path, help="also write the figures here")
    args = ap.parse_args()
    if args.clips < BATCH:
        print(f"note: {args.clips} clips < batch {BATCH}: the loader repeats epochs (drop_last off)")
    with tempfile.TemporaryDirectory() as tmp:
        t = time.perf_counter()
        manifest = write_clips(Path(tmp), args.clips, args.height)
        print(f"wrote {args.clips} clips {args.height} px high in {time.perf_counter() - t:.1f} s", flush=True)
        loader = VideoLoaderConfig(manifest=str(manifest), split="train", batch_size=BATCH,
                                   clip=ClipSpec(FRAMES, 1, "random"), num_workers=args.workers, prefetch_factor=2,
                                   backend="pyav", drop_last=False)
        rows = {}
        for name, in_workers in (("crop in main", False), ("crop in workers", True)):
            rows[name] = run(loader, args.steps, in_workers)
            print(f"{name:16s} {rows[name]['wall_s_per_step']:6.2f} s/step wall, "
                  f"{rows[name]['main_cpu_s_per_step']:6.2f} CPU s/step in the trainer's process", flush=True)
    alone = crop_alone(args.height)
    print(f"crop + resize of one batch, 1 thread: uint8 {alone['uint8_s']:.2f} s, float32 {alone['float32_s']:.2f} s")
    report = {"clips": args.clips, "height": args.height, "batch": BATCH, "frames": FRAMES, "size": SIZE,
              "workers": args.workers, "steps": args.steps, "variants": rows, "crop_alone": alone,
              "command": " ".join(["python", "benchmarks/bench_vae_loader.py", *sys.argv[1:]])}
    if args.json:
        args.json.write_text(json.dumps(report, indent=1) + "\n")


if __name__ == "__main__":
    main()
