"""Run fingerprints: what decides a training run's trajectory, so a checkpoint is resumed only by its own run.

A trainer stage's checkpoints live in a persistent ``out_dir``; ``dvc exp run -S <section>.lr=...`` reruns the
stage on top of them. The Trainer resumes a checkpoint only when its fingerprint equals the new run's, and sets
the others aside. A fingerprint is derived, never hand-listed: the params section (bookkeeping keys aside), the
*content* of the inputs (manifest rows, text vectors, audio and image bytes, ``init_from`` and base-model weights:
never paths or mtimes) and the code (:func:`lib.identity.code_digest` of the trainer module's import closure, so a
docstring or comment edit resumes and a code edit starts fresh).
"""
from __future__ import annotations

from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any

# Keys that change how a run is watched or stored, not what it computes: a rerun may change them and resume.
BOOKKEEPING = ("out_dir", "log_every", "checkpoint_every", "keep_checkpoints", "keep_superseded", "tracker",
               "tracker_dir", "max_minutes")
# Paths whose content, not name, is the input: the fingerprint holds their digest instead.
CONTENT_PATHS = ("init_from",)


def run_fingerprint(section: Mapping[str, Any], data: Any, entry: str, *,
                    keep: Iterable[str] = (), skip: Iterable[str] = ()) -> str:
    """Return a digest of a flat params ``section`` (minus :data:`BOOKKEEPING` and ``skip``, except the keys in
    ``keep``; :data:`CONTENT_PATHS` by content), ``data`` (anything JSON-able that identifies the inputs by
    content) and the code of module ``entry`` with everything it imports from this repository."""
    from lib.identity import code_digest
    from lib.shards import digest

    ignored = (set(BOOKKEEPING) | set(skip) | set(CONTENT_PATHS)) - set(keep)
    params = {k: v for k, v in section.items() if k not in ignored}
    contents = {k: path_content(section[k]) for k in CONTENT_PATHS if section.get(k)}
    return digest([params, contents, data, code_digest(entry)])


def path_content(path: str | Path) -> str | None:
    """Digest of a weights file or folder's content (:func:`lib.identity.tree_digest`); None when it is missing
    (the trainer then stops with its own error naming the path)."""
    from lib.identity import tree_digest

    return tree_digest(path) if Path(path).exists() else None


def manifest_content(path: str | Path) -> str | None:
    """Digest of a parquet manifest's rows (:func:`lib.identity.frame_digest`): the same rows written by another
    pyarrow version, or copied elsewhere, give the same digest. None when the file is missing."""
    import pandas as pd

    from lib.identity import frame_digest

    path = Path(path)
    return frame_digest(pd.read_parquet(path)) if path.is_file() else None


__all__ = ["BOOKKEEPING", "CONTENT_PATHS", "manifest_content", "path_content", "run_fingerprint"]
