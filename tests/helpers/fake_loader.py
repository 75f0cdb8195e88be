"""A fake video loader for tests of the loader benchmark: random uint8 clips held in memory, no decoding.

Importable by name (``tests.helpers.fake_loader:fake_loader_factory``) from the benchmark's child
processes, like the real SSv2 factory.
"""
from __future__ import annotations

import time

import numpy as np
import torch
from torch.utils.data import DataLoader, Dataset

FACTORY = "tests.helpers.fake_loader:fake_loader_factory"
DECODE = "tests.helpers.fake_loader:fake_decode_clip"


class FakeClipDataset(Dataset):
    """``clips`` random uint8 clips ``[C=3, T=frames, H=size, W=size]``; each item sleeps ``delay_s``
    (a stand-in for decoding)."""

    def __init__(self, clips: int = 16, frames: int = 4, size: int = 16, delay_s: float = 0.0, seed: int = 0):
        rng = np.random.default_rng(seed)
        self.data = torch.from_numpy(rng.integers(0, 256, (clips, 3, frames, size, size), dtype=np.uint8))
        self.delay_s = delay_s

    def __len__(self) -> int:
        return len(self.data)

    def __getitem__(self, i: int) -> dict:
        if self.delay_s:
            time.sleep(self.delay_s)
        return {"video": self.data[i], "index": i}


def fake_loader_factory(*, batch_size: int, num_workers: int, prefetch_factor: int | None, backend: str,
                        clips: int = 16, frames: int = 4, size: int = 16, delay_s: float = 0.0,
                        seed: int = 0) -> DataLoader:
    """Return a DataLoader over :class:`FakeClipDataset` with the benchmark's settings (``backend`` unused)."""
    return DataLoader(FakeClipDataset(clips, frames, size, delay_s, seed), batch_size=batch_size,
                      num_workers=num_workers, prefetch_factor=prefetch_factor, shuffle=False)


def fake_decode_clip(index: int, backend: str, frames: int = 4, size: int = 16, delay_s: float = 0.0) -> int:
    """Make one random clip as a stand-in for decoding clip ``index``; return its frame count."""
    if delay_s:
        time.sleep(delay_s)
    np.random.default_rng(index).integers(0, 256, (frames, size, size, 3), dtype=np.uint8)
    return frames
