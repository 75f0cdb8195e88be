"""Decode chosen frames of a video to RGB uint8 arrays, with one of several backends.

``decord`` is the loaders' default (random access through its own index). ``pyav`` decodes with
FFmpeg through PyAV: it seeks to the keyframe before the first wanted frame and decodes forward.
``torchcodec`` is listed so configs can name it, but its wheels must match the installed torch and
CUDA build; beside the CPU torch here it fails to import, and ``read_frames`` says so plainly.

All backends return the same array for the same indices (tests check it on the training copies). A path may
run through a shard archive (``lib.archive``): the member's bytes are then handed to the backend in memory.

decord 0.6 cannot copy out frames of some widths (VP9 48 or 72 px wide: "DECORDArrayCopyFromTo: The size must
exactly match", its padded row size against ours); such a file is read with pyav instead, then and on every later
read in the process (decord is not tried again on it), with one warning per process, so a small
``ingest_ssv2.short_side`` does not stop training.
"""
from __future__ import annotations

import io
import logging
from collections.abc import Sequence
from pathlib import Path
from typing import Literal, get_args

import numpy as np

from lib.archive import source

log = logging.getLogger(__name__)

Backend = Literal["decord", "pyav", "torchcodec"]
BACKENDS: tuple[str, ...] = get_args(Backend)


def _check_backend(backend: str) -> None:
    if backend not in BACKENDS:
        raise ValueError(f"unknown video backend {backend!r}; use one of {BACKENDS}")


