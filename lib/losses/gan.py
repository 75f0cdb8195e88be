"""GAN losses for adversarial post-training (APT) of a one-step video SR generator.

Pure functions (non-saturating logistic loss, relativistic pairing loss, feature matching, exact R1 and the
approximate R1/R2 of SeedVR2) plus :class:`APTLoss`, which runs the named phases in the stylegan2-ada style:
``generator_step`` and ``discriminator_step`` each return ``(loss, stats)``; the caller does backward / step
(``accelerator.backward(loss)``), so there is one training loop and it lives in ``lib/train``.

Two loss kinds (``GANLossWeights.kind``):

- ``ns_r1``: non-saturating logistic loss with lazy exact R1 (stylegan2-ada; needs a double backward);
- ``rpgan_r1r2``: the relativistic pairing loss RpGAN (Jolicoeur-Martineau 2019; R3GAN, Huang et al. 2024) with
  SeedVR2's approximate R1 and R2 (Wang et al. 2025, §3): ``||D(x) - D(x + σε)||²`` on reals and on fakes, a
  finite difference that needs no double backward, so a compiled D serves every term.

A discriminator here is any module ``D(x) -> (logits, features)`` (see ``lib.models.discriminators``);
a generator is ``G(lq) -> hq`` or ``G(lq, text) -> hq`` (see ``lib.models.video_sr``).
"""
from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Annotated, Literal

import torch
import torch.nn.functional as F
from annotated_types import Ge, Gt
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
    """Return the R1 penalty ``E_x[ ||∇_x sum D(x)||² ] / P`` on real data, WITHOUT the γ/2 factor.

    For a patch discriminator with ``P`` logits per sample the logits of one sample are summed before the
    gradient is taken, the squared norm is over all of a sample's elements, averaged over the batch, and divided
    by ``P``: per logit, like the adversarial losses (means over patches), so γ means what it means for a
    one-logit D (StyleGAN's; ``P = 1`` changes nothing). Summed over patches, the penalty was ``P`` times
    stronger (225-900 on the project's crops) and held the patch D at chance: NS loss at 2·ln 2 for hundreds of
    steps on CPU and GPU runs, so G got no adversarial signal. The graph is kept (``create_graph=True``) so the
    result can be backpropagated into the discriminator. ``kwargs`` go to the discriminator.
    """
    real = real.detach().requires_grad_(True)
    logits = _logits(discriminator(real, **kwargs))
    (grad,) = torch.autograd.grad(logits.sum(), real, create_graph=True)
    return grad.square().flatten(1).sum(1).mean() / logits[0].numel()


def generator_rpgan(real_logits: torch.Tensor, fake_logits: torch.Tensor) -> torch.Tensor:
    """Return the RpGAN generator loss ``mean(softplus(D(x) - D(G(z))))``: each fake against its paired real.

    Logits pair element by element (the same sample and patch: LQ/HQ clips are aligned), so the shapes must match.
    """
    _check_paired(real_logits, fake_logits)
    return F.softplus(real_logits - fake_logits).mean()


def discriminator_rpgan(real_logits: torch.Tensor, fake_logits: torch.Tensor) -> torch.Tensor:
    """Return the RpGAN discriminator loss ``mean(softplus(D(G(z)) - D(x))) = mean(-log sigmoid(D(x) - D(G(z))))``."""
    _check_paired(real_logits, fake_logits)
    return F.softplus(fake_logits - real_logits).mean()


def _check_paired(real_logits: torch.Tensor, fake_logits: torch.Tensor) -> None:
    if real_logits.shape != fake_logits.shape:
        raise ValueError(f"RpGAN pairs each fake with its real: logits {list(real_logits.shape)} (real) and "
                         f"{list(fake_logits.shape)} (fake) must have one shape; give D equal real and fake batches")


def approximate_gradient_penalty(discriminator: nn.Module, x: torch.Tensor, sigma: float,
                                 logits: torch.Tensor | None = None) -> torch.Tensor:
    """Return SeedVR2's approximate R1 (``x`` real) or R2 (``x`` fake): ``E_x ||D(x) - D(x + σε)||² / P``,
    ε ~ N(0, I), for ``P`` logits per sample.

    The squared difference is averaged over a sample's logits (every patch; per logit, as :func:`r1_penalty`,
    so the weight means what it does for SeedVR2's one-logit D), then over the batch. Since
    ``D(x + σε) - D(x) = σ ∇D·ε + O(σ²)`` and ``E_ε (∇D_p·ε)² = ||∇D_p||²``, the penalty divided by σ² tends to
    ``Σ_p ||∇_x D_p(x)||² / P`` (R1 per patch; exactly R1 for one logit per sample) as σ → 0. ``x`` is detached:
    the penalty trains D only. ``logits`` (``D(x)``, already computed) saves a forward.
    """
    x = x.detach()
    if logits is None:
        logits = _logits(discriminator(x))
    noisy = _logits(discriminator(x + sigma * torch.randn_like(x)))
    return (logits - noisy).square().flatten(1).mean(1).mean()


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
    """Loss kind and weights: adversarial, feature matching, R1 (and R2), L1 reconstruction.

    ``ns_r1``: ``r1`` is γ of the exact R1, applied lazily (``r1_every * γ / 2 * R1`` every ``r1_every`` D steps);
    ``r2`` must be 0. ``rpgan_r1r2``: ``r1`` and ``r2`` weight the approximate penalties on reals and fakes
    (noise ``sigma``, every ``r1_every`` D steps, scaled by ``r1_every``); SeedVR2 uses 1000 for both, with
    ``fm`` and ``recon`` at 0.1.
    """

    kind: Literal["ns_r1", "rpgan_r1r2"] = "ns_r1"
    adv: Annotated[float, Ge(0)] = 1.0
    fm: Annotated[float, Ge(0)] = 1.0
    r1: Annotated[float, Ge(0)] = 1.0  # ns_r1: γ of exact R1; rpgan_r1r2: weight of approximate R1
    r2: Annotated[float, Ge(0)] = 0.0  # rpgan_r1r2: weight of approximate R2 (on fakes)
    sigma: Annotated[float, Gt(0)] = 0.01  # rpgan_r1r2: std of the noise of approximate R1/R2 (data in [-1, 1])
    r1_every: Annotated[int, Ge(1)] = 4
    recon: Annotated[float, Ge(0)] = 0.0

    def __post_init__(self) -> None:
        super().__post_init__()
        if self.kind == "ns_r1" and self.r2 > 0:
            raise ValueError(f"r2: {self.r2} has no effect with kind ns_r1 (exact R1 on reals only); set r2: 0 "
                             f"or kind: rpgan_r1r2")


