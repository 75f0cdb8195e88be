"""Where things live in a DeepCAD root, exactly as in the real download."""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from lib.io import safe_join

CAD_JSON_DIR = "cad_json"
SPLIT_FILE = "train_val_test_split.json"
SPLITS = ("train", "validation", "test")


@dataclass(frozen=True)
class DeepCADSource:
    """``deepcad`` params: where the dataset (synthetic or a real download) lives, and where its listing goes."""

    root: str = "data/raw/deepcad_synth"
    # lib.listing: path, size and mtime of every file under root; the fan-out's DVC dependency instead of root
    listing: str = "data/interim/listings/deepcad.tsv"


def model_path(root: str | Path, model_id: str) -> Path:
    """Return ``<root>/cad_json/<folder>/<id>.json`` for ``"folder/id"``; raises UnsafePathError on escape."""
    return safe_join(Path(root) / CAD_JSON_DIR, f"{model_id}.json")
