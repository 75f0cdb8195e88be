"""Where things live in an SSv2 root, exactly as in the real download."""
from __future__ import annotations

from pathlib import Path

from lib.io import safe_join

VIDEO_DIR = "20bn-something-something-v2"
LABEL_DIR = "labels"
VIDEO_SUFFIX = ".webm"
SPLIT_FILES = {"train": "train.json", "validation": "validation.json", "test": "test.json"}
CLASSES_FILE = "labels.json"


def video_path(root: str | Path, video_id: str) -> Path:
    """Return ``<root>/20bn-something-something-v2/<id>.webm``; raises UnsafePathError if the id escapes."""
    return safe_join(Path(root) / VIDEO_DIR, f"{video_id}{VIDEO_SUFFIX}")


def label_path(root: str | Path, name: str) -> Path:
    """Return ``<root>/labels/<name>``."""
    return Path(root) / LABEL_DIR / name