def _plan(path: str | Path, indices: Sequence[int] | np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Return (indices as int64, sorted unique indices, position of each index in the unique list)."""
    idx = np.asarray(indices, dtype=np.int64).reshape(-1)
    if idx.size == 0:
        raise ValueError(f"{path}: no frame indices asked for")
    if idx.min() < 0:
        raise IndexError(f"{path}: negative frame index {int(idx.min())}")
    uniq, inverse = np.unique(idx, return_inverse=True)
    return idx, uniq, inverse


def _out_of_range(path: str | Path, index: int, count: int) -> IndexError:
    return IndexError(f"{path}: frame index {index} out of range for a video of {count} frames")


def _torchcodec_error(exc: BaseException) -> RuntimeError:
    return RuntimeError(
        f"video backend 'torchcodec' is not usable here: importing torchcodec failed with "
        f"{type(exc).__name__}: {exc}. torchcodec needs a build matched to the installed torch and CUDA; "
        f"set the loader's backend to 'decord' or 'pyav' instead (both are installed and tested).")


def _import_torchcodec():
    try:
        from torchcodec.decoders import VideoDecoder
    except Exception as exc:  # ImportError, OSError (missing .so), RuntimeError (version mismatch)
        raise _torchcodec_error(exc) from exc
    return VideoDecoder


# ---------------------------------------------------------------------------------------------- decord
def _raw(path: str | Path) -> str | bytes:
    """What torchcodec opens: a path, or an archive member's bytes (it takes bytes, not every file object)."""
    src = source(path)
    return src.getvalue() if isinstance(src, io.BytesIO) else src


def _decord_reader(path: str | Path):
    from decord import VideoReader, cpu

    return VideoReader(source(path), ctx=cpu(0), num_threads=1)


_DECORD_SIZE_BUG = "DECORDArrayCopyFromTo"  # in decord's error when its padded frame size is not ours
_pyav_only: set[str] = set()  # files decord failed on in this process: read with pyav from then on


def _read_decord(path: str | Path, uniq: np.ndarray) -> np.ndarray:
    if str(path) in _pyav_only:
        return _read_pyav(path, uniq)
    vr = _decord_reader(path)
    n = len(vr)
    if uniq[-1] >= n:
        raise _out_of_range(path, int(uniq[-1]), n)
    try:
        return vr.get_batch(uniq.tolist()).asnumpy()
    except Exception as err:  # decord.DECORDError: only the frame-size bug falls back (module docstring)
        if _DECORD_SIZE_BUG not in str(err):
            raise
    if not _pyav_only:
        log.warning("%s: decord cannot copy out frames of this width; reading it and any like it with pyav "
                    "(set the loader's backend to pyav to skip the attempt)", path)
    _pyav_only.add(str(path))
    return _read_pyav(path, uniq)


# ---------------------------------------------------------------------------------------------- pyav
def _pts_to_index(pts: int, start: int, time_base, rate) -> int:
    return round(float((pts - start) * time_base * rate))


def _read_pyav(path: str | Path, uniq: np.ndarray) -> np.ndarray:
    import av

    wanted = {int(i): k for k, i in enumerate(uniq)}
    out: list[np.ndarray | None] = [None] * len(uniq)
    last = int(uniq[-1])
    with av.open(source(path)) as container:
        stream = container.streams.video[0]
        stream.thread_count = 1
        rate, tb = stream.average_rate, stream.time_base
        start = stream.start_time or 0
        timed = rate is not None and tb is not None and rate > 0
        seeked = False
        first = int(uniq[0])
        if timed and first > 0:
            # seek lands on the keyframe at or before the target; frame indices then come from pts
            target = start + int(first / (rate * tb))
            container.seek(target, backward=True, any_frame=False, stream=stream)
            seeked = True
        found = 0
        for n, frame in enumerate(container.decode(stream)):  # n: frames decoded since the (possible) seek
            if seeked:
                if frame.pts is None:
                    return _read_pyav_sequential(path, uniq)
                i = _pts_to_index(frame.pts, start, tb, rate)
                if n == 0 and i > first:  # the seek overshot: decode from the start instead
                    return _read_pyav_sequential(path, uniq)
            else:
                i = n
            k = wanted.get(i)
            if k is not None and out[k] is None:
                out[k] = frame.to_ndarray(format="rgb24")
                found += 1
            if i >= last:
                break
        if found < len(uniq):
            total = frame_count(path, "pyav")
            raise _out_of_range(path, last, total)
    return np.stack(out)


def _read_pyav_sequential(path: str | Path, uniq: np.ndarray) -> np.ndarray:
    import av

    wanted = {int(i): k for k, i in enumerate(uniq)}
    out: list[np.ndarray | None] = [None] * len(uniq)
    last, count = int(uniq[-1]), 0
    with av.open(source(path)) as container:
        stream = container.streams.video[0]
        stream.thread_count = 1
        for i, frame in enumerate(container.decode(stream)):
            count = i + 1
            k = wanted.get(i)
            if k is not None:
                out[k] = frame.to_ndarray(format="rgb24")
            if i >= last:
                break
    if count <= last:
        raise _out_of_range(path, last, count)
    return np.stack(out)


# ---------------------------------------------------------------------------------------------- public
def read_frames(path: str | Path, indices: Sequence[int] | np.ndarray, backend: str = "decord") -> np.ndarray:
    """Decode the frames at ``indices`` (any order, repeats allowed) of the video at ``path``.

    Returns a uint8 array ``[T, H, W, 3]`` (RGB) with ``T == len(indices)``, frame ``t`` being
    frame ``indices[t]`` of the video. Raises IndexError naming the path and the frame count when an
    index is out of range, RuntimeError when the backend cannot be imported (torchcodec).
    """
    _check_backend(backend)
    _, uniq, inverse = _plan(path, indices)
    if backend == "decord":
        frames = _read_decord(path, uniq)
    elif backend == "pyav":
        frames = _read_pyav(path, uniq)
    else:
        decoder_cls = _import_torchcodec()
        decoder = decoder_cls(_raw(path), dimension_order="NHWC", num_ffmpeg_threads=1)
        n = len(decoder)
        if uniq[-1] >= n:
            raise _out_of_range(path, int(uniq[-1]), n)
        frames = decoder.get_frames_at(uniq.tolist()).data.numpy()
    return np.ascontiguousarray(frames[inverse])


def frame_count(path: str | Path, backend: str = "decord") -> int:
    """Return the number of decodable frames of the video at ``path`` as ``backend`` counts them.

    pyav counts demuxed video packets (no decoding), which equals the frame count for the
    VP9/webm training copies (tests check it against decoding every frame).
    """
    _check_backend(backend)
    if backend == "decord":
        return len(_decord_reader(path))
    if backend == "pyav":
        import av

        with av.open(source(path)) as container:
            stream = container.streams.video[0]
            return sum(1 for p in container.demux(stream) if p.size > 0)
    return len(_import_torchcodec()(_raw(path)))
