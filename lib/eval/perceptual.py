"""LPIPS (VGG) and DISTS: the networks' forward passes, on this repo's torchvision-free VGG16.

PyPI's ``lpips``, ``DISTS_pytorch`` and ``piq`` all import torchvision, whose wheels do not load beside this
repo's CPU torch (``operator torchvision::nms does not exist``), so both metrics are rebuilt here on
:class:`lib.models.vgg.VGG16Features` (torchvision's ``vgg16().features``, same layer indices and keys). Nothing is
downloaded: every weight comes from a file the caller names.

**LPIPS-VGG** (Zhang et al. 2018, ``lpips.LPIPS(net="vgg")``, version 0.1), for images in [0, 1]:
inputs are mapped to [-1, 1] and through LPIPS' scaling layer (shift ``[-.030, -.088, -.188]``, scale
``[.458, .448, .450]`` -- exactly the ImageNet mean/std that :class:`VGG16Features` applies); VGG16 features at
relu1_2, relu2_2, relu3_3, relu4_3 and relu5_3 are divided by their channel-wise L2 norm (``+ 1e-10``) at every
pixel; the squared difference of the two images' unit features is weighted per channel by that layer's 1x1
``lin`` convolution (no bias), averaged over the pixels, and the five layers are summed. 0 for equal images.

**DISTS** (Ding et al. 2020, ``DISTS_pytorch``), for images in [0, 1]: VGG16 with every max-pool replaced by
an L2 pooling (``sqrt(conv(x², g) + 1e-12)``, ``g`` the normalised outer product of ``hanning(5)[1:-1]``,
stride 2, padding 1, per channel); the six feature sets are the input image itself (3 channels) and the
ImageNet-normalised net's relu1_2 ... relu5_3 (64, 128, 256, 512, 512 channels). Per channel, with spatial
means ``μ``, population variances ``σ²`` and covariance ``σxy``: texture term ``(2 μx μy + c1) / (μx² + μy² + c1)``,
structure term ``(2 σxy + c2) / (σx² + σy² + c2)``, ``c1 = c2 = 1e-6``;
``DISTS = 1 − Σ (α · texture + β · structure)`` over all 1475 channels, with ``α, β`` divided by
``Σα + Σβ``. 0 for equal images.

Weight files (``.pth`` read with ``torch.load(weights_only=True)``, or ``.safetensors``):

- LPIPS: the release's ``lpips/weights/v0.1/vgg.pth`` (keys ``lin<k>.model.1.weight``, ``[1, C_k, 1, 1]``,
  k = 0..4); ``lin<k>.model.0.weight`` (built without dropout) and ``lins.<k>.model.1.weight`` are read too. A
  full ``lpips.LPIPS(net="vgg").state_dict()``, which also holds the backbone as ``net.slice<s>.<i>.*``, needs no
  separate VGG16 file.
- DISTS: the package's ``weights.pt``: ``{"alpha": [1, 1475, 1, 1], "beta": [1, 1475, 1, 1]}``.
- the VGG16 backbone of both: a torchvision ``vgg16`` state dict (``vgg16-397923af.pth``; keys ``features.<i>.*``),
  or, when None, that file in the torch hub cache (:func:`lib.models.vgg.default_weights_path`).

Missing or malformed files raise :class:`lib.config.ConfigError` naming the params key (``key=``) and the fix.
"""
from __future__ import annotations

import re
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from lib.config import ConfigError
from lib.models.vgg import VGG16_FILENAME, VGG16_URL, VGG16Features, _read_state_dict, default_weights_path

LPIPS_LAYERS = ("relu1_2", "relu2_2", "relu3_3", "relu4_3", "relu5_3")
LPIPS_CHANNELS = (64, 128, 256, 512, 512)
DISTS_CHANNELS = (3, 64, 128, 256, 512, 512)  # the image itself, then relu1_2 ... relu5_3
LPIPS_EPS = 1e-10
DISTS_C1 = DISTS_C2 = 1e-6

LPIPS_WEIGHTS_HINT = ("the LPIPS-VGG linear-layer weights (vgg.pth of the LPIPS v0.1 release, keys "
                      "lin0.model.1.weight .. lin4.model.1.weight) or a full lpips.LPIPS(net='vgg') state dict")
