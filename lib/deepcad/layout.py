"""Where things live in a DeepCAD root, exactly as in the real download."""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from lib.io import SafeRoot

CAD_JSON_DIR = "cad_json"
SPLIT_FILE = "train_val_test_split.json"
SPLITS = ("train", "validation", "test")


@dataclass(frozen=True)
class DeepCADSource:
    """``deepcad`` params: where the dataset (synthetic or a real download) lives, and where its listing goes."""

    root: str = "data/raw/deepcad_synth"
    # lib.listing: path, size and mtime of every file under root; the fan-out's DVC dependency instead of root
    listing: str = "data/interim/listings/deepcad.tsv"


class ModelPaths:
    """:func:`model_path` for many ids under one root, each folder resolved once (``lib.io.SafeRoot``): a plan or a
    shard of hundreds of models would otherwise resolve the root again for every one."""

    def __init__(self, root: str | Path):
        self.root = Path(root)
        self._safe = SafeRoot(self.root / CAD_JSON_DIR)

    def __call__(self, model_id: str) -> Path:
        """Return ``<root>/cad_json/<folder>/<id>.json`` for ``"folder/id"``; raises UnsafePathError on escape."""
        return self._safe.join(f"{model_id}.json")


def model_path(root: str | Path, model_id: str) -> Path:
    """Return ``<root>/cad_json/<folder>/<id>.json`` for ``"folder/id"``; raises UnsafePathError on escape."""
    return ModelPaths(root)(model_id)
