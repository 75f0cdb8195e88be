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
}


@pytest.fixture
def clone(tmp_path) -> Path:
    """A fresh copy of the project as a user would clone it, as a git repo, with tiny params."""
    dest = copy_worktree(tmp_path / "clone")
    set_params(dest, TINY)
    run(["git", "-c", "user.email=t@t", "-c", "user.name=t", "commit", "-qam", "tiny params"], dest)
    return dest
