"""Training the CAD VLM on tiny rendered conversations: config split, dataset, epoch schedule, learning,
exact resume after a kill, and the convergence table recomputed from the per-batch losses DVCLive logged."""
from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np
import pytest
import torch
from safetensors.torch import load_file

from lib.archive import open_binary
from lib.cad.tokenizer import CADTokenizer
from lib.config import ConfigError
from lib.train.cad_vlm import (
    DEFAULT_LORA,
    AugmentConfig,
    EpochSchedule,
    ImageCodeSet,
    augment_generator,
    augment_images,
    build_model,
    convergence_markdown,
    convergence_rows,
    from_section,
    history_path,
    load_data,
    make_data_fn,
    make_trainer,
    read_conversations,
    read_history,
    resolve_steps,
    schedule_for,
    to_section,
    validation_loss,
    zoom_shift,
)
from lib.train.checkpoint import latest_checkpoint
from tests.helpers.cad_vlm_data import write_cad_conversations
from tests.helpers.training import run_killed_at

TOK = CADTokenizer()


@pytest.fixture(scope="module")
def tiny(tmp_path_factory):
    """12 synthetic models rendered at 64 px: 27 train / 9 validation conversations."""
    return write_cad_conversations(tmp_path_factory.mktemp("cad_vlm_data"), count=12)


def section(out_dir, **overrides) -> dict:
    s = {"batch_size": 8, "lr": 0.003, "betas": [0.9, 0.99], "warmup_steps": 2, "epochs": 3, "log_every": 1,
         "checkpoint_every": 4, "tracker": "none", "out_dir": str(out_dir), "image_size": 32, "max_len": 320,
         "model": {"channels": 8, "embed_dim": 32, "hidden": 64, "dropout": 0.0}, "early_stopping": None}
    s.update(overrides)
    return s


def test_section_split_and_errors():
    cfg = from_section(section("run", lr=0.001, model={"channels": 8, "hidden": 32}, early_stopping={"patience": 2}))
    assert cfg.train.lr == 0.001 and cfg.train.batch_size == 8
    assert (cfg.model.channels, cfg.model.hidden, cfg.model.image_size, cfg.model.max_len) == (8, 32, 32, 320)
    assert cfg.early_stopping.patience == 2 and cfg.base_model is None and not cfg.trust_remote_code
    assert resolve_steps(cfg, 5).steps == 15  # epochs x steps per epoch
    assert to_section(cfg)["lr"] == 0.001 and to_section(cfg)["epochs"] == 3
    assert from_section(section("run", epochs=None, steps=7)).train.steps == 7

    with pytest.raises(ConfigError, match=r"train_cad_vlm\.batch_sise: unknown key; did you mean 'batch_size'"):
        from_section({"batch_sise": 3})
    with pytest.raises(ConfigError, match=r"steps: set together with epochs=3.*remove steps or set epochs: null"):
        from_section(section("run", steps=10))
    with pytest.raises(ConfigError, match=r"model\.image_size: 64 differs from train_cad_vlm\.image_size: 32"):
        from_section(section("run", model={"image_size": 64}))
    with pytest.raises(ConfigError, match="needs base_model"):
        from_section(section("run", training_mode="lora"))
    lora = from_section(section("run", training_mode="lora", base_model="some/folder"))
    assert lora.train.lora_targets == [DEFAULT_LORA]  # replaced by default_lora_targets once the model is loaded
    with pytest.raises(ConfigError, match=r"warmup_steps: 20 > the run's 6 steps"):
        resolve_steps(from_section(section("run", warmup_steps=20, epochs=2)), 3)
    with pytest.raises(ConfigError, match="patience"):
        from_section(section("run", early_stopping={"patience": 0}))


