"""Does the video VAE learn faster with DC-AE's shortcuts? The same training, with and without, side by side.

    python benchmarks/bench_vae_shortcuts.py [--steps 1000] [--eval-every 250] [--out reports/benchmarks]

Both variants start from the same weights (the shortcuts have no parameters, so one state dict serves both), see
the same batches in the same order and train with the same loss (``VideoVAELoss``: L1 + 1e-4 KL with a 50-step
warm-up, as ``params.yaml``'s video VAEs), AdamW, lr 1e-3 with a 50-step warm-up and cosine decay to 10%, gradient
clip 1. The model is ``train_video_vae``'s CPU default (width 16, latent 4, time x2, space x4, 112,203 params).

Data: a pool of training clips drawn once from the ingested train split (``data/interim/ssv2/manifest.parquet``:
random clip starts, random full-short-side squares resized to ``--res``, ``--frames`` frames at stride 2),
sampled with replacement per batch, left-right flips. Held out: ``eval_vae``'s clips (the validation split's
first 8, time-centred, centre square). Score: PSNR of the posterior-mean reconstruction against the clip, beside
the equal-values bicubic codec of ``lib.eval.video_vae`` (the baseline ``eval_vae`` reports). CPU only; each
variant takes ~0.75 s a step on 2 cores at 64 px, 8 frames, batch 8. Writes ``vae_shortcuts.{json,md}``.
"""
from __future__ import annotations

import argparse
import dataclasses
import datetime as dt
import json
import math
import platform
import sys
import time
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from lib.data.clips import ClipSpec  # noqa: E402
from lib.data.video_dataset import SSv2ClipDataset  # noqa: E402
from lib.eval.apt import psnr  # noqa: E402
from lib.eval.video_vae import baseline_size, bicubic_codec  # noqa: E402
from lib.losses.vae import VideoVAELoss, VideoVAELossWeights  # noqa: E402
from lib.models.video_vae import VideoVAE, VideoVAEConfig  # noqa: E402
from lib.train.video_vae import square_resize_crop, validation_clips  # noqa: E402
from lib.video.degrade import to_unit  # noqa: E402

MANIFEST = ROOT / "data/interim/ssv2/manifest.parquet"
CONFIG = VideoVAEConfig(channels=16, latent_channels=4, temporal_compression=2, spatial_compression=4, blocks=1)