class APTLoss:
    """Adversarial post-training loss with named phases (stylegan2-ada ``StyleGAN2Loss`` pattern).

    - :meth:`generator_step`: ``adv · L_G + fm · FM + recon · L1(G(lq), hq)``, D frozen, with ``L_G`` the
      non-saturating ``softplus(-D(G(lq)))`` (``ns_r1``) or RpGAN's ``softplus(D(hq) - D(G(lq)))`` (``rpgan_r1r2``);
    - :meth:`discriminator_step`: ``softplus(-D(hq)) + softplus(D(sg(G(lq))))`` plus lazy exact R1
      ``r1_every · γ/2 · R1`` (``ns_r1``), or ``softplus(D(sg(G(lq))) - D(hq))`` plus
      ``r1_every · (r1 · aR1 + r2 · aR2)`` (``rpgan_r1r2``), the penalties when ``step % r1_every == 0``, so their
      strength does not depend on ``r1_every``.

    Each returns ``(loss, stats)``; the caller runs backward and the optimiser step. Stats are detached 0-d
    tensors, not floats: reading a float forces a GPU sync, and a dozen syncs per step left an H100 idle most
    of the step (reports/benchmarks/apt_gpu.md); the Trainer sums them on the device and syncs once per log.
    """

    def __init__(self, weights: GANLossWeights = GANLossWeights()) -> None:
        self.weights = weights

    @property
    def needs_double_backward(self) -> bool:
        """True when a D step differentiates D twice (exact R1): a compiled D cannot serve that term."""
        return self.weights.kind == "ns_r1" and self.weights.r1 > 0

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
            real_logits, real_features = None, None
            if w.fm > 0 or w.kind == "rpgan_r1r2":
                with torch.no_grad():  # reals are constants for G
                    real_logits, real_features = D(hq)
            if w.kind == "rpgan_r1r2":
                adv = generator_rpgan(real_logits, fake_logits)
            else:
                adv = generator_nonsaturating(fake_logits)
            fm = feature_matching(real_features, fake_features) if w.fm > 0 else torch.zeros((), device=fake.device)
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
        (fraction of real logits > 0 and of fake logits < 0) and, on penalty steps, the raw penalties ``d/r1``
        (and ``d/r2``). ``r1_discriminator`` (default ``D``) is the module exact R1 differentiates twice: pass the
        eager module when ``D`` is a ``torch.compile`` wrapper, which does not support double backward. The
        approximate penalties use ``D`` itself.
        """
        w = self.weights
        real, fake = real.detach(), fake.detach()
        real_logits, _ = D(real)
        fake_logits, _ = D(fake)
        rpgan = w.kind == "rpgan_r1r2"
        main = discriminator_rpgan(real_logits, fake_logits) if rpgan else discriminator_nonsaturating(
            real_logits, fake_logits)
        loss = main
        stats = {
            "d/main": main.detach(),
            "d/acc_real": (real_logits.detach() > 0).float().mean(),
            "d/acc_fake": (fake_logits.detach() < 0).float().mean(),
            "d/real_logit": real_logits.detach().mean(),
            "d/fake_logit": fake_logits.detach().mean(),
        }
        if step % w.r1_every == 0:
            if rpgan:
                for name, weight, x, logits in (("r1", w.r1, real, real_logits), ("r2", w.r2, fake, fake_logits)):
                    if weight > 0:
                        penalty = approximate_gradient_penalty(D, x, w.sigma, logits)
                        loss = loss + (w.r1_every * weight) * penalty
                        stats[f"d/{name}"] = penalty.detach()
            elif w.r1 > 0:
                r1 = r1_penalty(D if r1_discriminator is None else r1_discriminator, real)
                loss = loss + (w.r1_every * w.r1 / 2) * r1
                stats["d/r1"] = r1.detach()
        stats["d/loss"] = loss.detach()
        return loss, stats
