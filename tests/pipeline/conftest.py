"""Pipeline tests run in a temporary copy of the working tree with tiny params."""
from __future__ import annotations

from pathlib import Path

import pytest

from tests.helpers.workspace import copy_worktree, run, set_params

TINY = {
    "synth_ssv2": {"count": 6, "min_per_class": 2, "height": 64, "widths": [96], "min_seconds": 1.0,
                   "max_seconds": 1.5, "workers": 1,
                   "templates": ["Pushing something from left to right", "Moving something up",
                                 "Uncovering something"],
                   "split_fractions": {"train": 0.5, "validation": 0.5}},
    "ingest_ssv2": {"shards": 3, "expected_height": 64, "min_seconds": 0.5, "min_frames": 4},
    "validate_ssv2": {"min_videos_per_class": 1, "min_videos": 3},
    "synth_deepcad": {"count": 10},
    "render_deepcad": {"shards": 2, "image_size": 64},
    "validate_deepcad": {"min_models": 3},
    "bench_loader": {"batch_sizes": [2], "num_workers": [0, 1], "burst_batches": 2, "sustained_batches": 3,
                     "ceiling_clips": 4, "clip_frames": 4, "clip_stride": 1},
    "train_apt": {"steps": 4, "batch_size": 2, "warmup_steps": 1, "checkpoint_every": 2, "log_every": 1,
                  "model": {"scale": 4, "channels": 8, "blocks": 1, "text_dim": 0}, "disc_channels": 8,
                  "crop": 32, "clip_frames": 4, "clip_stride": 1, "val_clips": 2},
    "eval_apt": {"strip_clips": 2, "batch_size": 2},
    "synth_speech": {"workers": 1},
    "validate_audio": {"min_files": 3, "min_files_per_split": {"train": 2, "validation": 1},
                       "min_total_seconds": 3.0},
    "train_video_vae": {"steps": 4, "batch_size": 2, "warmup_steps": 1, "checkpoint_every": 2, "log_every": 2,
                        "resolution": 16, "clip_frames": 4, "clip_stride": 1, "val_clips": 2, "val_every": 2},
    "train_curriculum": {"checkpoint_every": 2, "log_every": 2, "clip_stride": 1, "val_clips": 2, "val_every": 2,
                         "curriculum": {"phases": [
                             {"name": "low", "resolution": 16, "frames": 4, "batch_size": 2, "lr": 0.001, "steps": 2},
                             {"name": "high", "resolution": 32, "frames": 4, "batch_size": 2, "lr": 0.001,
                              "steps": 2}]}},
    "train_audio_vae": {"steps": 4, "batch_size": 2, "warmup_steps": 1, "checkpoint_every": 2, "log_every": 2,
                        "val_every": 2, "val_clips": 2, "crop_frames": 16},
    "eval_vae": {"clips": 2, "strip_clips": 1, "batch_size": 2},
    "eval_audio_vae": {"clips": 2, "griffin_lim_iters": 4, "spectrogram_clips": 1},
    "train_cad_vlm": {"epochs": 1, "batch_size": 4, "warmup_steps": 0, "checkpoint_every": 2, "log_every": 1,
                      "image_size": 32, "model": {"channels": 8, "embed_dim": 16, "hidden": 32}},
    "eval_cad_vlm": {"max_images": 4, "grid_rows": 2, "render_size": 64, "chamfer_points": 256},
}


@pytest.fixture
def clone(tmp_path) -> Path:
    """A fresh copy of the project as a user would clone it, as a git repo, with tiny params."""
    dest = copy_worktree(tmp_path / "clone")
    set_params(dest, TINY)
    run(["git", "-c", "user.email=t@t", "-c", "user.name=t", "commit", "-qam", "tiny params"], dest)
    return dest
