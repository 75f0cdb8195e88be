"""Damage and list the members of per-shard archives (lib.archive), as tests of readers need to."""
from __future__ import annotations

import io
import zipfile
from pathlib import Path

from lib import archive


def rewrite_member(path: str | Path, data: bytes | None) -> None:
    """Replace the member ``path`` runs through to (``.../x.zip/images/a.png``) with ``data``; None removes it."""
    zpath, member = archive.locate(path)
    with zipfile.ZipFile(zpath) as zf:
        files = {i.filename: zf.read(i) for i in zf.infolist()}
    if data is None:
        del files[member]
    else:
        files[member] = data
    with zipfile.ZipFile(zpath, "w", zipfile.ZIP_STORED) as zf:
        for name, content in files.items():
            zf.writestr(name, content)


def save_image(image, path: str | Path) -> None:
    """``image.save`` as PNG into the archive member ``path``."""
    buf = io.BytesIO()
    image.save(buf, format="PNG")
    rewrite_member(path, buf.getvalue())


def members(out: str | Path, suffix: str = "") -> list[Path]:
    """Every member ending in ``suffix`` of every archive under ``out/archives``, as paths through the archive."""
    return sorted(z / m for z in sorted((Path(out) / "archives").glob("*.zip")) for m in archive.members(z)
                  if m.endswith(suffix))
