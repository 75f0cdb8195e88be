"""lib.models.vgg: torchvision key layout, loading from a path / the hub cache / safetensors, and clear errors."""
from __future__ import annotations

from pathlib import Path

import pytest
import torch
import torch.nn.functional as F
from safetensors.torch import save_file

from lib.models.vgg import VGG16_URL, PerceptualWeightsMissing, VGG16Features, default_weights_path, load_vgg16_features

# torchvision vgg16().features conv indices and widths (cfg "D"), written out independently of lib.models.vgg
TV_CONVS = {0: (3, 64), 2: (64, 64), 5: (64, 128), 7: (128, 128), 10: (128, 256), 12: (256, 256), 14: (256, 256),
            17: (256, 512), 19: (512, 512), 21: (512, 512), 24: (512, 512), 26: (512, 512), 28: (512, 512)}


@pytest.fixture(scope="module")
def tv_state() -> dict[str, torch.Tensor]:
    """A random state dict in the layout of torchvision's full vgg16 (features + a small classifier stand-in)."""
    g = torch.Generator().manual_seed(0)
    state = {}
    for i, (cin, cout) in TV_CONVS.items():
        state[f"features.{i}.weight"] = torch.randn(cout, cin, 3, 3, generator=g) * (2 / (9 * cin)) ** 0.5
        state[f"features.{i}.bias"] = torch.randn(cout, generator=g) * 0.01
    state["classifier.0.weight"] = torch.zeros(4, 8)  # ignored by the loader
    return state


def _by_hand(state: dict[str, torch.Tensor], x: torch.Tensor) -> list[torch.Tensor]:
    """relu1_2, relu2_2, relu3_3, relu4_3 of torchvision's VGG16 with ImageNet normalisation, by plain F calls."""
    mean = torch.tensor([0.485, 0.456, 0.406]).view(1, 3, 1, 1)
    std = torch.tensor([0.229, 0.224, 0.225]).view(1, 3, 1, 1)
    h = ((x + 1) / 2 - mean) / std
    out = []
    for block in ([0, 2], [5, 7], [10, 12, 14], [17, 19, 21]):
        if out:
            h = F.max_pool2d(h, 2)
        for i in block:
            h = F.relu(F.conv2d(h, state[f"features.{i}.weight"], state[f"features.{i}.bias"], padding=1))
        out.append(h)
    return out


def test_missing_cache_raises_with_instructions(monkeypatch, tmp_path):
    monkeypatch.setattr(torch.hub, "get_dir", lambda: str(tmp_path / "hub"))
    with pytest.raises(PerceptualWeightsMissing) as info:
        load_vgg16_features(None)
    msg = str(info.value)
    assert VGG16_URL in msg
    assert "perceptual_weights: <path>" in msg and "perceptual: 0" in msg
    assert str(tmp_path / "hub" / "checkpoints" / "vgg16-397923af.pth") in msg
    assert isinstance(info.value, FileNotFoundError)


def test_missing_explicit_path_raises(tmp_path):
    with pytest.raises(PerceptualWeightsMissing, match="perceptual_weights file .*nope.pth does not exist"):
        load_vgg16_features(tmp_path / "nope.pth")


def test_loads_torchvision_layout_and_matches_hand_computation(tv_state, tmp_path):
    path = tmp_path / "vgg16.pth"
    torch.save(tv_state, path)
    vgg = load_vgg16_features(path)
    x = torch.rand(2, 3, 32, 32) * 2 - 1
    feats = vgg(x)
    assert [tuple(f.shape) for f in feats] == [(2, 64, 32, 32), (2, 128, 16, 16), (2, 256, 8, 8), (2, 512, 4, 4)]
    for got, want in zip(feats, _by_hand(tv_state, x), strict=False):
        torch.testing.assert_close(got, want, rtol=1e-4, atol=1e-5)


def test_module_state_dict_round_trips_in_torchvision_keys(tmp_path):
    torch.manual_seed(1)
    src = VGG16Features(("relu1_2", "relu2_2", "relu3_3", "relu4_3"))
    with torch.no_grad():
        for p in src.parameters():
            p.normal_(0, 0.05)
    assert set(src.state_dict()) == {f"features.{i}.{k}" for i in TV_CONVS if i <= 21 for k in ("weight", "bias")}
    bare = {k.removeprefix("features."): v for k, v in src.state_dict().items()}  # vgg16().features layout
    torch.save(bare, tmp_path / "bare.pth")
    x = torch.rand(1, 3, 16, 16) * 2 - 1
    loaded = load_vgg16_features(tmp_path / "bare.pth")
    for a, b in zip(src(x), loaded(x), strict=False):
        torch.testing.assert_close(a, b, rtol=0, atol=0)


def test_default_path_follows_torch_home_and_safetensors_loads(tv_state, tmp_path, monkeypatch):
    monkeypatch.setenv("TORCH_HOME", str(tmp_path / "th"))
    assert default_weights_path() == tmp_path / "th" / "hub" / "checkpoints" / "vgg16-397923af.pth"
    default_weights_path().parent.mkdir(parents=True)
    torch.save(tv_state, default_weights_path())
    from_cache = load_vgg16_features(None, layers=("relu1_2",))
    save_file({k: v.contiguous() for k, v in tv_state.items()}, str(tmp_path / "w.safetensors"))
    from_st = load_vgg16_features(tmp_path / "w.safetensors", layers=("relu1_2",))
    x = torch.rand(1, 3, 8, 8) * 2 - 1
    (a,), (b,) = from_cache(x), from_st(x)
    torch.testing.assert_close(a, _by_hand(tv_state, x)[0], rtol=1e-4, atol=1e-5)
    torch.testing.assert_close(a, b, rtol=0, atol=0)


def test_key_and_shape_mismatch_are_clear(tv_state, tmp_path):
    renamed = {k.replace("features.", "backbone."): v for k, v in tv_state.items()}
    torch.save(renamed, tmp_path / "renamed.pth")
    with pytest.raises(ValueError, match=r"not a torchvision vgg16 state dict; missing keys \['features.0.weight'"):
        load_vgg16_features(tmp_path / "renamed.pth")
    wrong = dict(tv_state, **{"features.2.weight": torch.zeros(64, 32, 3, 3)})
    torch.save(wrong, tmp_path / "wrong.pth")
    with pytest.raises(ValueError, match=r"features.2.weight: \[64, 32, 3, 3\] != \[64, 64, 3, 3\]"):
        load_vgg16_features(tmp_path / "wrong.pth", layers=("relu1_2",))


def test_frozen_eval_and_layer_selection(tv_state, tmp_path):
    torch.save(tv_state, tmp_path / "v.pth")
    vgg = load_vgg16_features(Path(tmp_path / "v.pth"), layers=("relu2_1", "relu1_1"))
    vgg.train()
    assert not vgg.training and not any(m.training for m in vgg.modules())
    assert not any(p.requires_grad for p in vgg.parameters())
    assert len(vgg.features) == 7  # cut after relu2_1 (index 6)
    a, b = vgg(torch.zeros(1, 3, 8, 8))
    assert a.shape == (1, 128, 4, 4) and b.shape == (1, 64, 8, 8)  # returned in the requested order
    with pytest.raises(ValueError, match="choose from"):
        VGG16Features(("relu9_9",))