DISTS_WEIGHTS_HINT = "the DISTS alpha/beta weights (weights.pt of DISTS_pytorch: {'alpha', 'beta'}, [1, 1475, 1, 1])"
VGG16_WEIGHTS_HINT = f"a torchvision vgg16 state dict ({VGG16_FILENAME}, {VGG16_URL})"


def _to_unit_signed(x: torch.Tensor) -> torch.Tensor:
    return x * 2 - 1


def _check_pair(name: str, x: torch.Tensor, y: torch.Tensor) -> None:
    if x.shape != y.shape or x.ndim != 4 or x.shape[1] != 3:
        raise ValueError(f"{name}: need two RGB image batches [N, 3, H, W] in [0, 1] of one shape, "
                         f"got {list(x.shape)}, {list(y.shape)}")


class LPIPS(nn.Module):
    """LPIPS-VGG (see the module docstring): ``forward(x, y)`` on ``[N, 3, H, W]`` in [0, 1] -> ``[N]``."""

    def __init__(self, vgg: VGG16Features, lins: list[torch.Tensor] | tuple[torch.Tensor, ...]) -> None:
        super().__init__()
        if tuple(vgg.layers) != LPIPS_LAYERS:
            raise ValueError(f"LPIPS: the VGG16 must return {LPIPS_LAYERS}, got {vgg.layers}")
        shapes = [list(w.shape) for w in lins]
        if shapes != [[1, c, 1, 1] for c in LPIPS_CHANNELS]:
            raise ValueError(f"LPIPS: lin weights must be [1, C, 1, 1] for C in {LPIPS_CHANNELS}, got {shapes}")
        self.vgg = vgg
        for k, w in enumerate(lins):
            self.register_buffer(f"lin{k}", w.detach().float().clone())
        self.requires_grad_(False)
        self.eval()

    @torch.no_grad()
    def forward(self, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        _check_pair("LPIPS", x, y)
        fx, fy = self.vgg(_to_unit_signed(x.float())), self.vgg(_to_unit_signed(y.float()))
        total = torch.zeros(x.shape[0], dtype=torch.float32, device=x.device)
        for k, (a, b) in enumerate(zip(fx, fy, strict=True)):
            a = a / (a.square().sum(1, keepdim=True).sqrt() + LPIPS_EPS)
            b = b / (b.square().sum(1, keepdim=True).sqrt() + LPIPS_EPS)
            total = total + F.conv2d((a - b).square(), getattr(self, f"lin{k}")).mean(dim=(1, 2, 3))
        return total


class L2Pool(nn.Module):
    """DISTS' L2 pooling: ``sqrt(depthwise_conv(x², g) + 1e-12)``, ``g`` = normalised hanning(5)[1:-1] outer
    product (3x3), stride 2, padding 1."""

    def __init__(self) -> None:
        super().__init__()
        a = torch.tensor(np.hanning(5)[1:-1], dtype=torch.float32)
        g = a[:, None] * a[None, :]
        self.register_buffer("filter", (g / g.sum())[None, None], persistent=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        c = x.shape[1]
        out = F.conv2d(x.square(), self.filter.expand(c, 1, 3, 3), stride=2, padding=1, groups=c)
        return (out + 1e-12).sqrt()


class DISTS(nn.Module):
    """DISTS (see the module docstring): ``forward(x, y)`` on ``[N, 3, H, W]`` in [0, 1] -> ``[N]``."""

    def __init__(self, vgg: VGG16Features, alpha: torch.Tensor, beta: torch.Tensor) -> None:
        super().__init__()
        n = sum(DISTS_CHANNELS)
        if alpha.numel() != n or beta.numel() != n:
            raise ValueError(f"DISTS: alpha and beta need {n} values ([1, {n}, 1, 1]), "
                             f"got {list(alpha.shape)}, {list(beta.shape)}")
        if tuple(vgg.layers)[-1] != "relu5_3":
            raise ValueError(f"DISTS: the VGG16 must reach relu5_3, got {vgg.layers}")
        self.vgg, self.pool = vgg, L2Pool()
        self.register_buffer("alpha", alpha.detach().float().reshape(1, n).clone())
        self.register_buffer("beta", beta.detach().float().reshape(1, n).clone())
        self.taps = [3, 8, 15, 22, 29]  # relu1_2 ... relu5_3 in torchvision's features
        self.requires_grad_(False)
        self.eval()

    def features(self, x: torch.Tensor) -> list[torch.Tensor]:
        """Return DISTS' six feature sets of ``x`` in [0, 1]: ``x`` itself and relu1_2 ... relu5_3 (L2 pooling)."""
        h = (x - self.vgg.mean) / self.vgg.std
        out = [x]
        for i, layer in enumerate(self.vgg.features):
            h = self.pool(h) if isinstance(layer, nn.MaxPool2d) else layer(h)
            if i in self.taps:
                out.append(h)
        return out

    @torch.no_grad()
    def forward(self, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        _check_pair("DISTS", x, y)
        fx, fy = self.features(x.float()), self.features(y.float())
        w = self.alpha.sum() + self.beta.sum()
        alphas = torch.split(self.alpha / w, DISTS_CHANNELS, dim=1)
        betas = torch.split(self.beta / w, DISTS_CHANNELS, dim=1)
        total = torch.zeros(x.shape[0], dtype=torch.float32, device=x.device)
        for a, b, alpha, beta in zip(fx, fy, alphas, betas, strict=True):
            ma, mb = a.mean(dim=(2, 3)), b.mean(dim=(2, 3))
            va = (a - ma[..., None, None]).square().mean(dim=(2, 3))
            vb = (b - mb[..., None, None]).square().mean(dim=(2, 3))
            cov = (a * b).mean(dim=(2, 3)) - ma * mb
            texture = (2 * ma * mb + DISTS_C1) / (ma**2 + mb**2 + DISTS_C1)
            structure = (2 * cov + DISTS_C2) / (va + vb + DISTS_C2)
            total = total + (alpha * texture).sum(1) + (beta * structure).sum(1)
        return 1 - total


# ----------------------------------------------------------------------------- loading


def _weights_file(path: str | Path, key: str, hint: str) -> Path:
    p = Path(path).expanduser()
    if not p.is_file():
        raise ConfigError(f"{key}: {p} does not exist; set {key} to the path of {hint}, or to null to skip it")
    return p


def _read(path: Path, key: str) -> dict[str, torch.Tensor]:
    try:
        state = _read_state_dict(path)
    except Exception as err:  # noqa: BLE001 - any unreadable file: name the key
        raise ConfigError(f"{key}: cannot read {path} as a state dict ({type(err).__name__}: {err})") from err
    return state


def _vgg16(state: dict[str, torch.Tensor], layers: tuple[str, ...], source: str, key: str) -> VGG16Features:
    """Return :class:`VGG16Features` (``layers``) with the ``features.<i>.*`` tensors of ``state``."""
    model = VGG16Features(layers)
    expected = model.state_dict()
    missing = [k for k in expected if k not in state]
    bad = [k for k in expected if k in state and state[k].shape != expected[k].shape]
    if missing or bad:
        raise ConfigError(f"{key}: {source} is not {VGG16_WEIGHTS_HINT}: missing keys {missing[:4]}, "
                          f"mis-shaped {bad[:4]}")
    model.load_state_dict({k: state[k].float() for k in expected})
    return model


def load_vgg16(path: str | Path | None, layers: tuple[str, ...] = LPIPS_LAYERS,
               key: str = "eval_apt.vgg16_weights") -> VGG16Features:
    """Return the frozen VGG16 backbone from ``path`` (``None``: the torch hub cache file); ConfigError naming
    ``key`` when the file is absent or is not a vgg16 state dict (full model or bare ``features``)."""
    if path is None:
        p = default_weights_path()
        if not p.is_file():
            raise ConfigError(f"{key} is null and the torch hub cache has no {p}: set {key} to the path of "
                              f"{VGG16_WEIGHTS_HINT}, or put that file at {p}")
    else:
        p = _weights_file(path, key, VGG16_WEIGHTS_HINT)
    state = _read(p, key)
    if not any(k.startswith("features.") for k in state):  # bare vgg16().features state dict
        state = {f"features.{k}": v for k, v in state.items()}
    return _vgg16(state, layers, str(p), key)


def _lin_weights(state: dict[str, torch.Tensor], source: str, key: str) -> list[torch.Tensor]:
    lins = []
    for k in range(len(LPIPS_CHANNELS)):
        names = (f"lin{k}.model.1.weight", f"lin{k}.model.0.weight", f"lins.{k}.model.1.weight")
        found = next((state[n] for n in names if n in state), None)
        if found is None:
            raise ConfigError(f"{key}: {source} has no {names[0]} (found e.g. {sorted(state)[:6]}); "
                              f"give the path to {LPIPS_WEIGHTS_HINT}")
        if list(found.shape) != [1, LPIPS_CHANNELS[k], 1, 1]:
            raise ConfigError(f"{key}: {source}: {names[0]} is {list(found.shape)}, expected "
                              f"[1, {LPIPS_CHANNELS[k]}, 1, 1] (LPIPS-VGG; other nets' weights do not fit)")
        lins.append(found)
    return lins


def load_lpips(weights: str | Path, vgg16_weights: str | Path | None = None, key: str = "eval_apt.lpips_weights",
               vgg_key: str = "eval_apt.vgg16_weights") -> LPIPS:
    """Return :class:`LPIPS` from its ``lin`` weights file; the VGG16 comes from that file when it holds
    ``net.slice<s>.<i>.*`` (a full lpips state dict), else from ``vgg16_weights`` (see :func:`load_vgg16`)."""
    path = _weights_file(weights, key, LPIPS_WEIGHTS_HINT)
    state = _read(path, key)
    lins = _lin_weights(state, str(path), key)
    backbone = {re.sub(r"^net\.slice\d+\.", "features.", k): v for k, v in state.items() if k.startswith("net.slice")}
    vgg = _vgg16(backbone, LPIPS_LAYERS, str(path), key) if backbone else load_vgg16(vgg16_weights, LPIPS_LAYERS,
                                                                                      vgg_key)
    return LPIPS(vgg, lins)


def load_dists(weights: str | Path, vgg16_weights: str | Path | None = None, key: str = "eval_apt.dists_weights",
               vgg_key: str = "eval_apt.vgg16_weights") -> DISTS:
    """Return :class:`DISTS` from its ``{"alpha", "beta"}`` file and the VGG16 of ``vgg16_weights``."""
    path = _weights_file(weights, key, DISTS_WEIGHTS_HINT)
    state = _read(path, key)
    n = sum(DISTS_CHANNELS)
    if not {"alpha", "beta"} <= set(state) or state["alpha"].numel() != n or state["beta"].numel() != n:
        raise ConfigError(f"{key}: {path} is not {DISTS_WEIGHTS_HINT} (found "
                          f"{ {k: list(v.shape) for k, v in list(state.items())[:4]} })")
    return DISTS(load_vgg16(vgg16_weights, LPIPS_LAYERS, vgg_key), state["alpha"], state["beta"])


PERCEPTUAL = {"lpips": ("LPIPS", "lpips_weights", LPIPS_WEIGHTS_HINT, load_lpips),
              "dists": ("DISTS", "dists_weights", DISTS_WEIGHTS_HINT, load_dists)}


def perceptual_metrics(lpips_weights: str | None = None, dists_weights: str | None = None,
                       vgg16_weights: str | None = None, section: str = "eval_apt",
                       ) -> tuple[dict[str, nn.Module], dict[str, str]]:
    """Return ``(metrics, not_computed)``: the LPIPS / DISTS modules whose weight files are given, and for each
    one whose path is None the sentence a report shows instead (never skipped silently). A given file that is
    missing or malformed raises ConfigError naming ``<section>.<key>`` and the fix."""
    paths = {"lpips_weights": lpips_weights, "dists_weights": dists_weights}
    metrics: dict[str, nn.Module] = {}
    missing: dict[str, str] = {}
    for name, (label, key, hint, load) in PERCEPTUAL.items():
        if paths[key] is None:
            missing[name] = (f"{label} not computed: {section}.{key} is null; give the path to {hint} "
                             f"(and {section}.vgg16_weights: {VGG16_WEIGHTS_HINT}, unless it is in the torch hub "
                             "cache) to compute it")
        else:
            metrics[name] = load(paths[key], vgg16_weights, key=f"{section}.{key}", vgg_key=f"{section}.vgg16_weights")
    return metrics, missing


__all__ = ["DISTS", "DISTS_CHANNELS", "LPIPS", "LPIPS_CHANNELS", "LPIPS_LAYERS", "L2Pool", "load_dists",
           "load_lpips", "load_vgg16", "perceptual_metrics"]
