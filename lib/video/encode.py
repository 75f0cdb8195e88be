"""Encode frames to a video file in-process with PyAV, atomically."""
from __future__ import annotations

import contextlib
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path

import av
import numpy as np

from lib.io import AtomicFile

# Containers by extension: the temp file keeps the suffix, but we name the muxer explicitly anyway.
_FORMATS = {".webm": "webm", ".mp4": "mp4", ".mkv": "matroska"}


@dataclass(frozen=True)
class EncodeSettings:
    """How to encode: codec name as PyAV knows it, constant-quality crf, keyframe interval (frames)."""

    codec: str = "libvpx-vp9"
    crf: int = 32
    keyframe_interval: int = 12
    speed: int = 8  # libvpx cpu-used / x264 preset index: higher is faster, lower quality per bit
    threads: int = 1  # one thread keeps the bytes deterministic and leaves cores to other shards

    def codec_options(self) -> dict[str, str]:
        """Return the encoder options for PyAV's ``stream.options``."""
        opts = {"crf": str(self.crf), "g": str(self.keyframe_interval)}
        if "vpx" in self.codec:
            opts.update({"b": "0", "deadline": "realtime" if self.speed >= 6 else "good",
                         "cpu-used": str(self.speed), "row-mt": "0"})
        elif "264" in self.codec:
            presets = ["veryslow", "slower", "slow", "medium", "fast", "faster", "veryfast", "superfast", "ultrafast"]
            opts["preset"] = presets[max(0, min(self.speed, len(presets) - 1))]
        return opts


class VideoWriter:
    """Push-style encoder: ``write(frame)`` RGB uint8 ``[H, W, 3]`` frames, then ``commit()``.

    Frames go to a hidden temporary sibling; ``commit`` renames it onto ``path``, ``abort`` (or an
    exception inside ``with``) deletes it, so a partial video never appears under its final name.
    The container is chosen from the suffix (.webm, .mp4, .mkv) and written bit-exact, so the same
    frames and settings give the same bytes.
    """

    def __init__(self, path: str | Path, *, fps: int, settings: EncodeSettings):
        self.path = Path(path)
        fmt = _FORMATS.get(self.path.suffix.lower())
        if fmt is None:
            raise ValueError(f"{self.path}: unsupported video suffix {self.path.suffix!r}; "
                             f"use one of {sorted(_FORMATS)}")
        self.fps = fps
        self.settings = settings
        self.frames = 0
        self._file = AtomicFile(self.path)
        self._container = av.open(str(self._file.tmp), mode="w", format=fmt, options={"fflags": "+bitexact"})
        self._stream = None

    def write(self, frame: np.ndarray) -> None:
        """Encode one frame; the first frame fixes the video size."""
        if frame.dtype != np.uint8 or frame.ndim != 3 or frame.shape[2] != 3:
            raise ValueError(f"{self.path}: frames must be uint8 [H, W, 3], got {frame.dtype} {frame.shape}")
        if self._stream is None:
            stream = self._container.add_stream(self.settings.codec, rate=self.fps)
            stream.height, stream.width = frame.shape[:2]
            stream.pix_fmt = "yuv420p"
            stream.thread_count = self.settings.threads
            stream.options = self.settings.codec_options()
            stream.codec_context.flags |= av.codec.context.Flags.bitexact
            self._stream = stream
        vf = av.VideoFrame.from_ndarray(np.ascontiguousarray(frame), format="rgb24")
        vf.pts = self.frames
        for packet in self._stream.encode(vf):
            self._container.mux(packet)
        self.frames += 1

    def commit(self) -> int:
        """Flush the encoder, close the file and move it into place; return the frame count."""
        if self._stream is None:
            self.abort()
            raise ValueError(f"{self.path}: no frames to encode")
        try:
            for packet in self._stream.encode():
                self._container.mux(packet)
            self._container.close()
        except BaseException:
            self._file.discard()
            raise
        self._file.commit()
        return self.frames

    def abort(self) -> None:
        """Drop the partial file."""
        with contextlib.suppress(av.FFmpegError):
            self._container.close()
        self._file.discard()

    def __enter__(self) -> VideoWriter:
        return self

    def __exit__(self, exc_type, exc, tb) -> None:
        if exc_type is not None:
            self.abort()


def write_video(path: str | Path, frames: Iterable[np.ndarray], *, fps: int, settings: EncodeSettings) -> int:
    """Encode RGB uint8 frames ``[H, W, 3]`` to ``path`` atomically; return the number of frames written."""
    with VideoWriter(path, fps=fps, settings=settings) as writer:
        for frame in frames:
            writer.write(frame)
        return writer.commit()
