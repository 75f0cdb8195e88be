"""lib.train.video_vae: per-phase data shapes and square crops, exact resume mid-phase through a curriculum,
training lowers the validation loss, and config errors that name the key and the fix."""
import contextlib
import math
from types import SimpleNamespace

import pytest
import torch

from lib.config import ConfigError
from lib.losses.vae import VideoVAELoss
from lib.models.vgg import PerceptualWeightsMissing
from lib.train.video_vae import (
    build_model,
    center_square_resize,
    from_section,
    make_data_fn,
    make_step_fn,
    make_trainer,
    make_validate_fn,
    micro_batch_seed,
    square_resize_crop,
    to_section,
)
from tests.helpers.ssv2_data import write_clip_manifest
from tests.helpers.training import final_weights, run_killed_at

H, W = 32, 64
TINY_MODEL = {"channels": 8, "latent_channels": 2, "temporal_compression": 2, "spatial_compression": 2, "blocks": 1}
PHASES = [{"name": "A", "resolution": 8, "frames": 2, "batch_size": 3, "lr": 0.003, "steps": 3, "warmup_steps": 1},
          {"name": "B", "resolution": 16, "frames": 4, "batch_size": 2, "lr": 0.002, "steps": 3, "warmup_steps": 1}]


@pytest.fixture(scope="module")
def manifest(tmp_path_factory):
    return write_clip_manifest(tmp_path_factory.mktemp("ssv2"), [12 + k for k in range(8)],
                               ["train"] * 6 + ["validation"] * 2, H, W)


def section(out_dir, **over):
    base = {"steps": 6, "batch_size": 2, "warmup_steps": 1, "lr": 0.003, "betas": [0.9, 0.99],
            "checkpoint_every": 2, "log_every": 1, "tracker": "none", "out_dir": str(out_dir), "model": TINY_MODEL,
            "resolution": 16, "clip_frames": 4, "clip_stride": 1, "val_clips": 2, "val_every": 3}
    base.update(over)
    return base


def curriculum_section(out_dir, **over):
    base = section(out_dir, curriculum={"phases": PHASES})
    for key in ("batch_size", "resolution", "clip_frames", "warmup_steps", "steps"):
        base.pop(key)
    base.update(over)
    return base


def test_square_crop_spans_the_short_side_and_resizes():
    cols = torch.arange(W, dtype=torch.uint8).repeat(H, 1)  # pixel value = column index
    video = cols[None, None, None].expand(2, 3, 2, H, W).contiguous()
    full = square_resize_crop(video, H, torch.Generator().manual_seed(0))  # no resize: a plain window
    assert full.shape == (2, 3, 2, H, H)
    for b in range(2):
        left = round((full[b, 0, 0, 0, 0].item() + 1) * 127.5)
        assert 0 <= left <= W - H
        # whole height, same on all frames
        assert torch.equal(full[b], video[b, :, :, :, left:left + H].float() / 127.5 - 1)
    center = center_square_resize(video[0], 8)
    assert center.shape == (3, 2, 8, 8)
    # the central square (columns 16..47) averaged down: mean intensity = mean of those columns, each output pixel
    # (the mean of 4 columns, k + 1.5) rounded to uint8 by the resize
    assert math.isclose(float((center.mean() + 1) * 127.5), (16 + 47) / 2, abs_tol=0.5 + 1e-4)
    levels = (center + 1) * 127.5
    assert torch.allclose(levels, levels.round(), atol=1e-4)  # whole levels


def test_squares_resized_in_uint8_are_within_one_level_of_a_float_resize():
    import torch.nn.functional as F

    video = torch.randint(0, 256, (2, 3, 3, 40, 56), dtype=torch.uint8, generator=torch.Generator().manual_seed(0))
    got = square_resize_crop(video, 12, torch.Generator().manual_seed(1))
    gen = torch.Generator().manual_seed(1)
    torch.randint(0, 1, (2,), generator=gen)  # the tops square_resize_crop draws first
    lefts = torch.randint(0, 17, (2,), generator=gen).tolist()
    crops = torch.stack([video[b, :, :, :, left:left + 40] for b, left in enumerate(lefts)]).float()
    frames = F.interpolate(crops.transpose(1, 2).reshape(6, 3, 40, 40), size=(12, 12), mode="bilinear",
                           align_corners=False, antialias=True)
    expected = frames.reshape(2, 3, 3, 12, 12).transpose(1, 2) / 127.5 - 1
    assert got.shape == expected.shape and float((got - expected).abs().max()) <= 1 / 127.5 + 1e-6


