"""Frozen VGG16 feature extractor for perceptual losses, without importing torchvision.

PyPI's torchvision does not install beside this repo's torch, so the ``features`` part of torchvision's
``vgg16`` (configuration "D") is rebuilt here layer for layer: same indices, so a torchvision checkpoint
(``vgg16-397923af.pth``, keys ``features.0.weight`` ... ``classifier.6.bias``) loads as is; the
classifier keys are ignored. Weights are never downloaded and never replaced by random ones: a missing file
raises :class:`PerceptualWeightsMissing`, which says how to provide it.
"""
from __future__ import annotations

from pathlib import Path

import torch
from torch import nn

VGG16_URL = "https://download.pytorch.org/models/vgg16-397923af.pth"
VGG16_FILENAME = "vgg16-397923af.pth"

# torchvision cfgs["D"]: conv widths, "M" = 2x2 max-pool
_VGG16_CFG: list[int | str] = [64, 64, "M", 128, 128, "M", 256, 256, 256, "M", 512, 512, 512, "M", 512, 512, 512, "M"]

# index in ``features`` of each ReLU output (torchvision's Sequential: conv, relu, ..., pool)
VGG16_LAYERS: dict[str, int] = {
    "relu1_1": 1, "relu1_2": 3, "relu2_1": 6, "relu2_2": 8, "relu3_1": 11, "relu3_2": 13, "relu3_3": 15,
    "relu4_1": 18, "relu4_2": 20, "relu4_3": 22, "relu5_1": 25, "relu5_2": 27, "relu5_3": 29,
}
DEFAULT_LAYERS = ("relu1_2", "relu2_2", "relu3_3", "relu4_3")  # the LPIPS / Johnson et al. choice

# ImageNet statistics the torchvision weights were trained with (inputs in [0, 1])
IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)


class PerceptualWeightsMissing(FileNotFoundError):
    """The VGG16 weights for the perceptual loss are not on disk; the message says how to provide them."""


def default_weights_path() -> Path:
    """Return where torchvision's ``vgg16(weights=...)`` caches the file: ``$TORCH_HOME/hub/checkpoints/``."""
    return Path(torch.hub.get_dir()) / "checkpoints" / VGG16_FILENAME


def _missing_message(looked_at: Path, explicit: bool) -> str:
    where = f"perceptual_weights file {looked_at} does not exist" if explicit else \
        f"no VGG16 weights found: perceptual_weights is unset and the torch hub cache {looked_at} does not exist"
    return (f"{where}. Provide them in one of these ways: set `perceptual_weights: <path>` in params.yaml "
            f"(the trainer's section) to a torchvision vgg16 state dict (.pth or .safetensors); or download "
            f"{VGG16_URL} to {default_weights_path()} (the torch hub cache, $TORCH_HOME/hub/checkpoints); "
            f"or set perceptual: 0 to turn the term off.")


