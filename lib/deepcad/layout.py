"""Where things live in a DeepCAD root, exactly as in the real download."""
from __future__ import annotations

from pathlib import Path

from lib.io import safe_join

CAD_JSON_DIR = "cad_json"
SPLIT_FILE = "train_val_test_split.json"
SPLITS = ("train", "validation", "test")


def model_path(root: str | Path, model_id: str) -> Path:
    """Return ``<root>/cad_json/<folder>/<id>.json`` for ``"folder/id"``; raises UnsafePathError on escape."""
    return safe_join(Path(root) / CAD_JSON_DIR, f"{model_id}.json")
