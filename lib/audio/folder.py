"""Any folder of wav/flac files as an audio dataset: scan, quarantine bad files, split, load.

``audio.root`` may be the embedded speech (:mod:`lib.audio.speech`) or a real corpus. Ids are paths
relative to the root without the extension (``speaker1/utt3``). Splits come from a split file in the
root (a CSV with ``id`` and ``split`` columns; the synth's ``metadata.csv`` is one) when it exists,
otherwise from a stable hash of the id, so adding files never moves existing ones between splits. A split
file with a ``path`` column also names the clips (the synth's ``wavs/12.wav`` is id ``12``, its video's id).
"""
from __future__ import annotations

import os
import zlib
from dataclasses import dataclass, field
from pathlib import Path
from typing import Annotated

import numpy as np
import pandas as pd
import soundfile as sf
import soxr
from annotated_types import Doc, Ge, MinLen

from lib.config import Checked
from lib.io import DataError, UnsafePathError, safe_join
from lib.quarantine import QuarantineEntry
from lib.shards import natural_key

SCAN_COLUMNS = ["id", "path", "split", "seconds", "sample_rate", "channels", "abs_path"]
HASH_BUCKETS = 10_000


@dataclass(frozen=True)
class AudioFolderConfig(Checked):
    """``audio`` params: where the audio lives, at what rate models see it, and what counts as a bad file."""

    root: str = "data/raw/speech_synth"
    sample_rate: Annotated[int, Ge(1000), Doc("Hz")] = 16000  # rate every clip is resampled to on load
    extensions: Annotated[list[str], MinLen(1), Doc("list one, e.g. [wav, flac]")] = field(
        default_factory=lambda: ["wav", "flac"])
    min_seconds: Annotated[float, Ge(0)] = 0.3
    max_seconds: float | None = 60.0  # > min_seconds; None: no limit
    silence_peak: float = 1e-4  # files whose peak |sample| is below this (-80 dBFS) are quarantined as silent
    split_file: str | None = "metadata.csv"  # CSV in root with id, split columns; used when it exists
    split_fractions: Annotated[dict[str, Annotated[float, Ge(0)]], MinLen(1)] = field(
        default_factory=lambda: {"train": 0.9, "validation": 0.1})

    def __post_init__(self) -> None:
        super().__post_init__()
        if self.max_seconds is not None and self.max_seconds <= self.min_seconds:
            raise ValueError(f"need 0 <= min_seconds < max_seconds, got {self.min_seconds}, {self.max_seconds}")
        if abs(sum(self.split_fractions.values()) - 1.0) > 1e-6:
            raise ValueError(f"split_fractions must add up to 1, got {sum(self.split_fractions.values())}")


@dataclass
class AudioScan:
    """The result of a scan: one row per good file (:data:`SCAN_COLUMNS`) and the files set aside."""

    files: pd.DataFrame
    quarantine: list[QuarantineEntry]


def hash_split(item_id: str, fractions: dict[str, float]) -> str:
    """Return the split of ``item_id``: crc32 bucket against the cumulative fractions (in the given order)."""
    u = (zlib.crc32(item_id.encode()) % HASH_BUCKETS) / HASH_BUCKETS
    edge = 0.0
    names = [s for s, f in fractions.items() if f > 0]
    for name in names:
        edge += fractions[name]
        if u < edge:
            return name
    return names[-1]


@dataclass(frozen=True)
class SplitFile:
    """A split file's entries: ``key -> (id, split)``, keyed by ``path`` (relative to the root, with the
    extension) when the file has a path column, else by ``id`` (relative path without the extension)."""

    entries: dict[str, tuple[str, str]]
    by_path: bool


def read_split_file(path: Path) -> SplitFile:
    """Read a CSV with ``id`` and ``split`` columns and optionally ``path`` (other columns are ignored).

    With a ``path`` column the file's ``id`` names the clip, so the synth's ``wavs/12.wav`` keeps the id
    ``12`` of the video it belongs to.
    """
    try:
        frame = pd.read_csv(path, dtype=str, keep_default_na=False)
    except (pd.errors.ParserError, pd.errors.EmptyDataError, UnicodeDecodeError) as err:
        raise DataError(f"{path}: not a readable CSV split file ({err}); fix it or set audio.split_file: null") from err
    missing = [c for c in ("id", "split") if c not in frame.columns]
    if missing:
        raise DataError(f"{path}: split file lacks column(s) {missing}; it needs id and split (and optionally "
                        f"path), or set audio.split_file: null to split by hash")
    for col in ("id", "path"):
        if col in frame.columns and frame[col].duplicated().any():
            dupes = sorted(set(frame[col][frame[col].duplicated()]))[:5]
            raise DataError(f"{path}: {col} values listed more than once: {dupes}; each clip needs one row")
    by_path = "path" in frame.columns
    keys = frame["path"] if by_path else frame["id"]
    return SplitFile(dict(zip(keys, zip(frame["id"], frame["split"], strict=False), strict=False)), by_path)


def _list_files(root: Path, extensions: list[str]) -> list[str]:
    """Return relative posix paths of files with one of ``extensions`` (case-insensitive), hidden ones skipped.

    ``os.walk`` does not follow directory symlinks, so a linked folder outside the root is never entered;
    file symlinks are listed and checked by :func:`safe_join`.
    """
    exts = {"." + e.lower().lstrip(".") for e in extensions}
    found = []
    for dirpath, dirnames, filenames in os.walk(root):
        dirnames[:] = sorted(d for d in dirnames if not d.startswith("."))
        for name in filenames:
            if not name.startswith(".") and os.path.splitext(name)[1].lower() in exts:
                found.append(Path(dirpath, name).relative_to(root).as_posix())
    return sorted(found)