class VGG16Features(nn.Module):
    """torchvision ``vgg16().features`` cut after the deepest requested layer; frozen and always in eval mode.

    ``forward(x)`` takes images ``[N, 3, H, W]`` in [-1, 1], maps them to the ImageNet-normalised input the
    weights expect, and returns the activations at ``layers`` (names from :data:`VGG16_LAYERS`), in the
    order given. The ReLUs are not in-place, so the returned activations are not overwritten later.
    """

    def __init__(self, layers: tuple[str, ...] | list[str] = DEFAULT_LAYERS) -> None:
        super().__init__()
        unknown = [name for name in layers if name not in VGG16_LAYERS]
        if unknown or not layers:
            raise ValueError(f"VGG16Features: unknown or empty layers {list(unknown) or list(layers)}; "
                             f"choose from {list(VGG16_LAYERS)}")
        self.layers = tuple(layers)
        self.indices = [VGG16_LAYERS[name] for name in self.layers]
        modules: list[nn.Module] = []
        in_ch = 3
        for v in _VGG16_CFG:
            if v == "M":
                modules.append(nn.MaxPool2d(kernel_size=2, stride=2))
            else:
                modules += [nn.Conv2d(in_ch, int(v), kernel_size=3, padding=1), nn.ReLU()]
                in_ch = int(v)
        # attribute named ``features`` so state-dict keys are ``features.<i>.*`` like the full torchvision model
        self.features = nn.Sequential(*modules[: max(self.indices) + 1])
        self.register_buffer("mean", torch.tensor(IMAGENET_MEAN).view(1, 3, 1, 1), persistent=False)
        self.register_buffer("std", torch.tensor(IMAGENET_STD).view(1, 3, 1, 1), persistent=False)
        self.requires_grad_(False)
        self.eval()

    def train(self, mode: bool = True) -> VGG16Features:
        """Stay in eval mode whatever the caller asks: the extractor is frozen (``mode`` is ignored)."""
        return super().train(False)

    def forward(self, x: torch.Tensor) -> list[torch.Tensor]:
        """Return the features at ``self.layers`` for images ``[N, 3, H, W]`` in [-1, 1]."""
        if x.ndim != 4 or x.shape[1] != 3:
            raise ValueError(f"VGG16Features: x must be RGB images [N, 3, H, W] in [-1, 1], got {list(x.shape)}")
        h = ((x + 1) / 2 - self.mean) / self.std
        wanted, out = set(self.indices), {}
        for i, layer in enumerate(self.features):
            h = layer(h)
            if i in wanted:
                out[i] = h
        return [out[i] for i in self.indices]


def _read_state_dict(path: Path) -> dict[str, torch.Tensor]:
    """Read a state dict from ``.safetensors`` or a torch pickle (``weights_only=True``: no code execution)."""
    if path.suffix == ".safetensors":
        from safetensors.torch import load_file
        return load_file(str(path))
    state = torch.load(path, map_location="cpu", weights_only=True)
    if not isinstance(state, dict):
        raise TypeError(f"perceptual_weights {path}: expected a state dict, got {type(state).__name__}; "
                         f"save model.state_dict(), not the model")
    return state


def load_vgg16_features(weights: str | Path | None = None,
                        layers: tuple[str, ...] | list[str] = DEFAULT_LAYERS) -> VGG16Features:
    """Return a frozen :class:`VGG16Features` loaded from ``weights`` or, when None, the torch hub cache.

    ``weights`` is a torchvision vgg16 state dict (full model, keys ``features.<i>.*``; or the bare
    ``vgg16().features`` state dict, keys ``<i>.*``), as ``.pth`` or ``.safetensors``. Keys of layers beyond
    the deepest requested one, and ``classifier.*``, are ignored; a missing or mis-shaped key raises.
    """
    explicit = weights is not None
    path = Path(weights).expanduser() if explicit else default_weights_path()
    if not path.is_file():
        raise PerceptualWeightsMissing(_missing_message(path, explicit))
    state = _read_state_dict(path)
    if not any(k.startswith("features.") for k in state):  # bare vgg16().features state dict
        state = {f"features.{k}": v for k, v in state.items()}
    model = VGG16Features(layers)
    expected = model.state_dict()
    missing = [k for k in expected if k not in state]
    if missing:
        found = sorted(state)[:6]
        raise ValueError(f"perceptual_weights {path}: not a torchvision vgg16 state dict; missing keys "
                         f"{missing[:6]}{' ...' if len(missing) > 6 else ''} (found e.g. {found}). "
                         f"Use {VGG16_URL} or a state dict saved with the same keys.")
    bad = [f"{k}: {list(state[k].shape)} != {list(v.shape)}" for k, v in expected.items() if state[k].shape != v.shape]
    if bad:
        raise ValueError(f"perceptual_weights {path}: tensor shapes differ from vgg16's: {bad[:4]}; "
                         f"is this a different VGG variant? Use {VGG16_URL}")
    model.load_state_dict({k: state[k] for k in expected})
    return model
