"""The SSv2 clip loader as the loader benchmark sees it: a factory and a decode-only function, by name.

The benchmark's child processes import these by ``"lib.bench.ssv2_loader:<name>"``; they build the
same loader trainers build (``lib.data.video_dataset.make_loader``), and decode the same clips of the
same videos for the decode-only ceiling.
"""
from __future__ import annotations

from functools import lru_cache
from typing import Any

FACTORY = "lib.bench.ssv2_loader:ssv2_loader_factory"
DECODE = "lib.bench.ssv2_loader:ssv2_decode_clip"


def ssv2_loader_factory(*, manifest: str, backend: str, batch_size: int, num_workers: int,
                        prefetch_factor: int | None, clip_frames: int, clip_stride: int, seed: int = 0,
                        split: str = "train") -> Any:
    """Return ``make_loader(VideoLoaderConfig(...), infinite=True)`` for ``split`` of ``manifest``:
    endless batches ``{"video": uint8 [B, C, T, H, W], ...}``. ``prefetch_factor`` None (no workers)
    keeps the config's default, which the DataLoader then ignores."""
    from lib.data.clips import ClipSpec
    from lib.data.video_dataset import VideoLoaderConfig, make_loader

    extra = {} if prefetch_factor is None else {"prefetch_factor": prefetch_factor}
    cfg = VideoLoaderConfig(manifest=manifest, split=split, backend=backend,
                            clip=ClipSpec(frames=clip_frames, stride=clip_stride), batch_size=batch_size,
                            num_workers=num_workers, seed=seed, **extra)
    return make_loader(cfg, infinite=True)


@lru_cache(maxsize=4)
def _dataset(manifest: str, split: str, clip_frames: int, clip_stride: int, seed: int, backend: str):
    from lib.data.clips import ClipSpec
    from lib.data.video_dataset import SSv2ClipDataset

    return SSv2ClipDataset(manifest, split, clip=ClipSpec(frames=clip_frames, stride=clip_stride),
                           backend=backend, seed=seed)


def ssv2_decode_clip(index: int, backend: str, *, manifest: str, clip_frames: int, clip_stride: int,
                     seed: int = 0, split: str = "train") -> int:
    """Decode the epoch-0 clip of item ``index % len`` of ``split`` with ``read_frames`` (no tensor, no
    DataLoader): the loader's clip spec and videos. Return the number of frames decoded."""
    from lib.video.decode import read_frames

    ds = _dataset(manifest, split, clip_frames, clip_stride, seed, backend)
    i = index % len(ds)
    return len(read_frames(ds.paths[i], ds.clip_frames(i, 0), backend))


def describe_split(manifest: str, split: str = "train") -> dict[str, Any]:
    """Return a short description of ``split`` of ``manifest`` for the report: videos, frame sizes, frames."""
    import pandas as pd

    df = pd.read_parquet(manifest)
    df = df[df["split"] == split]
    sizes = sorted({f"{int(w)}x{int(h)}" for h, w in zip(df["height"], df["width"], strict=False)})
    return {"manifest": manifest, "split": split, "videos": len(df), "frame sizes (WxH)": ", ".join(sizes),
            "frames per video (min / median / max)":
                f"{int(df['frames'].min())} / {int(df['frames'].median())} / {int(df['frames'].max())}"
                if len(df) else "–"}