def test_dataset_skips_and_counts_bad_answers_and_resizes_images(tiny, tmp_path):
    records = json.loads((tiny["conversations"] / "train.json").read_text())
    lengths = [len(TOK.encode(r["conversations"][1]["value"])) for r in records]
    limit = sorted(lengths)[len(lengths) // 2]
    broken = json.loads(json.dumps(records[0]))
    broken["conversations"][1]["value"] = broken["conversations"][1]["value"][:40]  # a truncated answer
    path = tmp_path / "train.json"
    path.write_text(json.dumps(records + [broken]))
    conv = read_conversations(path, TOK, limit)
    assert conv.counts.read == len(records) + 1 and conv.counts.unparseable == 1
    assert conv.counts.too_long == sum(n > limit for n in lengths) > 0
    assert conv.counts.kept == len(conv) == sum(n <= limit for n in lengths)
    assert all(ids == TOK.encode(a) and len(ids) <= limit for ids, a in zip(conv.ids, conv.answers, strict=False))

    cfg = from_section(section(tmp_path / "run", image_size=24))
    data = load_data(cfg, tiny["conversations"], tiny["images"])
    assert data.train_images.dtype == torch.uint8 and tuple(data.train_images.shape) == (len(data.train), 3, 24, 24)
    assert len(data.val) == 9 and data.val_images.shape[0] == 9
    # box-filtered: the 64 px render averaged over 8/3-pixel cells keeps the mean intensity
    from PIL import Image
    with open_binary(tiny["images"] / data.train.records[0]["image"]) as fh:
        full = np.asarray(Image.open(fh).convert("RGB"), dtype=float)
    assert abs(data.train_images[0].float().mean().item() - full.mean()) < 2.0
    batch = ImageCodeSet(data.train, data.train_images).batch([0, 3], TOK)
    assert batch["images"].shape == (2, 3, 24, 24) and -1.0 <= batch["images"].min() < batch["images"].max() <= 1.0
    assert batch["tokens"].shape == (2, max(len(data.train.ids[0]), len(data.train.ids[3])))
    assert batch["tokens"][0, :len(data.train.ids[0])].tolist() == data.train.ids[0]


def test_epoch_schedule_covers_every_sample_and_is_a_function_of_the_step():
    s = EpochSchedule(n=10, batch_size=4, grad_accum=1, seed=3)
    assert s.steps_per_epoch == 3  # 12 positions: two samples twice, every sample at least once
    for epoch in range(3):
        seen = [i for k in range(3) for i in s.indices(epoch * 3 + k)]
        assert len(seen) == 12 and set(seen) == set(range(10))
    assert s.indices(0) != s.indices(3)  # another epoch, another order
    assert s.indices(5) == EpochSchedule(n=10, batch_size=4, grad_accum=1, seed=3).indices(5)
    two = EpochSchedule(n=10, batch_size=2, grad_accum=2, world=2, seed=3)
    assert two.steps_per_epoch == 2 and two.micro_per_epoch == 4  # 8 samples per optimiser step
    ranks = [i for k in range(4) for r in range(2) for i in two.indices(k, rank=r)]
    assert set(ranks) == set(range(10)) and len(ranks) == 16

    data = make_data_fn(s, total_steps=7, make_batch=lambda idx, micro, rank: idx)
    full = list(data(0))
    assert len(full) == 7 and list(data(4)) == full[4:]


def _final(out_dir) -> dict[str, torch.Tensor]:
    return load_file(str(Path(out_dir) / "final" / "raw" / "cad_vlm.safetensors"))


def test_training_lowers_validation_loss(tiny, tmp_path):
    cfg = from_section(section(tmp_path / "run", epochs=8, lr=0.005, checkpoint_every=100))
    data = load_data(cfg, tiny["conversations"], tiny["images"])
    val = ImageCodeSet(data.val, data.val_images)
    with torch.no_grad():
        before = validation_loss(build_model(cfg, TOK).eval(), val, TOK, 16)["loss"]
    trainer = make_trainer(cfg, data)
    trainer.run(progress=False)
    model = build_model(cfg, TOK)
    model.load_state_dict(_final(tmp_path / "run"))
    with torch.no_grad():
        after = validation_loss(model.eval(), val, TOK, 16)["loss"]
    print(f"validation loss on 9 held-out conversations: untrained {before:.3f}, after 8 epochs {after:.3f}")
    assert math.isclose(before, math.log(TOK.vocab_size), rel_tol=0.1)  # untrained: about uniform
    assert after < before - 1.0
    vals = [r["loss"] for r in read_history(history_path(cfg)) if r["kind"] == "val"]
    assert len(vals) == 8 and vals[-1] == pytest.approx(after, rel=1e-5) and vals[-1] < vals[0]


def test_zoom_shift_moves_whole_pixels_and_brings_in_white():
    images = torch.rand(2, 3, 16, 16) * 2 - 1
    same = zoom_shift(images, torch.ones(2), torch.zeros(2, 2))
    assert torch.allclose(same, images, atol=1e-5)
    # shift (x, y) = (2/16, -1/16): output (y, x) shows input (y - 1, x + 2); what came from outside is white
    moved = zoom_shift(images, torch.ones(2), torch.tensor([[2 / 16, -1 / 16]] * 2))
    assert torch.allclose(moved[:, :, 1:, :14], images[:, :, :15, 2:], atol=1e-5)
    white = torch.ones(2, 3, 16, 16)
    assert torch.allclose(moved[:, :, :, 14:], white[:, :, :, 14:]) and torch.allclose(moved[:, :, 0], white[:, :, 0])
    # zoomed out by half: the image fills the middle 8x8, the border is white
    small = zoom_shift(images, torch.full((2,), 0.5), torch.zeros(2, 2))
    assert torch.allclose(small[:, :, :, :3], white[:, :, :, :3]) and torch.allclose(small[:, :, :3], white[:, :, :3])
    assert torch.allclose(small[:, :, 4:12, 4:12].mean(), images.mean(), atol=0.1)


def test_augment_is_seeded_by_the_micro_batch_and_off_by_default():
    assert not AugmentConfig().enabled and AugmentConfig(shift=0.1).enabled
    images = torch.rand(4, 3, 32, 32) * 2 - 1
    cfg = AugmentConfig(shift=0.1, scale=0.2)
    a = augment_images(images, cfg, augment_generator(0, 5))
    assert torch.equal(a, augment_images(images, cfg, augment_generator(0, 5)))  # a resumed run sees the same
    for other in (augment_generator(0, 6), augment_generator(1, 5), augment_generator(0, 5, rank=1)):
        assert not torch.allclose(a, augment_images(images, cfg, other))
    assert not torch.allclose(a[0], a[1])  # each image its own draw
    with pytest.raises(ConfigError, match="augment"):
        from_section(section("/tmp/x", base_model="some/folder", augment={"shift": 0.1}))
    with pytest.raises(ConfigError, match="shift"):
        from_section(section("/tmp/x", augment={"shift": 0.5}))


@pytest.mark.parametrize("augment", [None, {"shift": 0.1, "scale": 0.1}])
def test_exact_resume_after_a_kill(tiny, tmp_path, augment):
    extra = {"augment": augment} if augment else {}
    cfg_a = from_section(section(tmp_path / "a", **extra))
    data = load_data(cfg_a, tiny["conversations"], tiny["images"])
    make_trainer(cfg_a, data).run(progress=False)
    steps = 3 * schedule_for(cfg_a, len(data.train)).steps_per_epoch
    assert latest_checkpoint(tmp_path / "a").name == f"step-{steps:06d}"
    if augment:  # the trainer's batches are the augmented images, not the stored ones
        batch = next(make_trainer(cfg_a, data).data(0))
        plain = from_section(section(tmp_path / "p"))
        assert not torch.allclose(batch["images"], next(make_trainer(plain, data).data(0))["images"])

    cfg_b = from_section(section(tmp_path / "b", **extra))
    trainer_b = make_trainer(cfg_b, data)
    run_killed_at(trainer_b, 6)
    assert not (tmp_path / "b" / "final").exists()
    resumed = make_trainer(cfg_b, data)
    assert resumed.resumed_from.name == "step-000004" and resumed.step == 4
    assert max(r["step"] for r in read_history(history_path(cfg_b))) <= 4  # rows of steps 4, 5 dropped
    resumed.run(progress=False)
    a, b = _final(tmp_path / "a"), _final(tmp_path / "b")
    for name in a:
        assert torch.allclose(a[name], b[name], atol=1e-6), name
    ha, hb = read_history(history_path(cfg_a)), read_history(history_path(cfg_b))
    assert [(r["kind"], r["step"]) for r in ha] == [(r["kind"], r["step"]) for r in hb]
    assert np.allclose([r["loss"] for r in ha], [r["loss"] for r in hb], atol=1e-6)

    again = make_trainer(cfg_b, data)  # a finished run is not redone
    assert again.step == steps


def _tsv(path: Path) -> dict[int, float]:
    lines = path.read_text().splitlines()
    cols = lines[0].split("\t")
    return {int(row.split("\t")[cols.index("step")]): float(row.split("\t")[cols.index(path.stem)])
            for row in lines[1:]}


def test_convergence_table_matches_the_losses_dvclive_logged(tiny, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)  # dvclive looks for a DVC/Git repo from the working directory
    cfg = from_section(section(tmp_path / "run", tracker="dvclive", epochs=3))
    data = load_data(cfg, tiny["conversations"], tiny["images"])
    trainer = make_trainer(cfg, data)
    trainer.run(progress=False)
    spe = schedule_for(cfg, len(data.train)).steps_per_epoch
    live = tmp_path / "run" / "dvclive" / "plots" / "metrics"
    train = _tsv(live / "train" / "loss.tsv")  # log_every 1, grad_accum 1: one row per batch, at step + 1
    val = _tsv(live / "val" / "loss.tsv")
    assert sorted(train) == list(range(1, 3 * spe + 1)) and sorted(val) == [spe, 2 * spe, 3 * spe]

    rows = convergence_rows(read_history(history_path(cfg)), spe)
    assert [r["epoch"] for r in rows] == [1, 2, 3] and all(r["complete"] and r["batches"] == spe for r in rows)
    for e, row in enumerate(rows):
        batch_losses = np.array([train[s] for s in range(e * spe + 1, (e + 1) * spe + 1)])
        assert row["train_loss"] == pytest.approx(batch_losses.mean(), rel=1e-5)
        assert row["batch_loss_var"] == pytest.approx(batch_losses.var(), rel=1e-4, abs=1e-9)
        assert row["val_loss"] == pytest.approx(val[(e + 1) * spe], rel=1e-5)
        assert row["gap"] == pytest.approx(val[(e + 1) * spe] - batch_losses.mean(), rel=1e-4)
        if e:
            prev = np.mean([train[s] for s in range((e - 1) * spe + 1, e * spe + 1)])
            assert row["train_improvement"] == pytest.approx(prev - batch_losses.mean(), rel=1e-4)
            assert row["val_improvement"] == pytest.approx(val[e * spe] - val[(e + 1) * spe], rel=1e-4)
        else:
            assert row["train_improvement"] is None and row["val_improvement"] is None
    text = convergence_markdown(rows, {"model": "tiny"})
    assert f"| 3 | {spe} | {rows[2]['train_loss']:.4f} | {rows[2]['val_loss']:.4f} | {rows[2]['gap']:+.4f} |" in text


def test_early_stopping_ends_the_run_on_a_validation_plateau(tiny, tmp_path):
    # lr so small the validation loss cannot improve by min_delta: stops after `patience` validations
    cfg = from_section(section(tmp_path / "run", lr=1e-7, epochs=10, early_stopping={"patience": 2, "min_delta": 0.5}))
    data = load_data(cfg, tiny["conversations"], tiny["images"])
    trainer = make_trainer(cfg, data)
    trainer.run(progress=False)
    spe = schedule_for(cfg, len(data.train)).steps_per_epoch
    assert trainer.stop_reason == "early_stopping" and trainer.state.step == 3 * spe  # best at 1, then 2 bad
    assert json.loads((tmp_path / "run" / "final" / "metrics.json").read_text())["stopped_early"] is True
