import hashlib
import os

import numpy as np
import pytest

from lib.quarantine import QuarantineError
from lib.video.encode import EncodeSettings, VideoWriter, write_video
from lib.video.probe import probe_video
from tests.helpers.ssv2_data import header_only, moving_frames


@pytest.fixture
def clip(tmp_path):
    path = tmp_path / "clip.webm"
    write_video(path, moving_frames(24, 64, 97), fps=12, settings=EncodeSettings())
    return path


def test_probe_reports_what_was_encoded(clip):
    seen = []
    p = probe_video(clip, on_frame=lambda rgb, t, fps: seen.append((rgb.shape, round(t, 2), fps)))
    assert (p.frames, p.width, p.height, p.fps, p.codec) == (24, 97, 64, 12.0, "vp9")  # odd width too
    assert p.duration_s == pytest.approx(2.0) and p.declared_duration_s == pytest.approx(2.0, abs=0.01)
    assert p.bytes == clip.stat().st_size
    assert len(seen) == 24 and seen[0] == ((64, 97, 3), 0.0, 12.0) and seen[-1][1] == pytest.approx(23 / 12, abs=0.01)


def test_decoded_frames_match_encoded_content(clip):
    frames = []
    probe_video(clip, on_frame=lambda rgb, t, fps: frames.append(rgb))
    src = moving_frames(24, 64, 97)
    err = np.mean([np.abs(a.astype(int) - b.astype(int)).mean() for a, b in zip(frames, src, strict=False)])
    other = np.abs(frames[0].astype(int) - src[12].astype(int)).mean()
    assert err < other / 2  # lossy, but each decoded frame is closest to its own source frame


def test_encoding_is_deterministic(tmp_path):
    digests = set()
    for name in ("a.webm", "b.webm"):
        write_video(tmp_path / name, moving_frames(12), fps=12, settings=EncodeSettings())
        digests.add(hashlib.sha256((tmp_path / name).read_bytes()).hexdigest())
    assert len(digests) == 1


def test_aborted_writer_leaves_nothing(tmp_path):
    with pytest.raises(KeyboardInterrupt), VideoWriter(tmp_path / "x.webm", fps=12, settings=EncodeSettings()) as w:
        w.write(moving_frames(1)[0])
        raise KeyboardInterrupt
    assert os.listdir(tmp_path) == []


def test_writer_rejects_bad_frames_and_suffix(tmp_path):
    with pytest.raises(ValueError, match="unsupported video suffix"):
        VideoWriter(tmp_path / "x.avi2", fps=12, settings=EncodeSettings())
    with pytest.raises(ValueError, match="must be uint8"):
        write_video(tmp_path / "x.webm", [np.zeros((8, 8), np.uint8)], fps=12, settings=EncodeSettings())
    assert os.listdir(tmp_path) == []


@pytest.mark.parametrize("cut, reason", [(0.0, "zero_bytes"), (0.5, "truncated"), ("header", "undecodable")])
def test_damaged_files_get_their_reason(clip, tmp_path, cut, reason):
    data = clip.read_bytes()
    bad = tmp_path / "bad.webm"
    bad.write_bytes(header_only(clip) if cut == "header" else data[: int(len(data) * cut)])
    with pytest.raises(QuarantineError) as err:
        probe_video(bad)
    assert err.value.reason == reason


def test_text_file_is_not_video(tmp_path):
    bad = tmp_path / "bad.webm"
    bad.write_text("hello " * 100)
    with pytest.raises(QuarantineError) as err:
        probe_video(bad)
    assert err.value.reason == "not_video"