def clip_pool(manifest: Path, count: int, res: int, frames: int, seed: int = 0) -> torch.Tensor:
    """``count`` training clips ``[N, 3, frames, res, res]`` in [-1, 1], cycling through the train split."""
    ds = SSv2ClipDataset(manifest, "train", clip=ClipSpec(frames, 2, "random"), seed=seed)
    g = torch.Generator().manual_seed(seed)
    return torch.stack([square_resize_crop(ds[(k % len(ds), k // len(ds))]["video"][None], res, g)[0]
                        for k in range(count)])


def held_out_psnr(model: VideoVAE, clips: torch.Tensor) -> float:
    model.eval()
    with torch.no_grad():
        out = torch.cat([model(clips[i:i + 2], sample=False)[0] for i in range(0, len(clips), 2)])
    model.train()
    return float(psnr(to_unit(out.clamp(-1, 1)), to_unit(clips)).mean())


def train(cfg: VideoVAEConfig, state: dict, pool: torch.Tensor, val: torch.Tensor, args) -> list[dict]:
    """Train one variant from ``state``; return the held-out PSNR every ``eval_every`` steps."""
    model = VideoVAE(cfg)
    model.load_state_dict(state)
    loss_fn = VideoVAELoss(VideoVAELossWeights(recon="l1", beta=1e-4, kl_warmup_steps=50))
    opt = torch.optim.AdamW(model.parameters(), lr=args.lr, betas=(0.9, 0.99), weight_decay=0.0)
    sched = torch.optim.lr_scheduler.LambdaLR(opt, lambda s: min(1.0, (s + 1) / 50) * (
        0.1 + 0.45 * (1 + math.cos(math.pi * min(s, args.steps) / args.steps))))
    g = torch.Generator().manual_seed(1)
    noise = torch.Generator().manual_seed(2)
    history, start = [], time.perf_counter()
    for step in range(1, args.steps + 1):
        x = pool[torch.randint(0, len(pool), (args.batch,), generator=g)]
        if torch.rand(1, generator=g) < 0.5:
            x = x.flip(-1)
        x_hat, mean, logvar = model(x, generator=noise)
        loss, _ = loss_fn(x, x_hat, mean, logvar, step)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        opt.step()
        sched.step()
        if step % args.eval_every == 0 or step == args.steps:
            history.append({"step": step, "psnr": held_out_psnr(model, val),
                            "seconds": time.perf_counter() - start})
            print(f"  shortcuts={cfg.shortcuts} step {step}: held-out PSNR {history[-1]['psnr']:.2f} dB "
                  f"({history[-1]['seconds']:.0f} s)", flush=True)
    return history


def write_markdown(report: dict, path: Path) -> None:
    runs = {r["shortcuts"]: r for r in report["runs"]}
    steps = [h["step"] for h in runs[False]["history"]]
    lines = ["# Video VAE: DC-AE shortcuts against none, the same training side by side", "",
             f"Measured {report['date']} on {report['machine']} by `{report['command']}`. Model: "
             f"`train_video_vae`'s CPU default ({report['params']:,} params, latent {CONFIG.latent_channels} ch, "
             f"time x{CONFIG.temporal_compression}, space x{CONFIG.spatial_compression}); clips "
             f"{report['res']} px, {report['frames']} frames, batch {report['batch']}, lr {report['lr']}; a pool "
             f"of {report['pool']} training clips; held out: {report['val_clips']} validation clips. Both variants "
             f"start from the same weights and see the same batches. Baseline: bicubic at equal values "
             f"(`lib.eval.video_vae.bicubic_codec`, {report['bicubic_side']} px frames), "
             f"**{report['bicubic_psnr']:.2f} dB** on the same clips.", "",
             "| step | no shortcuts (dB) | shortcuts (dB) | gain (dB) | shortcuts - bicubic (dB) |",
             "|---:|---:|---:|---:|---:|"]
    for i, step in enumerate(steps):
        a, b = runs[False]["history"][i]["psnr"], runs[True]["history"][i]["psnr"]
        lines.append(f"| {step} | {a:.2f} | {b:.2f} | {b - a:+.2f} | {b - report['bicubic_psnr']:+.2f} |")
    lines += ["", f"Seconds for {steps[-1]} steps: {runs[False]['history'][-1]['seconds']:.0f} without, "
              f"{runs[True]['history'][-1]['seconds']:.0f} with shortcuts.", ""]
    path.write_text("\n".join(lines))


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--steps", type=int, default=1000)
    ap.add_argument("--eval-every", type=int, default=250)
    ap.add_argument("--batch", type=int, default=8)
    ap.add_argument("--lr", type=float, default=1e-3)
    ap.add_argument("--res", type=int, default=64)
    ap.add_argument("--frames", type=int, default=8)
    ap.add_argument("--pool", type=int, default=1500, help="training clips drawn once from the train split")
    ap.add_argument("--manifest", type=Path, default=MANIFEST)
    ap.add_argument("--out", type=Path, default=ROOT / "reports/benchmarks")
    args = ap.parse_args()
    if not args.manifest.is_file():
        sys.exit(f"bench_vae_shortcuts: {args.manifest} is missing; run `dvc repro ingest_ssv2` first")
    torch.manual_seed(0)
    t0 = time.perf_counter()
    pool = clip_pool(args.manifest, args.pool, args.res, args.frames)
    val = validation_clips(args.manifest, args.res, args.frames, 2, 8)
    print(f"{len(pool)} training clips, {len(val)} held out ({time.perf_counter() - t0:.0f} s)", flush=True)
    side = baseline_size(args.res, CONFIG, equal_values=True)
    bicubic = float(psnr(to_unit(bicubic_codec(val, side, CONFIG.temporal_compression)), to_unit(val)).mean())
    state = VideoVAE(CONFIG).state_dict()
    runs = []
    for shortcuts in (False, True):
        cfg = dataclasses.replace(CONFIG, shortcuts=shortcuts)
        runs.append({"shortcuts": shortcuts, "history": train(cfg, state, pool, val, args)})
    report = {"date": dt.date.today().isoformat(), "machine": f"{platform.machine()}, {torch.get_num_threads()} "
              f"threads, torch {torch.__version__}", "command": "python " + " ".join(sys.argv),
              "params": VideoVAE(CONFIG).param_count(), "res": args.res, "frames": args.frames,
              "batch": args.batch, "lr": args.lr, "pool": len(pool), "val_clips": len(val),
              "bicubic_side": side, "bicubic_psnr": bicubic, "runs": runs}
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / "vae_shortcuts.json").write_text(json.dumps(report, indent=1) + "\n")
    write_markdown(report, args.out / "vae_shortcuts.md")
    print(f"wrote {args.out / 'vae_shortcuts.json'} and .md")


if __name__ == "__main__":
    main()