def test_data_shapes_per_phase_and_resume_position(manifest, tmp_path):
    cfg = from_section(curriculum_section(tmp_path / "run"))
    data = make_data_fn(cfg, manifest)
    a, b = cfg.curriculum.phases
    batch = next(iter(data(0, a)))
    assert batch["video"].shape == (3, 3, 2, 8, 8) and batch["video"].dtype == torch.float32
    assert batch["video"].abs().max() <= 1 and isinstance(batch["noise_seed"], int)
    from_start = list(data(3, b))  # phase B from its first step (3) to the end of the run (6)
    assert [x["video"].shape for x in from_start] == [(2, 3, 4, 16, 16)] * 3
    resumed = list(data(4, b))  # as after a resume at step 4: the same micro-batches from there on
    assert all(torch.equal(x["video"], y["video"]) and x["noise_seed"] == y["noise_seed"]
               for x, y in zip(from_start[1:], resumed, strict=True))
    assert micro_batch_seed(0, 0, 5) != micro_batch_seed(0, 1, 5)  # phases draw their own crops

    plain = make_data_fn(from_section(section(tmp_path / "plain", resolution=8, clip_frames=3)), manifest)
    assert next(iter(plain(0)))["video"].shape == (2, 3, 3, 8, 8)


def test_crops_made_in_loader_workers_equal_crops_made_from_the_raw_batches(manifest, tmp_path):
    from lib.data.video_dataset import iterate_steps
    from lib.train.video_vae import loader_config

    cfg = from_section(curriculum_section(tmp_path / "run"))
    b = cfg.curriculum.phases[1]
    serial = list(make_data_fn(cfg, manifest)(3, b))
    workers = list(make_data_fn(cfg, manifest, {"num_workers": 2, "prefetch_factor": 2})(3, b))
    # the same micro-batches cropped here, from the loader's uint8 batches, as the trainer's process once did
    raw = iterate_steps(loader_config(cfg, manifest, b), 6, 3)
    for (index, batch), one, other in zip(raw, serial, workers, strict=True):
        generator = torch.Generator().manual_seed(micro_batch_seed(cfg.train.seed, 1, index))
        expected = square_resize_crop(batch["video"], b.resolution, generator)
        noise_seed = int(torch.randint(0, 2**62, (1,), generator=generator))
        for got in (one, other):
            assert torch.equal(got["video"], expected) and got["noise_seed"] == noise_seed
            assert got["micro_batch"] == 2 and "label" not in got


def test_resume_mid_phase_through_the_curriculum_is_exact(manifest, tmp_path):

    whole = make_trainer(from_section(curriculum_section(tmp_path / "whole")), manifest)
    whole.run(progress=False)
    assert whole.stop_reason == "curriculum" and whole.state.step == 6
    assert "val/psnr" in whole.state.metrics and whole.state.metrics["curriculum/resolution"] == 16

    cfg = from_section(curriculum_section(tmp_path / "killed"))
    run_killed_at(make_trainer(cfg, manifest), 5)  # phase B runs steps 3..5; the last checkpoint is at step 4
    again = make_trainer(cfg, manifest)
    assert again.resumed_from is not None and again.resumed_from.name == "step-000004"
    assert again.curriculum.phase.name == "B" and again.curriculum.phase_start_step == 3
    again.run(progress=False)

    ref = final_weights(tmp_path / "whole")["raw/vae"]
    got = final_weights(tmp_path / "killed")["raw/vae"]
    assert set(ref) == set(got) and all(torch.equal(ref[k], got[k]) for k in ref)


class _StubTrainer:
    """What make_step_fn's step touches of a Trainer: one model, backward, a no-op optimiser step."""

    def __init__(self, model):
        self.models = {"vae": model}
        self.accelerator = SimpleNamespace(no_sync=lambda m: contextlib.nullcontext())

    def unwrap(self, name):
        return self.models[name]

    def backward(self, loss, name):
        loss.backward()

    def optimizer_step(self, name):
        pass


