"""GAN losses for adversarial post-training (APT) of a one-step video SR generator.

Pure functions (non-saturating logistic loss, feature matching, R1) plus :class:`APTLoss`, which runs the
named phases in the stylegan2-ada style: ``generator_step`` and ``discriminator_step`` each return
``(loss, stats)``; the caller does backward / step (``accelerator.backward(loss)``), so there is one
training loop and it lives in ``lib/train``.

A discriminator here is any module ``D(x) -> (logits, features)`` (see ``lib.models.discriminators``);
a generator is ``G(lq) -> hq`` or ``G(lq, text) -> hq`` (see ``lib.models.video_sr``).
"""
from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Annotated

import torch
import torch.nn.functional as F
from annotated_types import Ge
from torch import nn

from lib.config import Checked


def generator_nonsaturating(fake_logits: torch.Tensor) -> torch.Tensor:
    """Return the non-saturating generator loss ``mean(softplus(-D(G(z)))) = mean(-log sigmoid(D(G(z))))``."""
    return F.softplus(-fake_logits).mean()


def discriminator_nonsaturating(real_logits: torch.Tensor, fake_logits: torch.Tensor) -> torch.Tensor:
    """Return the logistic discriminator loss ``mean(softplus(-D(x))) + mean(softplus(D(G(z))))``.

    Equal to ``mean(-log sigmoid(D(x))) + mean(-log(1 - sigmoid(D(G(z)))))``; each side is averaged on
    its own, so real and fake batches may differ in size.
    """
    return F.softplus(-real_logits).mean() + F.softplus(fake_logits).mean()


def feature_matching(real_features: list[torch.Tensor], fake_features: list[torch.Tensor]) -> torch.Tensor:
    """Return ``(1/L) * sum_l mean(|f_l(G(z)) - sg(f_l(x))|)``: L1 per layer, averaged over the L layers.

    The real side is detached (``sg`` = stop-gradient): the generator chases the real features, the
    discriminator is not trained through this loss on real data.
    """
    if len(real_features) != len(fake_features) or not real_features:
        raise ValueError(f"feature_matching: need the same non-zero number of layers, got "
                         f"{len(real_features)} real and {len(fake_features)} fake")
    per_layer = [F.l1_loss(fake, real.detach()) for real, fake in zip(real_features, fake_features, strict=False)]
    return torch.stack(per_layer).mean()


def _logits(output: torch.Tensor | tuple) -> torch.Tensor:
    """Return the logits of a discriminator output (``(logits, features)`` or bare logits)."""
    return output[0] if isinstance(output, (tuple, list)) else output


def r1_penalty(discriminator: nn.Module, real: torch.Tensor, **kwargs) -> torch.Tensor:
    """Return the R1 penalty ``E_x[ ||∇_x sum D(x)||² ]`` on real data, WITHOUT the γ/2 factor.

    For a patch discriminator the logits of one sample are summed before the gradient is taken; the squared
    norm is over all of a sample's elements, then averaged over the batch. The graph is kept
    (``create_graph=True``) so the result can be backpropagated into the discriminator.
    ``kwargs`` go to the discriminator.
    """
    real = real.detach().requires_grad_(True)
    logits = _logits(discriminator(real, **kwargs))
    (grad,) = torch.autograd.grad(logits.sum(), real, create_graph=True)
    return grad.square().flatten(1).sum(1).mean()


@contextmanager
def frozen(module: nn.Module) -> Iterator[None]:
    """Turn off ``requires_grad`` on ``module``'s parameters inside the block, then restore each flag.

    A graph built inside the block treats those parameters as constants, so a later backward leaves
    their ``.grad`` untouched even though the flags are back on.
    """
    params = list(module.parameters())
    flags = [p.requires_grad for p in params]
    for p in params:
        p.requires_grad_(False)
    try:
        yield
    finally:
        for p, flag in zip(params, flags, strict=False):
            p.requires_grad_(flag)


