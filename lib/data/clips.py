"""Which frames of a video make one training clip."""
from __future__ import annotations

from dataclasses import dataclass
from typing import Annotated, Literal

import numpy as np
from annotated_types import Ge

from lib.config import Checked


@dataclass(frozen=True)
class ClipSpec(Checked):
    """A clip: ``frames`` frames taken every ``stride`` frames, starting at a random or centred frame.

    ``start="random"`` draws the first frame uniformly among the starts that fit; ``"uniform"``
    centres the clip in the video (the same frames every time: for evaluation).
    """

    frames: Annotated[int, Ge(1)] = 8
    stride: Annotated[int, Ge(1)] = 2
    start: Literal["random", "uniform"] = "random"

    @property
    def span(self) -> int:
        """Return the number of source frames the clip covers at full stride: ``(frames-1)*stride+1``."""
        return (self.frames - 1) * self.stride + 1


def clip_indices(num_frames: int, spec: ClipSpec, rng: np.random.Generator | None = None) -> np.ndarray:
    """Return the ``spec.frames`` source frame indices (int64, non-decreasing) of one clip.

    A clip at full stride covers ``spec.span = (frames-1)*stride + 1`` source frames. When the
    video is shorter than that, the stride is lowered to the largest one that fits
    (``(num_frames-1) // (frames-1)``); when even stride 1 does not fit (``num_frames < frames``)
    the clip holds every frame and then repeats the last one. The start is drawn with ``rng``
    for ``start="random"`` (required then) and centred (rounded down) for ``"uniform"``.
    """
    if num_frames < 1:
        raise ValueError(f"clip_indices: a video needs at least one frame, got num_frames={num_frames}")
    n, f = int(num_frames), spec.frames
    if n < f:  # too short even at stride 1: all frames, then the last one repeated
        return np.minimum(np.arange(f, dtype=np.int64), n - 1)
    stride = spec.stride if f == 1 else min(spec.stride, (n - 1) // (f - 1))
    span = (f - 1) * stride + 1
    slack = n - span  # number of extra start positions
    if spec.start == "uniform":
        start = slack // 2
    else:
        if rng is None:
            raise ValueError("clip_indices: start='random' needs an rng (numpy Generator)")
        start = int(rng.integers(0, slack + 1))
    return start + stride * np.arange(f, dtype=np.int64)