def test_micro_batches_give_the_whole_batch_gradient(manifest, tmp_path):
    """batch 4 as micro-batches of 2 or 1: the same gradient and logged loss as one forward of 4 (float noise
    aside), while each forward holds a fraction of the activations."""
    cfg = from_section(section(tmp_path / "run", batch_size=4))
    batch = next(iter(make_data_fn(cfg, manifest)(0)))
    grads, logged = {}, {}
    for micro in (4, 2, 1):
        model = build_model(cfg)
        step = make_step_fn(VideoVAELoss(cfg.loss))
        logged[micro] = step(_StubTrainer(model), {**batch, "micro_batch": micro}, 0)
        grads[micro] = {n: p.grad.clone() for n, p in model.named_parameters()}
    for micro in (2, 1):
        for name, ref in grads[4].items():
            assert torch.allclose(grads[micro][name], ref, rtol=1e-4, atol=1e-6), (micro, name)
        assert logged[micro]["train/loss"] == pytest.approx(logged[4]["train/loss"], rel=1e-5)
    assert any(float(g.abs().max()) > 1e-3 for g in grads[4].values())  # a real gradient, not zeros


def test_micro_batch_is_set_per_phase_and_must_divide_the_batch(manifest, tmp_path):
    phases = [{**PHASES[0], "batch_size": 4, "micro_batch": 2}, {**PHASES[1], "batch_size": 4, "micro_batch": 1}]
    cfg = from_section(curriculum_section(tmp_path / "run", curriculum={"phases": phases}))
    assert [cfg.micro_batch_of(p) for p in cfg.curriculum.phases] == [2, 1]
    data = make_data_fn(cfg, manifest)
    first = next(iter(data(0, cfg.curriculum.phases[0])))
    assert first["video"].shape[0] == 4 and first["micro_batch"] == 2  # the loader still reads whole batches
    trainer = make_trainer(cfg, manifest)
    trainer.run(progress=False)
    assert trainer.state.step == 6 and math.isfinite(trainer.state.metrics["train/loss"])
    with pytest.raises(ValueError, match="micro_batch: 3 does not divide batch_size=4"):
        from_section(curriculum_section(tmp_path / "bad", curriculum={"phases": [{**phases[0], "micro_batch": 3}]}))
    with pytest.raises(ConfigError, match="micro_batch"):
        from_section(section(tmp_path / "bad2", batch_size=4, micro_batch=3))


def test_checkpoint_levels_follow_the_phase_and_fall_back_to_the_model(manifest, tmp_path):
    phases = [{**PHASES[0], "checkpoint_levels": 1}, PHASES[1]]
    section_ = curriculum_section(tmp_path / "run", curriculum={"phases": phases})
    section_["model"] = {**section_.get("model", {}), "gradient_checkpointing": True, "checkpoint_levels": 0}
    cfg = from_section(section_)
    data = make_data_fn(cfg, manifest)
    first = next(iter(data(0, cfg.curriculum.phases[0])))
    second = next(iter(data(0, cfg.curriculum.phases[1])))
    assert first["checkpoint_levels"] == 1 and second["checkpoint_levels"] is None
    model = build_model(cfg)
    step = make_step_fn(VideoVAELoss(cfg.loss))
    step(_StubTrainer(model), first, 0)
    assert model.checkpoint_levels == 1
    step(_StubTrainer(model), second, 1)
    assert model.checkpoint_levels == 0  # the model's own setting again
    bad = curriculum_section(tmp_path / "bad", curriculum={"phases": [{**PHASES[0], "checkpoint_levels": 5}]})
    with pytest.raises(ConfigError, match=r"curriculum.phases.0.checkpoint_levels: 5 is more than the model's"):
        from_section(bad)


def test_a_few_steps_lower_the_validation_loss(manifest, tmp_path):
    cfg = from_section(section(tmp_path / "run", steps=40, val_every=40, checkpoint_every=40, log_every=5,
                               resolution=8, clip_frames=2, batch_size=4, lr=0.01))
    trainer = make_trainer(cfg, manifest)
    validate = make_validate_fn(cfg, manifest, VideoVAELoss(cfg.loss))
    with torch.no_grad():
        before = validate(trainer, 0)
    trainer.run(progress=False)
    after = trainer.state.metrics
    # held-out clips of a random texture: 40 steps take L1 from ~0.45 to ~0.38 and PSNR up ~1.5 dB
    assert after["val/recon"] < 0.9 * before["recon"], (before, after)
    assert after["val/psnr"] > before["psnr"] + 1.0, (before, after)
    assert {"train/loss", "train/recon", "train/kl", "train/kl_weight"} <= set(after)


