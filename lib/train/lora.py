"""LoRA through peft on plain ``nn.Module``s, merging back to full weights, and loading initial weights.

- :func:`apply_lora` injects LoRA layers in place (``peft.inject_adapter_in_model``: no ``PeftModel``
  wrapper, so the model's class and forward stay the same) and freezes everything else.
  State-dict keys of targeted layers become ``<name>.base_layer.weight``, ``<name>.lora_A.default.weight``...
- :func:`merge_lora` folds the adapters into the base weights and puts the plain layers back: the
  keys are the original model's again and every parameter trains (LoRA run -> full fine-tuning).
- :func:`init_from` loads a weights file into a model, naming missing, unexpected and mis-shaped keys.
"""
from __future__ import annotations

import fnmatch
import sys
from pathlib import Path

import torch
from torch import nn

LORA_LAYER_TYPES = (nn.Linear, nn.Conv1d, nn.Conv2d, nn.Conv3d, nn.Embedding)


class InitFromError(ValueError):
    """Initial weights that do not fit the model; the message lists the offending keys."""


def resolve_lora_targets(model: nn.Module, patterns: list[str]) -> list[str]:
    """Return the full names of LoRA-capable modules matching any glob in ``patterns``.

    A pattern matches a module name exactly, as a glob (``"blocks.*.attn.to_q"``, ``"*to_v"``), or as a
    dotted suffix (``"to_q"`` matches ``"blocks.0.attn.to_q"``). A pattern that matches no
    Linear/Conv/Embedding module is an error listing the candidates.
    """
    candidates = [n for n, m in model.named_modules() if n and isinstance(m, LORA_LAYER_TYPES)]
    chosen: list[str] = []
    for pattern in patterns:
        hits = [n for n in candidates
                if n == pattern or fnmatch.fnmatchcase(n, pattern) or n.endswith("." + pattern)]
        if not hits:
            shown = ", ".join(candidates[:20]) + (" ..." if len(candidates) > 20 else "")
            raise ValueError(f"lora_targets: pattern {pattern!r} matches no Linear/Conv/Embedding module of "
                             f"{type(model).__name__}; candidates: {shown}")
        chosen.extend(h for h in hits if h not in chosen)
    return chosen


def apply_lora(model: nn.Module, rank: int, alpha: int, targets: list[str]) -> nn.Module:
    """Inject LoRA adapters (rank ``rank``, scale ``alpha / rank``) into the modules matching ``targets``.

    Modifies ``model`` in place and returns it; afterwards only the LoRA parameters require grad.
    """
    from peft import LoraConfig, inject_adapter_in_model

    names = resolve_lora_targets(model, targets)
    config = LoraConfig(r=rank, lora_alpha=alpha, target_modules=names, lora_dropout=0.0, bias="none")
    model = inject_adapter_in_model(config, model)
    trainable = [n for n, p in model.named_parameters() if p.requires_grad]
    if not trainable or any("lora_" not in n for n in trainable):
        raise RuntimeError(f"apply_lora: expected only LoRA parameters to train, got {trainable[:10]}")
    return model


def has_lora(model: nn.Module) -> bool:
    """True when ``model`` contains peft adapter layers."""
    if "peft" not in sys.modules:  # no adapter exists without peft imported; importing it costs ~1.3 s a process
        return False
    from peft.tuners.tuners_utils import BaseTunerLayer

    return any(isinstance(m, BaseTunerLayer) for m in model.modules())


@torch.no_grad()
def merge_lora(model: nn.Module) -> nn.Module:
    """Fold every LoRA adapter into its base layer and replace the adapter layer by the base layer.

    Modifies ``model`` in place and returns it; outputs are unchanged (up to float rounding), the
    state-dict keys are the un-adapted model's, and all parameters require grad again.
    """
    from peft.tuners.tuners_utils import BaseTunerLayer

    adapted = [(name, m) for name, m in model.named_modules() if isinstance(m, BaseTunerLayer)]
    for name, layer in adapted:
        layer.merge()
        base = layer.get_base_layer()
        parent_name, _, child = name.rpartition(".")
        parent = model.get_submodule(parent_name) if parent_name else model
        setattr(parent, child, base)
    for param in model.parameters():
        param.requires_grad_(True)
    return model


def read_weights(path: str | Path) -> dict[str, torch.Tensor]:
    """Return the state dict in ``path``: ``.safetensors``, or a torch file read with ``weights_only=True``."""
    path = Path(path)
    if not path.is_file():
        raise InitFromError(f"init_from: {path} not found; point init_from at a .safetensors file or "
                            f"a run's final/raw (or final/ema) directory")
    if path.suffix == ".safetensors":
        from safetensors.torch import load_file

        return load_file(str(path), device="cpu")
    state = torch.load(path, map_location="cpu", weights_only=True)
    if not isinstance(state, dict) or not all(isinstance(v, torch.Tensor) for v in state.values()):
        raise InitFromError(f"init_from: {path} does not hold a flat state dict of tensors")
    return state


def init_from(model: nn.Module, path: str | Path) -> nn.Module:
    """Load the weights in ``path`` into ``model`` (all keys must match); return ``model``.

    Raises :class:`InitFromError` listing missing, unexpected and mis-shaped keys, so a wrong file
    (or a LoRA checkpoint loaded into a plain model: merge it first) fails with a readable message.
    """
    state = read_weights(path)
    own = model.state_dict()
    missing = sorted(set(own) - set(state))
    unexpected = sorted(set(state) - set(own))
    shapes = [f"{k}: file {tuple(state[k].shape)} vs model {tuple(own[k].shape)}"
              for k in sorted(set(own) & set(state)) if state[k].shape != own[k].shape]
    if missing or unexpected or shapes:
        def show(keys: list[str]) -> str:
            return ", ".join(keys[:10]) + (f" ... (+{len(keys) - 10})" if len(keys) > 10 else "") or "none"
        raise InitFromError(
            f"init_from: {path} does not fit {type(model).__name__}: missing keys: {show(missing)}; "
            f"unexpected keys: {show(unexpected)}; shape mismatches: {show(shapes)}. "
            f"Check the file belongs to this model (a LoRA checkpoint needs merge_lora first).")
    model.load_state_dict(state)
    return model


__all__ = [
    "InitFromError",
    "apply_lora",
    "has_lora",
    "init_from",
    "merge_lora",
    "read_weights",
    "resolve_lora_targets",
]