def _peak(path: Path) -> float:
    """Return the largest |sample| of the file, reading it in blocks so long files stay cheap in memory."""
    peak = 0.0
    for block in sf.blocks(str(path), blocksize=1 << 16, dtype="float32", always_2d=True):
        if block.size:
            peak = max(peak, float(np.max(np.abs(block))))
    return peak


def _check_file(root: Path, rel: str, cfg: AudioFolderConfig) -> tuple[dict | None, tuple[str, str] | None]:
    """Probe one file: return (row, None) when it is usable, (None, (reason, detail)) when it is not."""
    try:
        path = safe_join(root, rel)
    except UnsafePathError as err:
        return None, ("path_escape", str(err))
    try:
        size = path.stat().st_size
    except OSError as err:  # e.g. a dangling symlink
        return None, ("not_audio", f"cannot stat: {err}")
    if size == 0:
        return None, ("zero_bytes", "")
    try:
        info = sf.info(str(path))
    except (sf.LibsndfileError, RuntimeError) as err:
        return None, ("not_audio", str(err))
    seconds = info.frames / info.samplerate if info.samplerate else 0.0
    if seconds < cfg.min_seconds:
        return None, ("too_short", f"{seconds:.3f} s < min_seconds {cfg.min_seconds}")
    if cfg.max_seconds is not None and seconds > cfg.max_seconds:
        return None, ("too_long", f"{seconds:.3f} s > max_seconds {cfg.max_seconds}")
    try:
        peak = _peak(path)
    except (sf.LibsndfileError, RuntimeError) as err:
        return None, ("unreadable_audio", str(err))
    if peak < cfg.silence_peak:
        return None, ("silent", f"peak {peak:.2e} < silence_peak {cfg.silence_peak}")
    return {"path": rel, "seconds": seconds, "sample_rate": int(info.samplerate), "channels": int(info.channels),
            "abs_path": str(path.resolve())}, None


def scan_audio_folder(cfg: AudioFolderConfig) -> AudioScan:
    """Scan ``cfg.root`` recursively; return good files (id order) and quarantined ones (reason, id order).

    Two files with the same id (``a.wav`` and ``a.flac``) are both quarantined as ``duplicate_id``; with a
    split file, files it does not list are ``not_in_split`` and entries without a file ``missing_audio``.
    """
    root = Path(cfg.root)
    if not root.is_dir():
        raise FileNotFoundError(f"{root}: audio root is not a folder; set audio.root to a folder of wav/flac "
                                f"files or run `dvc repro synth_speech` for the embedded speech")
    split_path = root / cfg.split_file if cfg.split_file else None
    split_file = read_split_file(split_path) if split_path is not None and split_path.is_file() else None

    quarantine: list[QuarantineEntry] = []
    by_id: dict[str, list[tuple[str, str]]] = {}  # id -> [(relative path, split)]
    matched: set[str] = set()
    for rel in _list_files(root, cfg.extensions):
        stem = rel.rsplit(".", 1)[0]
        if split_file is None:
            by_id.setdefault(stem, []).append((rel, hash_split(stem, cfg.split_fractions)))
            continue
        key = rel if split_file.by_path else stem
        if key not in split_file.entries:
            quarantine.append(QuarantineEntry(stem, rel, "not_in_split", f"not listed in {cfg.split_file}"))
            continue
        matched.add(key)
        item_id, split = split_file.entries[key]
        by_id.setdefault(item_id, []).append((rel, split))
    if split_file is not None:
        quarantine += [QuarantineEntry(i, key if split_file.by_path else f"{key}.*", "missing_audio",
                                       f"listed in {cfg.split_file}", s)
                       for key, (i, s) in split_file.entries.items() if key not in matched]

    rows: list[dict] = []
    for item_id, found in by_id.items():
        if len(found) > 1:
            rels = [r for r, _ in found]
            quarantine += [QuarantineEntry(item_id, r, "duplicate_id", f"same id as {[o for o in rels if o != r]}", s)
                           for r, s in found]
            continue
        rel, split = found[0]
        row, problem = _check_file(root, rel, cfg)
        if problem is not None:
            quarantine.append(QuarantineEntry(item_id, rel, problem[0], problem[1], split))
        else:
            rows.append({"id": item_id, "split": split, **row})
    frame = pd.DataFrame(rows, columns=SCAN_COLUMNS)
    frame = frame.iloc[sorted(range(len(frame)), key=lambda k: natural_key(frame["id"].iloc[k]))]
    quarantine.sort(key=lambda q: (q.reason, natural_key(q.id)))
    return AudioScan(frame.reset_index(drop=True), quarantine)


def load_audio(path: str | Path, sample_rate: int) -> np.ndarray:
    """Return the file as float32 mono at ``sample_rate``: channels averaged, resampled with soxr (HQ)."""
    try:
        wave, rate = sf.read(str(path), dtype="float32", always_2d=True)
    except (sf.LibsndfileError, RuntimeError) as err:
        raise DataError(f"{path}: cannot read audio ({err}); rescan the folder to quarantine it") from err
    mono = wave.mean(axis=1)
    if rate != sample_rate:
        mono = soxr.resample(mono, rate, sample_rate, quality="HQ")
    return np.ascontiguousarray(mono, dtype=np.float32)
