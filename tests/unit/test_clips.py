"""Clip index selection: exact indices for long, short and very short videos."""
import numpy as np
import pytest

from lib.data.clips import ClipSpec, clip_indices


def test_uniform_is_centred():
    # span = 7*2+1 = 15; slack = 48-15 = 33; start = 16
    assert clip_indices(48, ClipSpec(8, 2, "uniform")).tolist() == [16, 18, 20, 22, 24, 26, 28, 30]
    # slack = 0: the clip fills the video exactly
    assert clip_indices(15, ClipSpec(8, 2, "uniform")).tolist() == [0, 2, 4, 6, 8, 10, 12, 14]


def test_short_video_lowers_stride():
    # 14 < 15: stride drops to (14-1)//7 = 1; span 8, slack 6, centred start 3
    assert clip_indices(14, ClipSpec(8, 2, "uniform")).tolist() == [3, 4, 5, 6, 7, 8, 9, 10]
    # stride 4 wanted, 24 frames: (24-1)//7 = 3; span 22, slack 2, start 1
    assert clip_indices(24, ClipSpec(8, 4, "uniform")).tolist() == [1, 4, 7, 10, 13, 16, 19, 22]


def test_very_short_video_repeats_last_frame():
    assert clip_indices(5, ClipSpec(8, 2, "random"), np.random.default_rng(0)).tolist() == [0, 1, 2, 3, 4, 4, 4, 4]
    assert clip_indices(1, ClipSpec(3, 2, "uniform")).tolist() == [0, 0, 0]


def test_random_start_exact_and_in_range():
    spec = ClipSpec(8, 2, "random")
    expected_start = int(np.random.default_rng(7).integers(0, 48 - 15 + 1))
    got = clip_indices(48, spec, np.random.default_rng(7))
    assert got.tolist() == [expected_start + 2 * k for k in range(8)]
    starts = {int(clip_indices(20, spec, np.random.default_rng(s))[0]) for s in range(200)}
    assert starts == set(range(20 - 15 + 1))  # every fitting start is reachable, none beyond


def test_single_frame_clip():
    assert clip_indices(10, ClipSpec(1, 5, "uniform")).tolist() == [4]


def test_errors():
    with pytest.raises(ValueError, match="rng"):
        clip_indices(48, ClipSpec())
    with pytest.raises(ValueError, match="num_frames"):
        clip_indices(0, ClipSpec(start="uniform"))
    with pytest.raises(ValueError, match="start"):
        ClipSpec(start="middle")
    with pytest.raises(ValueError, match="stride"):
        ClipSpec(stride=0)
