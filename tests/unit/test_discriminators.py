"""lib.models.discriminators: exact output shapes, feature lists, spectral norm, gradients to the input."""
from __future__ import annotations

import pytest
import torch
from torch import nn

from lib.models.discriminators import PatchDiscriminator3D, VideoDiscriminator


def test_patch_discriminator_exact_shape():
    torch.manual_seed(0)
    D = PatchDiscriminator3D()
    logits, features = D(torch.randn(2, 3, 8, 64, 64))
    assert logits.shape == (2, 1, 8, 15, 15)
    assert D.output_shape((2, 3, 8, 64, 64)) == (2, 1, 8, 15, 15)


@pytest.mark.parametrize("shape,n_down", [((1, 3, 4, 32, 48), 2), ((1, 3, 3, 33, 18), 2), ((2, 3, 2, 32, 32), 3)])
def test_patch_discriminator_shape_formula(shape, n_down):
    B, _, T, H, W = shape
    D = PatchDiscriminator3D(channels=4, n_down=n_down)
    logits, _ = D(torch.randn(shape))
    expected = (B, 1, T, H // 2**n_down - 1, W // 2**n_down - 1)
    assert logits.shape == expected == D.output_shape(shape)


def test_patch_discriminator_rejects_small_input():
    with pytest.raises(ValueError, match="H and W must be >= 8"):
        PatchDiscriminator3D(channels=4)(torch.randn(1, 3, 2, 7, 16))


@pytest.mark.parametrize("shape", [(2, 3, 8, 64, 64), (3, 3, 1, 16, 24), (1, 3, 5, 9, 13)])
def test_video_discriminator_shape(shape):
    logits, features = VideoDiscriminator(channels=4)(torch.randn(shape))
    assert logits.shape == (shape[0], 1)
    assert len(features) == 4


@pytest.mark.parametrize("make", [PatchDiscriminator3D, VideoDiscriminator])
def test_features_at_several_scales(make):
    torch.manual_seed(0)
    D = make(channels=4)
    _, features = D(torch.randn(2, 3, 4, 32, 32))
    assert len(features) >= 3
    assert all(f.shape[0] == 2 for f in features)
    assert len({f.shape[-1] for f in features}) >= 3  # several spatial scales


@pytest.mark.parametrize("make", [PatchDiscriminator3D, VideoDiscriminator])
def test_spectral_norm_on_every_layer(make):
    torch.manual_seed(0)
    D = make(channels=4)
    layers = [m for m in D.modules() if isinstance(m, (nn.Conv2d, nn.Conv3d, nn.Linear))]
    assert layers and all(hasattr(m, "parametrizations") and "weight" in m.parametrizations for m in layers)
    D.train()
    x = torch.randn(1, 3, 4, 32, 32)
    for _ in range(30):  # one power iteration per training-mode forward
        D(x)
    for m in layers:
        sigma = torch.linalg.matrix_norm(m.weight.detach().reshape(m.weight.shape[0], -1), ord=2)
        assert abs(sigma.item() - 1.0) < 1e-2, (m, sigma)


@pytest.mark.parametrize("make", [PatchDiscriminator3D, VideoDiscriminator])
def test_gradients_reach_input_and_params(make):
    torch.manual_seed(0)
    D = make(channels=4)
    x = torch.randn(1, 3, 2, 16, 16, requires_grad=True)
    logits, _ = D(x)
    logits.sum().backward()
    assert x.grad is not None and x.grad.abs().sum() > 0
    assert all(p.grad is not None for p in D.parameters())
