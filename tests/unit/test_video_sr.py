"""lib.models.video_sr: output shapes, bicubic start, text conditioning (FiLM), and that training lowers L1."""
from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from lib.models.video_sr import GPU_PRESET, VideoSRConfig, VideoSRGenerator


def _bicubic(lq: torch.Tensor, scale: int) -> torch.Tensor:
    """Per-frame bicubic upsampling of [B, 3, T, h, w], computed independently of the model."""
    frames = [F.interpolate(lq[:, :, t], scale_factor=scale, mode="bicubic", align_corners=False)
              for t in range(lq.shape[2])]
    return torch.stack(frames, dim=2)


def _tiny(**kw) -> VideoSRGenerator:
    torch.manual_seed(0)
    return VideoSRGenerator(VideoSRConfig(**{"channels": 8, "blocks": 2, **kw}))


@pytest.mark.parametrize("scale,shape", [(2, (1, 3, 1, 8, 8)), (2, (2, 3, 3, 6, 10)),
                                         (4, (1, 3, 2, 5, 7)), (4, (2, 3, 4, 8, 8)), (3, (1, 3, 2, 4, 6))])
def test_output_shape(scale, shape):
    B, C, T, h, w = shape
    out = _tiny(scale=scale)(torch.rand(shape) * 2 - 1)
    assert out.shape == (B, C, T, h * scale, w * scale)


@pytest.mark.parametrize("scale", [2, 4])
def test_untrained_model_is_bicubic(scale):
    torch.manual_seed(1)
    lq = torch.rand(2, 3, 3, 6, 5) * 2 - 1
    out = _tiny(scale=scale)(lq)
    torch.testing.assert_close(out, _bicubic(lq, scale), atol=1e-5, rtol=0)


def _perturb(model: torch.nn.Module) -> None:
    """Stand-in for training: make every parameter (zero-init ones included) non-zero."""
    torch.manual_seed(2)
    with torch.no_grad():
        for p in model.parameters():
            p.add_(0.1 * torch.randn_like(p))


def test_text_conditioning_changes_output_once_trained():
    model = _tiny(scale=2, text_dim=6)
    lq = torch.rand(2, 3, 2, 6, 6) * 2 - 1
    text_a, text_b = torch.randn(2, 6), torch.randn(2, 6)
    # at init FiLM is zero and the tail is zero: text cannot matter yet
    torch.testing.assert_close(model(lq, text_a), model(lq, text_b))
    _perturb(model)
    out_a, out_b, out_none = model(lq, text_a), model(lq, text_b), model(lq)
    assert (out_a - out_b).abs().max() > 1e-3
    assert (out_a - out_none).abs().max() > 1e-3


def test_text_errors():
    lq = torch.zeros(2, 3, 1, 4, 4)
    with pytest.raises(ValueError, match="text_dim is 0"):
        _tiny(scale=2)(lq, torch.zeros(2, 6))
    with pytest.raises(ValueError, match=r"\[B, text_dim\]"):
        _tiny(scale=2, text_dim=6)(lq, torch.zeros(2, 5))
    with pytest.raises(ValueError, match=r"\[B, 3, T, h, w\]"):
        _tiny(scale=2)(torch.zeros(2, 3, 4, 4))


def test_config_validation():
    with pytest.raises(ValueError, match="^scale: must be >= 1, got 0"):
        VideoSRConfig(scale=0)
    with pytest.raises(ValueError, match="^text_dim: must be >= 0, got -1"):
        VideoSRConfig(text_dim=-1)


def test_adam_steps_lower_l1_on_a_fixed_batch():
    torch.manual_seed(3)
    hq = torch.rand(2, 3, 2, 16, 16) * 2 - 1
    lq = F.avg_pool3d(hq, kernel_size=(1, 2, 2))  # [2, 3, 2, 8, 8]
    model = _tiny(scale=2, text_dim=4)
    text = torch.randn(2, 4)
    opt = torch.optim.Adam(model.parameters(), lr=5e-3)
    losses = []
    for _ in range(30):
        loss = F.l1_loss(model(lq, text), hq)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        losses.append(loss.item())
    assert losses[-1] < 0.8 * losses[0], losses  # ~0.67-0.69 of the start on three seeds


def test_param_count():
    model = _tiny(scale=2)
    assert model.param_count() == sum(p.numel() for p in model.parameters())
    default = VideoSRGenerator(VideoSRConfig())
    assert default.param_count() == 400_579  # the figure quoted in the module docstring
    assert VideoSRGenerator(GPU_PRESET).param_count() == 16_977_667
