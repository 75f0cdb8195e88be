"""Where things live in an SSv2 root, exactly as in the real download."""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from lib.io import safe_join

VIDEO_DIR = "20bn-something-something-v2"
LABEL_DIR = "labels"
VIDEO_SUFFIX = ".webm"
SPLIT_FILES = {"train": "train.json", "validation": "validation.json", "test": "test.json"}
CLASSES_FILE = "labels.json"


@dataclass(frozen=True)
class SSv2Source:
    """``ssv2`` params: where the dataset (synthetic or a real download) lives, and where its listing goes."""

    root: str = "data/raw/ssv2_synth"
    # lib.listing: path, size and mtime of every file under root; the fan-out's DVC dependency instead of root
    listing: str = "data/interim/listings/ssv2.tsv"


def video_path(root: str | Path, video_id: str) -> Path:
    """Return ``<root>/20bn-something-something-v2/<id>.webm``; raises UnsafePathError if the id escapes."""
    return safe_join(Path(root) / VIDEO_DIR, f"{video_id}{VIDEO_SUFFIX}")


def label_path(root: str | Path, name: str) -> Path:
    """Return ``<root>/labels/<name>``."""
    return Path(root) / LABEL_DIR / name