@dataclass(frozen=True)
class GANLossWeights(Checked):
    """Loss weights: adversarial, feature matching, R1 γ (lazy, every ``r1_every`` D steps), L1 reconstruction."""

    adv: Annotated[float, Ge(0)] = 1.0
    fm: Annotated[float, Ge(0)] = 1.0
    r1: Annotated[float, Ge(0)] = 1.0  # γ; the applied penalty is r1_every * γ / 2 * R1 every r1_every steps
    r1_every: Annotated[int, Ge(1)] = 4
    recon: Annotated[float, Ge(0)] = 0.0


class APTLoss:
    """Adversarial post-training loss with named phases (stylegan2-ada ``StyleGAN2Loss`` pattern).

    - :meth:`generator_step`: ``adv · softplus(-D(G(lq))) + fm · FM + recon · L1(G(lq), hq)``, D frozen;
    - :meth:`discriminator_step`: ``softplus(-D(hq)) + softplus(D(sg(G(lq))))`` every step, plus lazy R1
      ``r1_every · γ/2 · R1`` when ``step % r1_every == 0``, so R1's strength does not depend on ``r1_every``.

    Each returns ``(loss, stats)``; the caller runs backward and the optimiser step. Stats are detached 0-d
    tensors, not floats: reading a float forces a GPU sync, and a dozen syncs per step left an H100 idle most
    of the step (reports/benchmarks/apt_gpu.md); the Trainer sums them on the device and syncs once per log.
    """

    def __init__(self, weights: GANLossWeights = GANLossWeights()) -> None:
        self.weights = weights

    def generator_step(self, G: nn.Module, D: nn.Module, lq: torch.Tensor, hq: torch.Tensor,
                       text: torch.Tensor | None = None) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
        """Return the generator loss and float stats; gradients of the loss reach G only (D is frozen)."""
        w = self.weights
        fake = G(lq) if text is None else G(lq, text)
        if fake.shape != hq.shape:
            raise ValueError(f"APTLoss.generator_step: G(lq) is {list(fake.shape)} but hq is {list(hq.shape)}; "
                             f"check VideoSRConfig.scale against the data's LQ/HQ sizes")
        with frozen(D):
            fake_logits, fake_features = D(fake)
            adv = generator_nonsaturating(fake_logits)
            fm = torch.zeros((), device=fake.device)
            if w.fm > 0:
                with torch.no_grad():
                    _, real_features = D(hq)
                fm = feature_matching(real_features, fake_features)
        recon = F.l1_loss(fake, hq)
        loss = w.adv * adv + w.fm * fm + w.recon * recon
        stats = {
            "g/loss": loss.detach(),
            "g/adv": adv.detach(),
            "g/fm": fm.detach(),
            "g/recon_l1": recon.detach(),
            "g/fake_logit": fake_logits.detach().mean(),
        }
        return loss, stats

    def discriminator_step(self, D: nn.Module, real: torch.Tensor, fake: torch.Tensor, step: int,
                           r1_discriminator: nn.Module | None = None) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
        """Return the discriminator loss and float stats for optimiser step ``step``.

        ``fake`` is detached here, so the loss never reaches G. Stats include the D accuracies
        (fraction of real logits > 0 and of fake logits < 0) and, on R1 steps, the raw penalty ``d/r1``.
        ``r1_discriminator`` (default ``D``) is the module R1 differentiates twice: pass the eager module
        when ``D`` is a ``torch.compile`` wrapper, which does not support double backward.
        """
        w = self.weights
        real_logits, _ = D(real.detach())
        fake_logits, _ = D(fake.detach())
        main = discriminator_nonsaturating(real_logits, fake_logits)
        loss = main
        stats = {
            "d/main": main.detach(),
            "d/acc_real": (real_logits.detach() > 0).float().mean(),
            "d/acc_fake": (fake_logits.detach() < 0).float().mean(),
            "d/real_logit": real_logits.detach().mean(),
            "d/fake_logit": fake_logits.detach().mean(),
        }
        if w.r1 > 0 and step % w.r1_every == 0:
            r1 = r1_penalty(D if r1_discriminator is None else r1_discriminator, real)
            loss = loss + (w.r1_every * w.r1 / 2) * r1
            stats["d/r1"] = r1.detach()
        stats["d/loss"] = loss.detach()
        return loss, stats
