"""lib.models.video_vae: shapes and the time rule, causality, reparameterisation, checkpointing, training works."""
from __future__ import annotations

import dataclasses
import math

import pytest
import torch
import torch.nn.functional as F

from lib.losses.vae import VideoVAELoss, VideoVAELossWeights
from lib.models import video_vae
from lib.models.video_vae import (
    GPU_PRESET,
    LOGVAR_MAX,
    CausalConv3d,
    VideoVAE,
    VideoVAEConfig,
    latent_shape,
    reparameterize,
)


def _tiny(**kw) -> VideoVAE:
    torch.manual_seed(0)
    return VideoVAE(VideoVAEConfig(**{"channels": 8, "blocks": 1, **kw}))


def _video(*shape: int, seed: int = 1) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    return torch.rand(shape, generator=g) * 2 - 1


@pytest.mark.parametrize("kw", [{"temporal_compression": 3}, {"temporal_compression": 8},
                                {"spatial_compression": 3}, {"spatial_compression": 32}, {"channels": 0},
                                {"latent_channels": 0}, {"blocks": -1}, {"in_channels": 0}])
def test_config_rejects_bad_values(kw):
    with pytest.raises(ValueError, match=f"^{next(iter(kw))}: "):
        VideoVAEConfig(**kw)


@pytest.mark.parametrize("tc,sc,T,H,W", [(2, 4, 5, 16, 16), (1, 1, 3, 8, 8), (4, 2, 6, 8, 12), (4, 16, 4, 16, 16),
                                         (2, 8, 1, 16, 8), (1, 4, 2, 8, 4)])
