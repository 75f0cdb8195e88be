"""Probe a video by decoding it fully: the only honest way to know it is whole."""
from __future__ import annotations

from collections.abc import Callable
from dataclasses import asdict, dataclass
from fractions import Fraction
from pathlib import Path

import av
import numpy as np

from lib import archive
from lib.quarantine import QuarantineError


@dataclass(frozen=True)
class ProbeResult:
    """What decoding a whole video found."""

    frames: int
    fps: float
    width: int
    height: int
    duration_s: float  # frames / fps, from what actually decoded
    declared_duration_s: float  # what the container header claims (0 when absent)
    codec: str
    bytes: int

    def to_dict(self) -> dict:
        """Return the fields as a plain dict (manifest columns)."""
        return asdict(self)


# A decoded stream this much shorter than its header claims counts as truncated; the slack
# absorbs the last frame's duration and container rounding.
TRUNCATION_TOLERANCE_S = 0.25


def probe_video(path: str | Path, on_frame: Callable[[np.ndarray, float, float], None] | None = None) -> ProbeResult:
    """Decode every frame of ``path`` and return a :class:`ProbeResult`.

    ``on_frame(rgb [H, W, 3] uint8, time_s, stream_fps)`` is called for each decoded frame, so a transcode can
    share the single decode pass. Raises :class:`QuarantineError` with reason ``zero_bytes``,
    ``not_video``, ``undecodable`` or ``truncated``.
    """
    path = Path(path)
    size = archive.size(path)  # a plain file, or a member of a shard archive (lib.archive)
    if size == 0:
        raise QuarantineError("zero_bytes", str(path.name))
    try:
        container = av.open(archive.source(path))
    except (av.FFmpegError, UnicodeDecodeError, ValueError) as err:
        raise QuarantineError("not_video", f"cannot open container: {err}") from err
    with container:
        if not container.streams.video:
            raise QuarantineError("not_video", f"format {container.format.name} has no video stream")
        stream = container.streams.video[0]
        codec = stream.codec_context.name
        rate = stream.average_rate or stream.guessed_rate or Fraction(0)
        fps = float(rate)
        declared = float(container.duration) / av.time_base if container.duration else 0.0
        frames = 0
        width = height = 0
        try:
            for frame in container.decode(stream):
                if frames == 0:
                    width, height = frame.width, frame.height
                if on_frame is not None:
                    t = float(frame.time) if frame.time is not None else (frames / fps if fps else 0.0)
                    on_frame(frame.to_ndarray(format="rgb24"), t, fps)
                frames += 1
        except av.FFmpegError as err:
            if frames == 0:
                raise QuarantineError("undecodable", f"{codec}: {err}") from err
            raise QuarantineError("truncated", f"decode error after {frames} frames: {err}") from err
    if frames == 0:
        raise QuarantineError("undecodable", f"{codec}: no frame decoded")
    if fps <= 0:
        raise QuarantineError("not_video", "stream declares no frame rate")
    duration = frames / fps
    if declared and duration + TRUNCATION_TOLERANCE_S < declared:
        raise QuarantineError(
            "truncated", f"decoded {frames} frames = {duration:.2f}s but the container declares {declared:.2f}s"
        )
    return ProbeResult(frames=frames, fps=fps, width=width, height=height, duration_s=duration,
                       declared_duration_s=declared, codec=codec, bytes=size)
