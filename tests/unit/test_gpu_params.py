"""benchmarks/gpu_params.py: the apt and vae presets, dotted overrides, the written file."""
from __future__ import annotations

import sys
from pathlib import Path

import pytest
import yaml

from benchmarks import gpu_params
from lib.models.video_vae import GPU_PRESET as GPU_MODEL
from lib.train.curriculum import GPU_PRESET as GPU_CURRICULUM
from lib.train.video_vae import from_section

PARAMS = Path(__file__).resolve().parents[2] / "params.yaml"


def _params() -> dict:
    return yaml.safe_load(PARAMS.read_text())


def test_apt_preset_sets_the_gpu_generator_crops_and_precision():
    params = gpu_params.preset("apt", _params())
    apt = params["train_apt"]
    assert apt["model"] == {"scale": 4, "channels": 128, "blocks": 16, "text_dim": 0}
    assert {k: apt[k] for k in ("disc_channels", "crop", "clip_frames", "clip_stride", "batch_size",
                                "mixed_precision", "channels_last")} == {
        "disc_channels": 64, "crop": 224, "clip_frames": 16, "clip_stride": 1, "batch_size": 2,
        "mixed_precision": "bf16", "channels_last": True}
    assert apt["steps"] == _params()["train_apt"]["steps"]  # the rest of the section is kept
    gpu_params.override(params, "train_apt.model.channels", 8)
    assert gpu_params.preset("apt", _params())["train_apt"]["model"]["channels"] == 128  # no shared state


def test_vae_preset_round_trips_through_the_stage_loader():
    params = gpu_params.preset("vae", _params())
    cfg = from_section(params["train_curriculum"], "train_curriculum")
    assert cfg.model == GPU_MODEL and cfg.curriculum == GPU_CURRICULUM
    assert [(p.resolution, p.frames) for p in cfg.curriculum.phases] == [(256, 8), (512, 16), (1024, 49)]
    assert cfg.train.mixed_precision == "bf16" and cfg.train.steps == GPU_CURRICULUM.max_steps
    assert "transition" not in params["train_curriculum"]["curriculum"]["phases"][0]  # defaults left out
    assert params["train_video_vae"] is None and params["train_audio_vae"] is None
    assert params["eval_vae"]["chunk_frames"] % GPU_MODEL.temporal_compression == 0
    assert params["ssv2"]["root"] == params["synth_ssv2"]["out"] != _params()["synth_ssv2"]["out"]
    assert params["ingest_ssv2"]["expected_height"] == params["synth_ssv2"]["height"] == 1024
    assert params["validate_ssv2"]["exposure_trainers"] == []


def test_steps_follow_overridden_phase_steps():
    params = gpu_params.preset("vae", _params())
    for i, steps in enumerate((3, 4, 5)):
        gpu_params.override(params, f"train_curriculum.curriculum.phases.{i}.steps", steps)
        gpu_params.override(params, f"train_curriculum.curriculum.phases.{i}.warmup_steps", 1)
    assert from_section(params["train_curriculum"], "train_curriculum").train.steps == 12


def test_overrides_index_lists_set_null_and_create_keys():
    params = gpu_params.preset("vae", _params())
    gpu_params.override(params, "train_curriculum.curriculum.phases.0.steps", 200)
    gpu_params.override(params, "train_curriculum.curriculum.phases.-1.micro_batch", None)
    gpu_params.override(params, "train_curriculum.model.level_channels.0", 32)
    gpu_params.override(params, "train_apt.degrade.realesrgan.codecs", ["libx264"])
    gpu_params.override(params, "eval_vae", None)
    phases = params["train_curriculum"]["curriculum"]["phases"]
    assert phases[0]["steps"] == 200 and phases[2]["micro_batch"] is None
    assert params["train_curriculum"]["model"]["level_channels"] == [32, 128, 128]
    assert params["train_apt"]["degrade"]["realesrgan"] == {"codecs": ["libx264"]}
    assert params["eval_vae"] is None


@pytest.mark.parametrize("dotted, message", [
    ("train_curiculum.lr", "unknown section 'train_curiculum'"),
    ("train_curriculum.curriculum.phases.3.steps", "not an index of a list of 3"),
    ("train_curriculum.curriculum.phases.first.steps", "not an index"),
    ("train_curriculum.lr.x", "not a mapping or list"),
])
def test_bad_overrides_name_what_is_wrong(dotted, message):
    with pytest.raises(ValueError, match=message):
        gpu_params.override(gpu_params.preset("vae", _params()), dotted, 1)


def test_unknown_preset_is_an_error():
    with pytest.raises(ValueError, match="unknown preset 'gan'"):
        gpu_params.preset("gan", _params())


def test_main_writes_the_file(tmp_path, monkeypatch, capsys):
    out = tmp_path / "sub" / "gpu.yaml"
    monkeypatch.setattr(sys, "argv", ["gpu_params.py", "vae", str(out), "--params", str(PARAMS),
                                      "train_curriculum.tracker=none", "eval_vae.tile=null", "eval_vae.clips=[1, 2]"])
    gpu_params.main()
    written = yaml.safe_load(out.read_text())
    assert written["train_curriculum"]["tracker"] == "none"
    assert written["eval_vae"]["tile"] is None and written["eval_vae"]["clips"] == [1, 2]
    assert list(written) == list(_params())  # section order kept (sort_keys=False)
    monkeypatch.setattr(sys, "argv", ["gpu_params.py", "vae", str(out), "--params", str(PARAMS), "nosuch.key=1"])
    with pytest.raises(SystemExit):
        gpu_params.main()
    assert "unknown section 'nosuch'" in capsys.readouterr().err
