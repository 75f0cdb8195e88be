"""Exponential moving average of a module's weights, with the half-life measured in images.

stylegan2-ada's rule: after an optimiser step that consumed ``batch_images`` images (over all
processes and accumulation rounds), ``beta = 0.5 ** (batch_images / half_life_images)``, so the
averaging horizon does not change when the batch size does. With ``rampup`` set, the half-life is
capped at ``samples_seen * rampup`` early in training, so the EMA does not drag the random init along.

Parameters are averaged; buffers (BatchNorm statistics, counters) are copied from the module, as
stylegan2-ada does: an average of running averages means little, and integer buffers cannot be averaged.

Under FSDP2 (``fully_shard``; accelerate's FSDP with ``fsdp_version: 2``) a parameter is a DTensor holding this
rank's shard, and so is its shadow: updates stay local, with no communication. :meth:`EMA.state_dict` gathers
every shadow whole (a collective: every rank calls it, as accelerate's ``save_state`` does) so a checkpoint holds
plain tensors and loads with ``weights_only=True`` under any sharding; :meth:`EMA.load_state_dict` cuts each
whole tensor back into this rank's shard.
"""
from __future__ import annotations

import contextlib
from collections.abc import Iterator
from typing import Any

import torch
from torch import nn

try:
    from torch.distributed.tensor import DTensor, distribute_tensor
except ImportError:  # a torch built without torch.distributed: nothing can be sharded
    DTensor = ()  # type: ignore[assignment,misc]  # isinstance(x, ()) is False


def _whole(t: torch.Tensor) -> torch.Tensor:
    """``t`` gathered from every rank when it is a DTensor (an FSDP2 shard), else ``t``."""
    return t.full_tensor() if isinstance(t, DTensor) else t


def ema_beta(batch_images: int, half_life_images: float, samples_seen: int | None = None,
             rampup: float | None = None) -> float:
    """Return the EMA decay for one update: ``0.5 ** (batch_images / half_life)``.

    ``half_life = min(half_life_images, samples_seen * rampup)`` when ``rampup`` is given.
    """
    half_life = half_life_images
    if rampup is not None:
        if samples_seen is None:
            raise ValueError("ema_beta: rampup needs samples_seen")
        half_life = min(half_life, samples_seen * rampup)
    if half_life <= 0:
        return 0.0
    return 0.5 ** (batch_images / half_life)


class EMA:
    """Shadow copies of ``module``'s parameters and buffers, averaged by :meth:`update`.

    The shadow tensors live on the module's device, in the parameters' dtype. ``state_dict`` holds
    only tensors and numbers, so it loads with ``torch.load(weights_only=True)``.
    """

    def __init__(self, module: nn.Module, half_life_images: float, rampup: float | None = None):
        self.half_life_images = float(half_life_images)
        self.rampup = rampup
        self.num_updates = 0
        self.params = {n: p.detach().clone() for n, p in module.named_parameters()}
        self.buffers = {n: b.detach().clone() for n, b in module.named_buffers()}

    @torch.no_grad()
    def update(self, module: nn.Module, batch_images: int, samples_seen: int | None = None) -> float:
        """Move the shadow towards ``module``'s current weights; return the ``beta`` that was used.

        ``shadow = beta * shadow + (1 - beta) * param``; buffers are copied.
        """
        beta = ema_beta(batch_images, self.half_life_images, samples_seen, self.rampup)
        for name, param in module.named_parameters():
            shadow = self.params[name]
            shadow.mul_(beta).add_(param.detach().to(shadow.dtype), alpha=1.0 - beta)
        for name, buf in module.named_buffers():
            self.buffers[name].copy_(buf)
        self.num_updates += 1
        return beta

    @torch.no_grad()
    def copy_to(self, module: nn.Module) -> None:
        """Overwrite ``module``'s parameters and buffers with the EMA weights."""
        for name, param in module.named_parameters():
            param.copy_(self.params[name])
        for name, buf in module.named_buffers():
            buf.copy_(self.buffers[name])

    @contextlib.contextmanager
    def swapped_into(self, module: nn.Module) -> Iterator[nn.Module]:
        """Context manager: ``module`` holds the EMA weights inside the block, its own weights after.

        Use it for evaluation or export without keeping a second copy of the model around.
        """
        backup = {n: t.detach().clone() for n, t in module.state_dict(keep_vars=True).items()
                  if isinstance(t, torch.Tensor)}
        self.copy_to(module)
        try:
            yield module
        finally:
            with torch.no_grad():
                for name, tensor in module.state_dict(keep_vars=True).items():
                    if name in backup:
                        tensor.copy_(backup[name])

    def state_dict(self) -> dict[str, Any]:
        """Return ``{"params": {...}, "buffers": {...}, "num_updates": int, ...}`` (tensors and numbers only;
        sharded shadows gathered whole: under FSDP every rank must call it)."""
        return {
            "params": {n: _whole(t) for n, t in self.params.items()},
            "buffers": {n: _whole(t) for n, t in self.buffers.items()},
            "num_updates": self.num_updates,
            "half_life_images": self.half_life_images,
        }

    @torch.no_grad()
    def load_state_dict(self, state: dict[str, Any]) -> None:
        """Copy a :meth:`state_dict` into the shadow tensors (keeping their device and, under FSDP, taking this
        rank's shard of each whole tensor); names must match."""
        for kind in ("params", "buffers"):
            mine, theirs = getattr(self, kind), state[kind]
            missing, unexpected = sorted(set(mine) - set(theirs)), sorted(set(theirs) - set(mine))
            if missing or unexpected:
                raise KeyError(f"EMA state does not match the model: {kind} missing {missing[:10]}, "
                               f"unexpected {unexpected[:10]}; was it saved from a different model?")
            for name, tensor in theirs.items():
                shadow = mine[name]
                if isinstance(shadow, DTensor):
                    whole = tensor.to(device=shadow.device, dtype=shadow.dtype)
                    tensor = distribute_tensor(whole, shadow.device_mesh, shadow.placements)
                shadow.copy_(tensor)
        self.num_updates = int(state["num_updates"])


__all__ = ["EMA", "ema_beta"]