def test_shapes(tc, sc, T, H, W):
    model = _tiny(temporal_compression=tc, spatial_compression=sc, latent_channels=3)
    x = _video(2, 3, T, H, W)
    x_hat, mean, logvar = model(x)
    expected = (2, 3, math.ceil(T / tc), H // sc, W // sc)
    assert mean.shape == logvar.shape == expected
    assert latent_shape(model.config, T, H, W) == expected[1:]
    assert x_hat.shape == x.shape
    # decode without num_frames returns whole groups: equal to T only when tc divides T
    assert model.decode(mean).shape[2] == expected[2] * tc


def test_decode_num_frames_and_hw_errors():
    model = _tiny(temporal_compression=4, spatial_compression=4)
    z = torch.zeros(1, 4, 2, 2, 2)
    assert model.decode(z, num_frames=5).shape == (1, 3, 5, 8, 8)
    with pytest.raises(ValueError, match="expected 5..8"):
        model.decode(z, num_frames=4)
    with pytest.raises(ValueError, match="divisible by spatial_compression=4"):
        model.encode(torch.zeros(1, 3, 4, 10, 8))
    with pytest.raises(ValueError, match=r"x must be \[B, 3, T, H, W\]"):
        model.encode(torch.zeros(1, 1, 4, 8, 8))


def test_causal_conv_sees_only_the_past():
    torch.manual_seed(0)
    conv = CausalConv3d(2, 3, kernel_size=(3, 3, 5))
    x = torch.randn(1, 2, 6, 5, 7)
    y = conv(x)
    assert y.shape == (1, 3, 6, 5, 7)
    for t in range(6):
        x2 = x.clone()
        x2[:, :, t:] += torch.randn_like(x2[:, :, t:])
        y2 = conv(x2)
        torch.testing.assert_close(y2[:, :, :t], y[:, :, :t], rtol=0, atol=1e-6)
        assert (y2[:, :, t] - y[:, :, t]).abs().max() > 1e-3  # frame t does see frame t


@pytest.mark.parametrize("shortcuts", [False, True])
@pytest.mark.parametrize("tc,T", [(2, 8), (4, 8), (2, 7), (4, 10)])
def test_encoder_and_reconstruction_are_causal(tc, T, shortcuts):
    model = _tiny(temporal_compression=tc, spatial_compression=2, shortcuts=shortcuts).eval()
    x = _video(1, 3, T, 8, 8)
    n_lat = math.ceil(T / tc)
    with torch.no_grad():
        mean, _ = model.encode(x)
        x_hat = model(x, sample=False)[0]
        for k in range(1, n_lat):  # change every frame from group k on
            x2 = x.clone()
            x2[:, :, k * tc:] = _video(1, 3, T - k * tc, 8, 8, seed=10 + k)
            mean2, _ = model.encode(x2)
            x_hat2 = model(x2, sample=False)[0]
            torch.testing.assert_close(mean2[:, :, :k], mean[:, :, :k], rtol=0, atol=1e-6)
            torch.testing.assert_close(x_hat2[:, :, :k * tc], x_hat[:, :, :k * tc], rtol=0, atol=1e-6)
            assert (mean2[:, :, k] - mean[:, :, k]).abs().max() > 1e-4  # the change is visible where allowed
            assert (x_hat2[:, :, k * tc] - x_hat[:, :, k * tc]).abs().max() > 1e-4


@pytest.mark.parametrize("shortcuts", [False, True])
def test_decoder_is_causal_in_latent_frames(shortcuts):
    model = _tiny(temporal_compression=4, spatial_compression=2, shortcuts=shortcuts).eval()
    torch.manual_seed(3)
    z = torch.randn(1, 4, 3, 4, 4)
    z2 = z.clone()
    z2[:, :, 1:] = torch.randn_like(z2[:, :, 1:])
    with torch.no_grad():
        a, b = model.decode(z), model.decode(z2)
    torch.testing.assert_close(a[:, :, :4], b[:, :, :4], rtol=0, atol=1e-6)
    assert (a[:, :, 4] - b[:, :, 4]).abs().max() > 1e-4


def test_reparameterize_statistics_and_generator():
    mean, logvar = torch.full((200_000,), 2.0), torch.full((200_000,), math.log(0.25))
    z = reparameterize(mean, logvar, torch.Generator().manual_seed(0))
    assert abs(z.mean().item() - 2.0) < 0.01 and abs(z.std().item() - 0.5) < 0.01
    model = _tiny()
    x = _video(1, 3, 2, 8, 8)
    with torch.no_grad():
        a = model(x, generator=torch.Generator().manual_seed(5))[0]
        b = model(x, generator=torch.Generator().manual_seed(5))[0]
        c = model(x, generator=torch.Generator().manual_seed(6))[0]
        mean_only, mean, _ = model(x, sample=False)
    torch.testing.assert_close(a, b)
    assert (a - c).abs().max() > 1e-5
    torch.testing.assert_close(mean_only, model.decode(mean, num_frames=2))


def test_logvar_is_clamped():
    model = _tiny()
    with torch.no_grad():
        model.enc_out.conv.bias[model.config.latent_channels:] = 1e4  # logvar half of the moments
        _, logvar = model.encode(_video(1, 3, 2, 8, 8))
    assert logvar.max().item() == LOGVAR_MAX


def test_gradient_checkpointing_matches_plain_backward(monkeypatch):
    calls = []
    real_checkpoint = video_vae.checkpoint
    monkeypatch.setattr(video_vae, "checkpoint", lambda *a, **k: calls.append(1) or real_checkpoint(*a, **k))
    plain = _tiny(blocks=2).train()
    ckpt = VideoVAE(VideoVAEConfig(channels=8, blocks=2, gradient_checkpointing=True)).train()
    ckpt.load_state_dict(plain.state_dict())
    x = _video(2, 3, 4, 8, 8)
    grads = []
    for model in (plain, ckpt):
        x_hat, mean, logvar = model(x, generator=torch.Generator().manual_seed(0))
        ((x_hat - x).abs().mean() + mean.square().mean() + logvar.exp().mean()).backward()
        grads.append([p.grad.clone() for p in model.parameters()])
    # ResBlocks (blocks=2 at each of: 2 encoder levels, encoder middle, decoder middle, 2 decoder levels), the 2
    # Up layers and the 2 output heads; not the Down convs
    assert sum(isinstance(m, video_vae.ResBlock) for m in ckpt.modules()) == 2 * 6
    assert len(calls) == 2 * 6 + 2 + 2
    for g_plain, g_ckpt in zip(*grads, strict=False):
        torch.testing.assert_close(g_ckpt, g_plain, rtol=1e-5, atol=1e-6)


def assert_same_training_step(plain, other, x):
    """One loss + backward on each model (same weights, same noise): equal outputs and parameter gradients."""
    outs, grads = [], []
    for model in (plain, other):
        x_hat, mean, logvar = model(x, generator=torch.Generator().manual_seed(0))
        ((x_hat - x).abs().mean() + mean.square().mean() + logvar.exp().mean()).backward()
        outs.append(x_hat.detach())
        grads.append([p.grad.clone() for p in model.parameters()])
    torch.testing.assert_close(outs[1], outs[0], rtol=1e-5, atol=1e-6)
    for g_plain, g_other in zip(*grads, strict=True):
        torch.testing.assert_close(g_other, g_plain, rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize("chunk", [1, 2, 3, 16])
def test_checkpointing_in_time_chunks_gives_the_plain_gradient(chunk):
    """ResBlocks and heads recomputed a few frames at a time (each chunk reads the frames its causal convs look
    back on): the same outputs and gradients as without checkpointing, for chunks shorter than that look-back too."""
    cfg = VideoVAEConfig(channels=8, latent_channels=4, temporal_compression=2, spatial_compression=2, blocks=2,
                         level_channels=(4,))
    plain = VideoVAE(cfg).train()
    chunked = VideoVAE(dataclasses.replace(cfg, gradient_checkpointing=True, checkpoint_chunk_frames=chunk)).train()
    chunked.load_state_dict(plain.state_dict())
    assert_same_training_step(plain, chunked, _video(2, 3, 7, 8, 8))


@pytest.mark.parametrize("shortcuts", [False, True])
@pytest.mark.parametrize("levels", [1, 2])
def test_whole_level_checkpointing_gives_the_plain_gradient(levels, shortcuts):
    """checkpoint_levels: the first encoder levels (with the input conv) and the last decoder levels (with the head)
    as whole checkpointed segments, layers checkpointed inside, time chunks too: the outputs and gradients of the
    model without any checkpointing; only training with gradients uses it."""
    cfg = VideoVAEConfig(channels=8, latent_channels=4, temporal_compression=4, spatial_compression=4, blocks=1,
                         level_channels=(4, 8), shortcuts=shortcuts)
    plain = VideoVAE(cfg).train()
    ckpt = VideoVAE(dataclasses.replace(cfg, gradient_checkpointing=True, checkpoint_chunk_frames=3,
                                        checkpoint_levels=levels)).train()
    ckpt.load_state_dict(plain.state_dict())
    assert_same_training_step(plain, ckpt, _video(2, 3, 9, 16, 16))
    assert ckpt._segments() == levels
    with torch.no_grad():
        assert ckpt._segments() == 0
    assert ckpt.eval()._segments() == 0


@pytest.mark.parametrize("shortcuts", [False, True])
@pytest.mark.parametrize("limit", [1, 800, 2_000])
def test_convolutions_split_in_time_below_the_32_bit_limit_give_the_same_step(monkeypatch, limit, shortcuts):
    """With the per-call element limit lowered (1: one output frame per call; 800/2,000: a few frames), every
    causal conv, Down and the padding run in time chunks, each reading its own look-back: the same outputs and
    gradients as one call each, with checkpointing and whole-level segments too; and no conv call ever gets a
    sample of the limit's size or more (what cuDNN refuses at 1024 px, 49 frames, 64 channels)."""
    cfg = VideoVAEConfig(channels=8, latent_channels=4, temporal_compression=4, spatial_compression=4, blocks=1,
                         level_channels=(4, 8), gradient_checkpointing=True, checkpoint_chunk_frames=3,
                         checkpoint_levels=1, shortcuts=shortcuts)
    x = _video(2, 3, 9, 8, 8)
    plain = VideoVAE(cfg).train()
    split = VideoVAE(cfg).train()
    split.load_state_dict(plain.state_dict())
    largest = []

    def spy(module, inputs, output):
        largest.append(max(inputs[0][0].numel(), output[0].numel()))

    for m in split.modules():
        if isinstance(m, torch.nn.Conv3d) and m.kernel_size[0] > 1:  # 1x1x1 projections never split
            m.register_forward_hook(spy)
    monkeypatch.setattr(video_vae, "MAX_KERNEL_ELEMENTS", limit)
    assert_same_training_step(plain, split, x)
    if limit > 1:  # a single frame may exceed a limit of 1; the chunks must stay under the others
        assert max(largest) < limit
    assert len(largest) > 2 * sum(isinstance(m, torch.nn.Conv3d) and m.kernel_size[0] > 1 for m in split.modules())


def test_space_to_channel_is_pixel_unshuffle_per_frame_and_channel_to_space_inverts_it():
    x = _video(2, 3, 4, 8, 12)
    per_frame = F.pixel_unshuffle(x.transpose(1, 2).reshape(8, 3, 8, 12), 2).reshape(2, 4, 12, 4, 6).transpose(1, 2)
    torch.testing.assert_close(video_vae.space_to_channel(x, 1, 2), per_frame, rtol=0, atol=0)
    z = video_vae.space_to_channel(x, 2, 2)
    assert z.shape == (2, 24, 2, 4, 6)
    # channel c*8 + t*4 + row*2 + col holds input channel c at that offset in each 2x2x2 block
    torch.testing.assert_close(z[:, 8 + 4 + 1], x[:, 1, 1::2, 0::2, 1::2], rtol=0, atol=0)
    torch.testing.assert_close(video_vae.channel_to_space(z, 2, 2), x, rtol=0, atol=0)


def test_shortcut_down_then_up_alone_is_the_block_mean():
    """What the shortcuts pass with every layer's own output at zero: Down's averages each channel over its
    aligned 2x2x2 block (avg_pool3d), Up's copies the value back over the block (nearest)."""
    x = _video(1, 4, 4, 8, 8)
    down = video_vae.average_channels(video_vae.space_to_channel(x, 2, 2), 4)
    torch.testing.assert_close(down, F.avg_pool3d(x, 2), rtol=0, atol=1e-6)
    up = video_vae.channel_to_space(video_vae.repeat_channels(down, 4 * 8), 2, 2)
    torch.testing.assert_close(up, video_vae.upsample_nearest(down, (2, 2, 2)), rtol=0, atol=0)


@pytest.mark.parametrize("ft", [1, 2])
def test_shortcuts_built_in_pieces_equal_the_whole_in_values_and_gradients(monkeypatch, ft):
    """Up's and Down's shortcut terms are built a few frames at a time (and Up's added into its conv's output in
    place) to keep full-resolution copies out of the step's memory; the result is the whole-tensor formula's."""
    torch.manual_seed(0)
    up, down = video_vae.Up(8, ft, 2, 4, shortcut=True), video_vae.Down(4, ft, 2, 8, shortcut=True)
    x_up, x_down = _video(2, 8, 3, 4, 4).requires_grad_(), _video(2, 4, 3 * ft, 8, 8, seed=2).requires_grad_()

    def whole_up(x):
        y = up.conv(video_vae.upsample_nearest(up.proj(x), up.factors))
        return y + video_vae.channel_to_space(video_vae.repeat_channels(x, 4 * ft * 4), ft, 2)

    def whole_down(x):
        return down.conv(x) + video_vae.average_channels(video_vae.space_to_channel(x, ft, 2), 8)

    outs = {}
    for name, fn in (("whole", lambda: (whole_up(x_up), whole_down(x_down))),
                     ("pieces", lambda: (up(x_up), down(x_down)))):
        monkeypatch.setattr(video_vae, "SHORTCUT_PIECE_ELEMENTS", 1)  # one low-resolution frame per piece
        a, b = fn()
        (a.square().sum() + b.square().sum()).backward()
        outs[name] = (a.detach(), b.detach(), x_up.grad.clone(), x_down.grad.clone(), up.proj.weight.grad.clone())
        for t in (x_up, x_down, *up.parameters(), *down.parameters()):
            t.grad = None
    for got, want in zip(outs["pieces"], outs["whole"], strict=True):
        torch.testing.assert_close(got, want, rtol=1e-6, atol=1e-6)


def test_shortcuts_add_no_parameters_but_change_the_mapping():
    plain, short = _tiny(), _tiny(shortcuts=True)
    short.load_state_dict(plain.state_dict())  # the same weights, strict keys
    x = _video(1, 3, 4, 8, 8)
    with torch.no_grad():
        assert (plain(x, sample=False)[0] - short(x, sample=False)[0]).abs().max() > 1e-3


@pytest.mark.parametrize("kw,match", [
    ({"channels": 8, "latent_channels": 3}, "channels 8 is not a multiple of latent_channels 3"),
    ({"channels": 8, "level_channels": (3,), "spatial_compression": 2, "temporal_compression": 1},
     "level 0 is 3 wide"),
])
def test_shortcuts_with_widths_that_do_not_divide_are_refused(kw, match):
    with pytest.raises(ValueError, match=match):
        VideoVAEConfig(shortcuts=True, **kw)


def test_repeat_frames_and_upsample_nearest_equal_torch_pad_and_interpolate():
    x = torch.randn(2, 3, 5, 4, 6, requires_grad=True)
    padded = video_vae.repeat_frames(x, before=2, after=3)
    ref = torch.nn.functional.pad(x, (0, 0, 0, 0, 2, 3), mode="replicate")
    torch.testing.assert_close(padded, ref, rtol=0, atol=0)
    g = torch.randn_like(ref)
    ours, theirs = torch.autograd.grad(padded, x, g)[0], torch.autograd.grad(ref, x, g)[0]
    torch.testing.assert_close(ours, theirs)
    up = video_vae.upsample_nearest(x, (2, 2, 2))
    ref = torch.nn.functional.interpolate(x, scale_factor=(2, 2, 2), mode="nearest")
    torch.testing.assert_close(up, ref, rtol=0, atol=0)
    g = torch.randn_like(ref)
    torch.testing.assert_close(torch.autograd.grad(up, x, g)[0], torch.autograd.grad(ref, x, g)[0])


def test_checkpoint_levels_beyond_the_model_is_refused_naming_the_range():
    with pytest.raises(ValueError, match=r"checkpoint_levels: 3 is more than the 2 levels .*use 0..2"):
        VideoVAEConfig(temporal_compression=2, spatial_compression=4, checkpoint_levels=3)


def test_whole_level_checkpointing_lowers_the_estimated_peak_memory():
    from benchmarks.estimate_vae_memory import estimate_peak_gib

    cfg = VideoVAEConfig(channels=16, latent_channels=4, temporal_compression=2, spatial_compression=4, blocks=2,
                         gradient_checkpointing=True, checkpoint_chunk_frames=4)
    peaks = [estimate_peak_gib(dataclasses.replace(cfg, checkpoint_levels=n), 1, 12, 64) for n in (0, 1, 2)]
    assert peaks[2] < peaks[1] < peaks[0], peaks


def test_time_chunks_lower_the_estimated_peak_memory_of_a_step():
    """benchmarks/estimate_vae_memory.py's estimate (fake tensors, no data): each saving lowers the peak."""
    from benchmarks.estimate_vae_memory import estimate_peak_gib

    cfg = VideoVAEConfig(channels=16, latent_channels=4, temporal_compression=2, spatial_compression=4, blocks=1,
                         gradient_checkpointing=True)
    blocks_only = estimate_peak_gib(cfg, 1, 12, 32, blocks_only=True)
    wider_scope = estimate_peak_gib(cfg, 1, 12, 32)
    chunked = estimate_peak_gib(dataclasses.replace(cfg, checkpoint_chunk_frames=4), 1, 12, 32)
    plain = estimate_peak_gib(dataclasses.replace(cfg, gradient_checkpointing=False), 1, 12, 32)
    assert chunked < wider_scope < blocks_only < plain, (chunked, wider_scope, blocks_only, plain)


def test_presets():
    assert 200_000 < VideoVAE(VideoVAEConfig()).param_count() < 1_000_000  # CPU-trainable default
    assert 10_000_000 < VideoVAE(GPU_PRESET).param_count() < 30_000_000
    assert latent_shape(GPU_PRESET, 17, 256, 128) == (16, 5, 32, 16)  # ceil(17 / 4) = 5 latent frames


def test_level_channels_set_each_level_width_and_keep_shapes():
    cfg = VideoVAEConfig(channels=16, latent_channels=4, temporal_compression=2, spatial_compression=4, blocks=1,
                         level_channels=(4, 8))
    model = VideoVAE(cfg)
    assert cfg.widths == [4, 8, 16]
    assert model.enc_in.conv.out_channels == 4 and model.dec_out.conv.in_channels == 4
    assert [lvl[-1].conv.out_channels for lvl in model.enc_levels] == [8, 16]  # Down widens into the next level
    assert [lvl[0].conv.conv.out_channels for lvl in model.dec_levels] == [8, 4]  # Up narrows, decoder order
    x = _video(2, 3, 5, 16, 16)
    x_hat, mean, _ = model(x, sample=False)
    assert x_hat.shape == x.shape and mean.shape == (2, 4, 3, 4, 4)
    narrow = VideoVAE(cfg).param_count()
    assert narrow < VideoVAE(VideoVAEConfig(channels=16, latent_channels=4, temporal_compression=2,
                                            spatial_compression=4, blocks=1)).param_count()
    with pytest.raises(ValueError, match="level_channels: one width per level"):
        VideoVAEConfig(temporal_compression=2, spatial_compression=4, level_channels=(4, 8, 16))


def test_the_gpu_curriculum_builds_as_a_train_curriculum_section(tmp_path):
    """Every phase of the GPU curriculum with the GPU preset is a valid section, with micro-batches that divide
    the phase's batch (what benchmarks/bench_vae_gpu.py and a `dvc exp run` with the preset build)."""
    import dataclasses

    from lib.train.curriculum import GPU_PRESET as GPU_CURRICULUM
    from lib.train.video_vae import from_section

    model = {**dataclasses.asdict(GPU_PRESET), "level_channels": list(GPU_PRESET.level_channels)}
    phases = [dataclasses.asdict(p) for p in GPU_CURRICULUM.phases]
    cfg = from_section({"out_dir": str(tmp_path), "model": model,
                        "curriculum": {"phases": phases, "gradient_checkpointing": True}}, "train_curriculum")
    assert cfg.model == GPU_PRESET and cfg.curriculum == GPU_CURRICULUM
    assert [cfg.micro_batch_of(p) for p in cfg.curriculum.phases] == [16, 4, 1]


def test_training_lowers_video_vae_loss():
    torch.manual_seed(0)
    model = VideoVAE(VideoVAEConfig())  # the default: what the CPU trainer runs
    # smooth moving pattern: learnable, unlike white noise
    t = torch.arange(4).view(1, 1, 4, 1, 1).float()
    yy, xx = torch.meshgrid(torch.linspace(0, 3, 16), torch.linspace(0, 3, 16), indexing="ij")
    x = torch.cat([torch.sin(xx + 0.5 * t + c) * torch.cos(yy - c) for c in range(3)], dim=1).repeat(2, 1, 1, 1, 1)
    loss_fn = VideoVAELoss(VideoVAELossWeights(beta=1e-4))
    opt = torch.optim.Adam(model.parameters(), lr=2e-3)
    gen = torch.Generator().manual_seed(0)
    losses = []
    for step in range(30):
        x_hat, mean, logvar = model(x, generator=gen)
        loss, _ = loss_fn(x, x_hat, mean, logvar, step)
        opt.zero_grad()
        loss.backward()
        opt.step()
        losses.append(loss.item())
    assert losses[-1] < 0.6 * losses[0], losses


def test_shortcuts_keep_the_decoders_stream_in_the_autocast_dtype():
    """Under CUDA autocast the latent is fp32 (exp() of logvar runs in fp32); the decoder's shortcut must not turn
    its bf16 stream into fp32 (on an 80 GB H100 that doubled every kept decoder activation: out of memory)."""
    model = _tiny(shortcuts=True, level_channels=(8, 8)).train()
    seen = []
    model.dec_mid[0].register_forward_hook(lambda mod, args, out: seen.append(args[0].dtype))
    z = torch.randn(1, model.config.latent_channels, 2, 2, 2)  # fp32, as CUDA autocast leaves it
    with torch.autocast("cpu", dtype=torch.bfloat16):
        model.decode(z)
    assert seen == [torch.bfloat16]
