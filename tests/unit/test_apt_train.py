"""APT training on a tiny manifest: config split, finite losses, checkpoints/final weights, exact resume."""
import math

import pytest
import torch
from torch.nn.utils import parametrize

from lib.config import ConfigError
from lib.train.apt import build_models, from_section, loader_config, make_data_fn, make_trainer, to_section
from lib.train.checkpoint import latest_checkpoint
from tests.helpers.ssv2_data import write_clip_manifest
from tests.helpers.training import final_weights, run_killed_at

H, W = 64, 96  # decord needs widths it can copy row-aligned; the helpers use 64x96


@pytest.fixture(scope="module")
def manifest(tmp_path_factory):
    """6 train videos and 2 validation videos of 64x96, 20..27 frames (the ingest manifest's columns)."""
    return write_clip_manifest(tmp_path_factory.mktemp("apt_clips"), [20 + k for k in range(8)],
                               ["train"] * 6 + ["validation"] * 2, H, W, classes=[k % 2 for k in range(8)])


@pytest.fixture(autouse=True)
def _outside_any_repo(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)  # dvclive looks for a DVC/Git repo from the working directory


def tiny_section(out_dir, **kw):
    """A train_apt section small enough for a few CPU steps."""
    base = {"steps": 6, "batch_size": 2, "grad_accum": 1, "warmup_steps": 1, "checkpoint_every": 2,
            "log_every": 1, "tracker": "none", "out_dir": str(out_dir), "ema_half_life_images": 10.0,
            "model": {"scale": 4, "channels": 8, "blocks": 1}, "disc_channels": 8,
            "degrade": {"scale": 4}, "loss": {"r1_every": 2, "recon": 1.0},
            "crop": 32, "clip_frames": 4, "clip_stride": 1}
    return {**base, **kw}


def test_section_split_and_unknown_keys():
    cfg = from_section(tiny_section("x", lr=1e-3))
    assert cfg.train.steps == 6 and cfg.train.lr == 1e-3 and cfg.model.channels == 8 and cfg.crop == 32
    assert from_section(to_section(cfg)) == cfg
    with pytest.raises(ConfigError, match="did you mean 'steps'"):
        from_section({"stepz": 3})
    with pytest.raises(ConfigError, match="model.chanels"):
        from_section({"model": {"chanels": 3}})
    with pytest.raises(ConfigError, match="divisible"):
        from_section({"crop": 30})
    with pytest.raises(ConfigError, match="degrade.scale"):
        from_section({"model": {"scale": 2}})


def test_data_is_a_function_of_the_step(manifest):
    cfg = from_section(tiny_section("x", grad_accum=2))
    data = make_data_fn(cfg, loader_config(cfg, manifest))
    all_batches = list(data(0))
    assert len(all_batches) == 12
    b = all_batches[0]
    assert b["hq"].shape == (2, 3, 4, 32, 32) and b["lq"].shape == (2, 3, 4, 8, 8)
    assert b["hq"].min() >= -1 and b["hq"].max() <= 1
    resumed = list(data(3))  # optimiser step 3 = micro-batch 6
    assert len(resumed) == 6
    for x, y in zip(all_batches[6:], resumed, strict=False):
        assert torch.equal(x["hq"], y["hq"]) and torch.equal(x["lq"], y["lq"])


@pytest.mark.parametrize("kind", ["simple", "realesrgan_video"])
def test_pairs_made_in_loader_workers_equal_pairs_made_from_the_raw_batches(manifest, kind):
    from dataclasses import replace

    from lib.data.video_dataset import iterate_steps
    from lib.train.apt import micro_batch_generator, random_crop, to_signed
    from lib.video.degrade import degrade

    cfg = from_section(tiny_section("x", degrade={"scale": 4, "kind": kind}))
    loader = loader_config(cfg, manifest)
    serial = list(make_data_fn(cfg, loader)(2))
    workers = list(make_data_fn(cfg, replace(loader, num_workers=2, prefetch_factor=2))(2))
    # the pairs made here from the loader's uint8 batches, as the trainer's process once made them
    for (index, batch), one, other in zip(iterate_steps(loader, 6, 2), serial, workers, strict=True):
        generator = micro_batch_generator(cfg.train.seed, index)
        hq = random_crop(to_signed(batch["video"]), cfg.crop, generator)
        lq = degrade(hq, cfg.degrade, generator)
        for got in (one, other):
            assert set(got) == {"hq", "lq"} and torch.equal(got["hq"], hq) and torch.equal(got["lq"], lq)


