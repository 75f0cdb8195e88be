"""Can train_apt's patch discriminator tell HQ clips from bicubic upsampling of their degraded LQ, trained alone?

    python benchmarks/apt_disc_probe.py [--params params.yaml] [--steps 150] [--clips 16]

D (train_apt's PatchDiscriminator3D at the params' disc_channels / kernel / stem) trains on the first ``--clips``
validation clips of <ingest_ssv2.out> (HQ as real, bicubic(degrade(HQ)) as fake: what an untrained G outputs,
since G starts as bicubic plus a small residual), Adam at train_apt's lr and betas, batch 4, under each penalty
setting: none; the params' loss kind with its penalties per logit (as lib.losses.gan computes them); and the same
penalties summed over the patch logits (multiplied by the logits per sample, as before 2026-12-08). Prints the
discriminator loss and the mean real - fake logit gap over all clips every 50 steps: a gap near 0 means D learns
nothing, so G gets no adversarial signal. On CPU, ~10 s a setting with the defaults.
"""
from __future__ import annotations

import argparse
import dataclasses
import sys
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from lib.config import load_section, read_params  # noqa: E402
from lib.eval.apt import validation_clips  # noqa: E402
from lib.losses.gan import (  # noqa: E402
    approximate_gradient_penalty,
    discriminator_nonsaturating,
    discriminator_rpgan,
    r1_penalty,
)
from lib.ssv2.ingest import IngestSSv2Config  # noqa: E402
from lib.train.apt import build_models, from_section  # noqa: E402
from lib.video.degrade import bicubic_upsample  # noqa: E402


def probe(cfg, hq: torch.Tensor, fake: torch.Tensor, penalty: str, steps: int) -> list[tuple[int, float, float]]:
    """Train a fresh D for ``steps``; return ``(step, d_main, logit_gap)`` every 50 steps and at the end."""
    torch.manual_seed(cfg.train.seed)
    D = build_models(cfg)["D"]
    opt = torch.optim.Adam(D.parameters(), lr=cfg.train.lr, betas=tuple(cfg.train.betas))
    w, rpgan = cfg.loss, cfg.loss.kind == "rpgan_r1r2"
    main_loss = discriminator_rpgan if rpgan else discriminator_nonsaturating
    rows = []
    gen = torch.Generator().manual_seed(0)
    for step in range(steps):
        i = torch.randint(0, len(hq), (4,), generator=gen)
        real_logits, fake_logits = D(hq[i])[0], D(fake[i])[0]
        loss = main_loss(real_logits, fake_logits)
        scale = real_logits[0].numel() if penalty == "summed" else 1  # undo the per-logit mean
        if penalty != "none" and step % w.r1_every == 0:
            if rpgan:
                loss = loss + scale * w.r1_every * (w.r1 * approximate_gradient_penalty(D, hq[i], w.sigma, real_logits)
                                                    + w.r2 * approximate_gradient_penalty(D, fake[i], w.sigma,
                                                                                          fake_logits))
            else:
                loss = loss + scale * w.r1_every * w.r1 / 2 * r1_penalty(D, hq[i])
        opt.zero_grad()
        loss.backward()
        opt.step()
        if (step + 1) % 50 == 0 or step + 1 == steps:
            with torch.no_grad():
                D.eval()
                gap = float((D(hq)[0] - D(fake)[0]).mean())
                D.train()
            rows.append((step + 1, float(main_loss(real_logits, fake_logits).detach()), gap))
    return rows


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--params", default="params.yaml")
    ap.add_argument("--steps", type=int, default=150)
    ap.add_argument("--clips", type=int, default=16)
    ap.add_argument("--backend", default="pyav")
    args = ap.parse_args()
    torch.set_num_threads(max(1, torch.get_num_threads()))
    cfg = from_section(read_params(args.params)["train_apt"], f"{args.params}: train_apt")
    cfg = dataclasses.replace(cfg, val_clips=args.clips)
    manifest = Path(load_section(args.params, "ingest_ssv2", IngestSSv2Config).out) / "manifest.parquet"
    hq, lq = validation_clips(cfg, manifest, 0, args.backend)
    fake = bicubic_upsample(lq, cfg.model.scale)
    rms = float((hq - fake).pow(2).mean().sqrt())
    print(f"{len(hq)} clips {list(hq.shape[1:])}, loss {cfg.loss.kind} (r1 {cfg.loss.r1}, r2 {cfg.loss.r2}, "
          f"sigma {cfg.loss.sigma}, every {cfg.loss.r1_every}); RMS HQ - bicubic {rms:.4f}")
    for penalty in ("none", "per_logit", "summed"):
        for step, d_main, gap in probe(cfg, hq, fake, penalty, args.steps):
            print(f"penalty {penalty:9}  step {step:4}  d/main {d_main:.4f}  real - fake logit {gap:+.4f}", flush=True)


if __name__ == "__main__":
    main()
