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
def test_spectral_false_leaves_every_layer_plain_with_the_same_shapes(make):
    torch.manual_seed(0)
    D, plain = make(channels=4), make(channels=4, spectral=False)
    layers = [m for m in plain.modules() if isinstance(m, (nn.Conv2d, nn.Conv3d, nn.Linear))]
    assert layers and not any(hasattr(m, "parametrizations") for m in layers)
    x = torch.randn(2, 3, 4, 32, 32)
    (a, fa), (b, fb) = D(x), plain(x)
    assert a.shape == b.shape and [f.shape for f in fa] == [f.shape for f in fb]


@pytest.mark.parametrize("make", [PatchDiscriminator3D, VideoDiscriminator])
def test_gradients_reach_input_and_params(make):
    torch.manual_seed(0)
    D = make(channels=4)
    x = torch.randn(1, 3, 2, 16, 16, requires_grad=True)
    logits, _ = D(x)
    logits.sum().backward()
    assert x.grad is not None and x.grad.abs().sum() > 0
    assert all(p.grad is not None for p in D.parameters())


@pytest.mark.parametrize("kernel,stem", [(3, "conv"), (3, "space_to_depth"), (4, "space_to_depth")])
@pytest.mark.parametrize("shape", [(2, 3, 4, 64, 64), (1, 3, 3, 32, 48)])
def test_patch_discriminator_variants_shape_and_features(kernel, stem, shape):
    D = PatchDiscriminator3D(channels=4, kernel=kernel, stem=stem)
    x = torch.randn(shape, requires_grad=True)
    logits, features = D(x)
    B, _, T, H, W = shape
    trim = 1 if kernel == 4 else 0
    assert logits.shape == (B, 1, T, H // 4 - trim, W // 4 - trim) == D.output_shape(shape)
    assert [f.shape[-1] for f in features] == [W // 2, W // 4, W // 4 - trim]  # same layers as the default
    logits.sum().backward()
    assert x.grad is not None and float(x.grad.abs().sum()) > 0


def test_space_to_depth_stem_is_a_pixel_unshuffle_per_frame():
    """The stem's first conv sees each frame's 2x2 pixel blocks as channels (checked against torch's unshuffle
    on one frame), and the first conv has 4x the input channels at stride 1."""
    D = PatchDiscriminator3D(channels=4, kernel=3, stem="space_to_depth")
    first = D.convs[0]
    assert first.in_channels == 12 and first.stride == (1, 1, 1)
    seen = {}
    first.register_forward_pre_hook(lambda module, args: seen.setdefault("x", args[0]))
    x = torch.randn(1, 3, 2, 8, 8)
    D(x)
    torch.testing.assert_close(seen["x"][:, :, 1], torch.nn.functional.pixel_unshuffle(x[:, :, 1], 2))


def test_patch_discriminator_rejects_a_bad_kernel_stem_or_odd_size():
    with pytest.raises(ValueError, match="kernel must be 3 or 4"):
        PatchDiscriminator3D(kernel=5)
    with pytest.raises(ValueError, match="stem must be"):
        PatchDiscriminator3D(stem="patchify")
    with pytest.raises(ValueError, match="needs even H and W"):
        PatchDiscriminator3D(channels=4, stem="space_to_depth")(torch.randn(1, 3, 2, 16, 17))
