"""A dataset root's listing: every file's relative path, size and modification time, one line each.

The raw roots are the fan-out stages' largest DVC dependency (220,847 SSv2 videos, 178,238 DeepCAD JSONs), and
DVC's no-op check of a directory dependency costs a stat and a state-database lookup per file: 9 s for SSv2
alone (``reports/benchmarks/scale.md``). The pipeline depends on this listing instead: a stage marked
``always_changed`` rewrites it on every ``dvc repro`` (one scandir pass, ~1 s at 220k files), and DVC reruns the
fan-out only when the listing's bytes change. Size and mtime are what DVC's own state database keys on before
it rehashes a file, so the listing notices the same edits DVC would (a rewrite, a touch, an added or removed
file), without reading a byte of video.
"""
from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path

from lib.io import atomic_write_text

HEADER = "# path\tbytes\tmtime_ns\n"


def walk(root: str | Path) -> Iterator[tuple[str, int, int]]:
    """Yield ``(posix path relative to root, size, mtime_ns)`` for every file under ``root``, sorted by path.

    Symlinks are followed for the size and time (a link to a rewritten file changes the line); a broken link is
    listed with size and time -1, so it shows up rather than vanishing. Hidden entries are listed too."""
    root = Path(root)
    if not root.is_dir():
        raise FileNotFoundError(f"{root}: no dataset folder to list; point the source's root in params.yaml at "
                                "a download, or run its synth stage for the embedded data")
    rows: list[tuple[str, int, int]] = []
    stack = [("", str(root))]
    while stack:
        prefix, folder = stack.pop()
        with os.scandir(folder) as it:
            for entry in it:
                rel = prefix + entry.name
                if entry.is_dir():  # follows links: a linked folder is listed like a real one
                    stack.append((rel + "/", entry.path))
                    continue
                try:
                    st = entry.stat()
                except FileNotFoundError:
                    rows.append((rel, -1, -1))
                    continue
                rows.append((rel, st.st_size, st.st_mtime_ns))
    rows.sort()
    yield from rows


def write_listing(root: str | Path, dst: str | Path) -> dict:
    """Write the listing of ``root`` to ``dst`` atomically (rewritten only when it changed, so its mtime stays
    for tools that look); return ``{"files", "bytes", "changed"}``."""
    rows = list(walk(root))
    changed = _write_if_changed(dst, _table(rows))
    return {"files": len(rows), "bytes": sum(max(s, 0) for _, s, _ in rows), "changed": changed}


def _table(rows) -> str:
    return HEADER + "".join(f"{p}\t{s}\t{t}\n" for p, s, t in rows)


def _write_if_changed(dst: str | Path, text: str) -> bool:
    """Write ``text`` to ``dst`` atomically unless it already holds it (its mtime then stays, for tools that
    look); return whether it was written."""
    dst = Path(dst)
    changed = not dst.is_file() or dst.read_text() != text
    if changed:
        atomic_write_text(dst, text)
    return changed


def path_listing_text(path: str | Path | None) -> str:
    """The listing of an optional external input (weights file, model folder): its path, then one line per file
    (a folder's files as :func:`walk` lists them; a file as itself). ``None`` and a missing path get a line
    saying so (the stage that reads the path reports a missing one with its fix)."""
    if path is None or str(path) == "":
        return "# path: null (not set)\n"
    head = f"# path: {path}\n"
    p = Path(path)
    if p.is_dir():
        return head + _table(walk(p))
    if p.is_file():
        st = p.stat()
        return head + _table([(p.name, st.st_size, st.st_mtime_ns)])
    return head + "# missing\n"


def write_path_listing(path: str | Path | None, dst: str | Path) -> bool:
    """Write :func:`path_listing_text` of ``path`` to ``dst`` when it changed; return whether it did."""
    return _write_if_changed(dst, path_listing_text(path))