def test_curriculum_section_defaults_and_clashes(tmp_path):
    cfg = from_section(curriculum_section(tmp_path))
    assert from_section(to_section(cfg)) == cfg  # the flat mapping round-trips
    plain = from_section(section(tmp_path))
    assert from_section(to_section(plain)) == plain
    assert cfg.train.steps == 6 and cfg.points() == [(8, 2), (16, 4)]  # steps = sum of the phases
    assert from_section(curriculum_section(tmp_path, steps=4)).train.steps == 4
    with pytest.raises(ConfigError, match=r"vae\.batch_size: set by each curriculum phase \(batch_size\)"):
        from_section(curriculum_section(tmp_path, batch_size=4), "vae")
    with pytest.raises(ConfigError, match=r"vae\.resolution: set by each curriculum phase \(resolution\)"):
        from_section(curriculum_section(tmp_path, resolution=32), "vae")
    gc = from_section(curriculum_section(tmp_path, curriculum={"phases": PHASES, "gradient_checkpointing": True}))
    assert gc.model_config().gradient_checkpointing and not gc.model.gradient_checkpointing


@pytest.mark.parametrize("over, match", [
    ({"resolutoin": 16}, r"p: train_video_vae\.resolutoin: unknown key; did you mean 'resolution'\?"),
    ({"resolution": 17},
     r"resolution: 17 is not divisible by model.spatial_compression=2; use a multiple of 2 \(e.g. 16\)"),
    ({"curriculum": {"phases": [{**PHASES[0], "resolution": 9}]}, "batch_size": None},
     r"curriculum phase 'A' resolution: 9 is not divisible"),
    ({"early_stopping": {"patience": -1}},
     r"early_stopping.patience: must be >= 0 or null \(0 and null turn it off\), got -1"),
    ({"early_stopping": {"patience": 2, "monitor": ""}}, r"early_stopping.monitor: must name a logged metric"),
    ({"loss": {"perceptual": -1.0}}, r"loss\.perceptual: must be >= 0, got -1.0"),
    ({"val_every": 0}, r"val_every: must be >= 1 or null \(null: log_every\), got 0"),
])
def test_config_errors_name_the_key_and_the_fix(tmp_path, over, match):
    sec = section(tmp_path, **over)
    if "curriculum" in over:
        for key in ("batch_size", "resolution", "clip_frames", "warmup_steps"):
            sec.pop(key, None)
    with pytest.raises(ConfigError, match=match):
        from_section(sec, "p: train_video_vae")


def test_early_stopping_config_builds_or_turns_off(tmp_path):
    assert from_section(section(tmp_path)).early_stopping.build() is None  # patience 0: off
    assert from_section(section(tmp_path, early_stopping={"patience": None})).early_stopping.build() is None
    stop = from_section(section(tmp_path, early_stopping={"patience": 3, "min_delta": 0.01})).early_stopping.build()
    assert (stop.monitor, stop.patience, stop.min_delta) == ("val/loss", 3, 0.01)


def test_missing_perceptual_weights_fail_before_training(manifest, tmp_path):
    cfg = from_section(section(tmp_path / "run", loss={"perceptual": 0.1,
                                                       "perceptual_weights": str(tmp_path / "nope.pth")}))
    with pytest.raises(PerceptualWeightsMissing, match="nope.pth"):
        make_trainer(cfg, manifest)
    assert not (tmp_path / "run").exists()


def test_validation_decodes_with_the_loaders_backend(manifest, tmp_path, monkeypatch):
    # a GPU machine had PyAV but no decord: the loader (stable.json: pyav) trained, then validation died
    # importing decord at the first val step
    def no_decord(path, indices):
        raise ModuleNotFoundError("No module named 'decord'")

    monkeypatch.setattr("lib.video.decode._read_decord", no_decord)
    cfg = from_section(section(tmp_path / "run", resolution=8, clip_frames=2))
    trainer = make_trainer(cfg, manifest, stable={"backend": "pyav", "num_workers": 0})
    with torch.no_grad():
        metrics = trainer.validate_fn(trainer, 0)
    assert math.isfinite(metrics["psnr"]) and metrics["psnr"] > 0
    with pytest.raises(ModuleNotFoundError, match="decord"):  # without the stable backend it still asks decord
        make_validate_fn(cfg, manifest, VideoVAELoss(cfg.loss))(trainer, 0)