def test_train_finite_checkpoints_and_exact_resume(tmp_path, manifest):
    cfg_a = from_section(tiny_section(tmp_path / "a"))
    trainer = make_trainer(cfg_a, loader_config(cfg_a, manifest))
    metrics = trainer.run()
    for key in ("d/loss", "g/loss", "g/adv", "g/fm", "D/accuracy", "G/fake_std"):
        assert math.isfinite(metrics[key]), key
    assert latest_checkpoint(tmp_path / "a").name == "step-000006"
    a = final_weights(tmp_path / "a")
    assert set(a) == {"raw/G", "raw/D", "ema/G"}

    # run b is killed during step 5 (checkpoint at step 4 exists) and resumed by a fresh trainer
    cfg_b = from_section(tiny_section(tmp_path / "b"))
    trainer_b = make_trainer(cfg_b, loader_config(cfg_b, manifest))
    run_killed_at(trainer_b, 5)
    assert not (tmp_path / "b" / "final").exists()
    resumed = make_trainer(cfg_b, loader_config(cfg_b, manifest))
    assert resumed.resumed_from.name == "step-000004" and resumed.step == 4
    resumed.run()
    b = final_weights(tmp_path / "b")
    for key in a:
        for name in a[key]:
            assert torch.allclose(a[key][name], b[key][name], atol=1e-6), f"{key}:{name}"


def test_text_vectors_follow_each_clip_and_config_checks(manifest):
    from lib.train.apt import stack_texts

    cfg = from_section(tiny_section("x", text_condition=True, model={"scale": 4, "channels": 8, "blocks": 1,
                                                                      "text_dim": 3}))
    texts = {str(k): torch.full((3,), float(k)) for k in range(6)}
    batches = list(make_data_fn(cfg, loader_config(cfg, manifest), texts)(0))
    seen = set()
    for b in batches:  # the text rows are the vectors of the batch's own clips (their id is the fill value)
        assert b["text"].shape == (2, 3)
        seen |= {int(v) for v in b["text"][:, 0]}
    assert seen <= set(range(6)) and len(seen) > 2
    with pytest.raises(KeyError, match="'9'"):
        stack_texts(texts, ["9"])
    with pytest.raises(ValueError, match="needs texts"):
        make_trainer(cfg, loader_config(cfg, manifest))
    with pytest.raises(ConfigError, match="model.text_dim"):
        from_section(tiny_section("x", text_condition=True))
    with pytest.raises(ConfigError, match="text_condition: true or model.text_dim: 0"):
        from_section(tiny_section("x", model={"scale": 4, "channels": 8, "blocks": 1, "text_dim": 3}))


@pytest.mark.parametrize("loss", [{"r1_every": 2, "recon": 1.0}, {"kind": "rpgan_r1r2", "r2": 1.0, "recon": 1.0}])
def test_the_k3_space_to_depth_discriminator_trains(tmp_path, manifest, loss):
    """disc_kernel 3 + disc_stem space_to_depth (the GPU-speed variant of the patch D) through both loss kinds."""
    cfg = from_section(tiny_section(tmp_path / "run", steps=4, disc_kernel=3, disc_stem="space_to_depth", loss=loss))
    trainer = make_trainer(cfg, loader_config(cfg, manifest))
    D = trainer.unwrap("D")
    assert (D.kernel, D.stem, D.convs[0].in_channels) == (3, "space_to_depth", 12)
    metrics = trainer.run()
    for key in ("d/loss", "g/loss", "g/adv", "g/fm"):
        assert math.isfinite(metrics[key]), key
    with pytest.raises(ConfigError, match="disc_stem"):
        from_section(tiny_section("x", disc_stem="patchify"))


def test_disc_spectral_norm_false_builds_a_plain_patch_d_that_trains(tmp_path, manifest):
    cfg = from_section(tiny_section(tmp_path / "run", steps=2, disc_spectral_norm=False,
                                    loss={"kind": "rpgan_r1r2", "r2": 1.0, "recon": 1.0}))
    trainer = make_trainer(cfg, loader_config(cfg, manifest))
    D = trainer.unwrap("D")
    layers = [*D.convs, D.to_logits]
    assert not any(parametrize.is_parametrized(layer) for layer in layers)
    assert all(parametrize.is_parametrized(layer) for layer in [*build_models(from_section(
        tiny_section("x")))["D"].convs])  # the default keeps spectral norm
    assert math.isfinite(trainer.run()["d/loss"])
