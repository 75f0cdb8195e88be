"""Fixed-length training crops of an audio folder, step-indexed so a resumed run sees identical batches.

Batch ``step`` is a pure function of ``(seed, step, batch_size)``: sample ``k = step * batch_size + b``
is clip ``perm_e[k mod N]`` of epoch ``e = k // N`` (a seeded permutation per epoch, so every clip is
seen once per epoch) at a crop offset drawn from ``rng(seed, k)``. Nothing depends on how many batches
were drawn before, so restarting at ``start_step`` after a kill repeats exactly the batches a full run
would have made (with the same batch size).

Crops are ``crop_frames * hop_length`` samples and their log-mel keeps ``crop_frames`` frames (frame
``t`` centred on sample ``t * hop``): wave and mel stay aligned by an exact factor ``hop_length``. Clips
shorter than a crop are zero-padded at the end (silence, as at the end of real speech; repeating the
clip would put an artificial click and a second onset into the crop); ``length`` gives the real samples.

Waveforms are decoded once and cached in memory (the embedded set is ~100 clips of 1-3 s); corpora
larger than ``max_cached_seconds`` are refused with a clear error rather than exhausting memory.
"""
from __future__ import annotations

from collections.abc import Iterator
from functools import lru_cache

import numpy as np
import pandas as pd
import torch
from torch.utils.data import Dataset

from lib.audio.features import LogMel, MelConfig
from lib.audio.folder import load_audio
from lib.io import DataError

DEFAULT_MEL = MelConfig()


class AudioCropDataset(Dataset):
    """Clips of one split of a scanned audio folder (``files`` from :func:`lib.audio.folder.scan_audio_folder`,
    or any frame with ``id``, ``split`` and ``abs_path`` or ``path`` columns), decoded and cached."""

    def __init__(self, files: pd.DataFrame, split: str, *, mel: MelConfig = DEFAULT_MEL,
                 crop_frames: int | None = None, crop_seconds: float | None = None, seed: int = 0,
                 max_cached_seconds: float = 36_000.0):
        if (crop_frames is None) == (crop_seconds is None):
            raise ValueError("give exactly one of crop_frames and crop_seconds")
        if crop_frames is None:
            crop_frames = max(1, round(crop_seconds * mel.sample_rate / mel.hop_length))
        if crop_frames < 1:
            raise ValueError(f"crop_frames must be >= 1, got {crop_frames}")
        self.mel_cfg = mel
        self.sample_rate = mel.sample_rate
        self.crop_frames = int(crop_frames)
        self.crop_samples = self.crop_frames * mel.hop_length
        self.seed = seed
        rows = files[files["split"] == split]
        if rows.empty:
            raise DataError(f"no audio clips in split {split!r} (splits present: {sorted(set(files['split']))}); "
                            f"check audio.split_fractions or the split file")
        if "seconds" in rows and float(rows["seconds"].sum()) > max_cached_seconds:
            raise DataError(f"split {split!r} holds {rows['seconds'].sum():.0f} s of audio, over max_cached_seconds="
                            f"{max_cached_seconds:.0f}; raise it if memory allows (4 bytes per sample)")
        column = "abs_path" if "abs_path" in rows else "path"
        self.ids = [str(i) for i in rows["id"]]
        self.waves = [load_audio(p, self.sample_rate) for p in rows[column]]
        self._logmel = LogMel(mel)

    def __len__(self) -> int:
        return len(self.waves)

    def crop(self, clip: int, offset: int) -> tuple[np.ndarray, int]:
        """Return ``crop_samples`` of clip ``clip`` from ``offset`` (zero-padded at the end) and its real length."""
        wave = self.waves[clip][offset: offset + self.crop_samples]
        out = np.zeros(self.crop_samples, dtype=np.float32)
        out[: wave.size] = wave
        return out, int(wave.size)

    def max_offset(self, clip: int) -> int:
        """Return the largest crop start of ``clip`` (0 for clips no longer than a crop)."""
        return max(0, self.waves[clip].size - self.crop_samples)

    def sample(self, step: int, batch_size: int, seed: int | None = None) -> list[tuple[int, int]]:
        """Return the (clip, offset) pairs of batch ``step``: a pure function of (seed, step, batch_size)."""
        seed = self.seed if seed is None else seed
        pairs = []
        for k in range(step * batch_size, (step + 1) * batch_size):
            epoch, pos = divmod(k, len(self))
            clip = int(_permutation(seed, epoch, len(self))[pos])
            offset = int(np.random.default_rng([seed, k]).integers(0, self.max_offset(clip) + 1))
            pairs.append((clip, offset))
        return pairs

    def features(self, waves: torch.Tensor) -> torch.Tensor:
        """Return the log-mel ``[B, n_mels, crop_frames]`` of crops ``[B, crop_samples]``: the centred STFT's
        last frame (centred on the sample after the crop) is dropped."""
        with torch.no_grad():
            return self._logmel(waves)[..., : self.crop_frames]

    def batch(self, step: int, batch_size: int, seed: int | None = None) -> dict:
        """Return batch ``step``: ``wave`` [B, samples], ``mel`` [B, n_mels, frames] float32, ``length`` [B]
        real samples per crop, ``ids``, ``offsets`` and ``step``."""
        pairs = self.sample(step, batch_size, seed)
        crops = [self.crop(c, o) for c, o in pairs]
        waves = torch.from_numpy(np.stack([w for w, _ in crops]))
        return {"wave": waves, "mel": self.features(waves), "length": torch.tensor([n for _, n in crops]),
                "ids": [self.ids[c] for c, _ in pairs], "offsets": [o for _, o in pairs], "step": step}

    def __getitem__(self, index: int) -> dict:
        """Return the centre crop of clip ``index`` (a fixed crop, for evaluation): wave, mel, length, id."""
        wave, n = self.crop(index, self.max_offset(index) // 2)
        tensor = torch.from_numpy(wave)
        return {"wave": tensor, "mel": self.features(tensor[None])[0], "length": n, "id": self.ids[index]}


@lru_cache(maxsize=8)
def _permutation(seed: int, epoch: int, n: int) -> np.ndarray:
    """Return epoch ``epoch``'s clip order (cached: consecutive batches share an epoch)."""
    return np.random.default_rng([seed, epoch, n]).permutation(n)


def iterate_audio_steps(dataset: AudioCropDataset, *, batch_size: int, total_steps: int, start_step: int = 0,
                        seed: int | None = None) -> Iterator[dict]:
    """Yield batches ``start_step .. total_steps - 1`` of :meth:`AudioCropDataset.batch`, cycling over epochs."""
    if batch_size < 1:
        raise ValueError(f"batch_size must be >= 1, got {batch_size}")
    if not 0 <= start_step <= total_steps:
        raise ValueError(f"need 0 <= start_step <= total_steps, got start_step={start_step}, total_steps={total_steps}")
    for step in range(start_step, total_steps):
        yield dataset.batch(step, batch_size, seed)
