"""Per-shard archives: a shard's many small output files (training copies, PNG views, meshes) as one zip.

DVC's cost of a no-op ``dvc status``/``dvc repro`` grows with the number of files a stage tracks (a stat and a
state-database lookup each, ~40 us): 220k training copies or 713k renders made it 19-34 s (measured). Packed per shard
the outputs are 512 files, whatever the item count (``reports/benchmarks/scale.md``); the DVC maintainers
recommend the same for datasets of many small files (treeverse/dvc#7681).

The archives are uncompressed (``ZIP_STORED``: video and PNG are compressed already, and a stored member is a
byte range a reader can seek in) and deterministic (members sorted, fixed timestamps and modes), so the same
files give the same bytes and DVC's hash does not change on a rerun. A member is addressed by a path *through*
its archive, ``<out>/archives/shard-00003-<digest>.zip/videos/123.webm``, as Python's zipimport addresses
modules inside a zip on ``sys.path``; :func:`open_binary` opens either kind of path, so readers need not know.
"""
from __future__ import annotations

import contextlib
import io
import os
import zipfile
from collections.abc import Iterator
from pathlib import Path
from typing import IO

from lib.io import atomic_path

SUFFIX = ".zip"
_EPOCH = (1980, 1, 1, 0, 0, 0)  # the earliest time a zip can hold: no build time leaks into the bytes
_MAX_OPEN = 32
# Open archives of this process, keyed by pid (a forked loader worker must not share a parent's file offset),
# path and the file's identity (a rerun replaces an archive: the new file gets a new handle). Reading a member
# then costs no central-directory parse: ~1,000 members a shard, read 3 x 178k times by the CAD trainer.
_open: dict[tuple, zipfile.ZipFile] = {}


def _zip(archive: Path) -> zipfile.ZipFile:
    """This process's open handle of ``archive`` (opened on first use, reopened when the file was replaced)."""
    st = archive.stat()
    pid = os.getpid()
    key = (pid, str(archive), st.st_ino, st.st_size, st.st_mtime_ns)
    if (zf := _open.get(key)) is not None:
        return zf
    for k in list(_open):
        if k[0] != pid:  # inherited over fork: the parent's, left to it
            del _open[k]
        elif k[1] == key[1]:  # an older file at this path
            _open.pop(k).close()
    while len(_open) >= _MAX_OPEN:  # least recently opened first
        _open.pop(next(iter(_open))).close()
    zf = _open[key] = zipfile.ZipFile(archive)
    return zf


def locate(path: str | Path) -> tuple[Path, str] | None:
    """Return ``(archive, member)`` when ``path`` runs through a ``.zip`` file (``a/b.zip/c/d.png`` ->
    ``(a/b.zip, "c/d.png")``), else None (a plain path)."""
    parts = Path(path).parts
    for i in range(len(parts) - 1):
        if parts[i].endswith(SUFFIX):
            archive = Path(*parts[: i + 1])
            if archive.is_file():
                return archive, "/".join(parts[i + 1:])
    return None


@contextlib.contextmanager
def open_binary(path: str | Path) -> Iterator[IO[bytes]]:
    """Open a file, or a member of an archive by a path through it, for binary reading (seekable).

    Raises FileNotFoundError naming the archive and the member when the archive lacks it.
    """
    loc = locate(path)
    if loc is None:
        with open(path, "rb") as fh:
            yield fh
        return
    archive, member = loc
    zf = _zip(archive)
    try:
        info = zf.getinfo(member)
    except KeyError:
        raise FileNotFoundError(f"{path}: {archive} has no member {member!r}; rerun the stage that wrote it "
                                "(`dvc repro` or `snakemake --cores N <stage>`)") from None
    with zf.open(info) as fh:
        yield fh


def source(path: str | Path) -> str | io.BytesIO:
    """What a decoder that takes a path or a file object opens (PyAV, decord): the path of a plain file, or an
    archive member's bytes in memory (seekable; members are a few MB)."""
    return str(path) if locate(path) is None else io.BytesIO(read_bytes(path))


def read_bytes(path: str | Path) -> bytes:
    """Return the bytes of a file or of an archive member (see :func:`open_binary`)."""
    with open_binary(path) as fh:
        return fh.read()


def exists(path: str | Path) -> bool:
    """Whether ``path`` is a file or a member of an archive."""
    loc = locate(path)
    if loc is None:
        return Path(path).is_file()
    return loc[1] in _zip(loc[0]).NameToInfo


def size(path: str | Path) -> int:
    """Return the size in bytes of a file or of an archive member."""
    loc = locate(path)
    if loc is None:
        return Path(path).stat().st_size
    try:
        return _zip(loc[0]).getinfo(loc[1]).file_size
    except KeyError:
        raise FileNotFoundError(f"{path}: {loc[0]} has no member {loc[1]!r}") from None


def members(archive: str | Path) -> list[str]:
    """Return the member names of ``archive`` in stored order."""
    with zipfile.ZipFile(archive) as zf:
        return zf.namelist()


def pack(folder: str | Path, archive: str | Path) -> Path:
    """Write every file under ``folder`` into ``archive`` (members named by their posix path relative to
    ``folder``, sorted), atomically and deterministically; return ``archive``. An empty or missing folder
    gives an empty archive."""
    folder = Path(folder)
    files = sorted((p.relative_to(folder).as_posix(), p) for p in folder.rglob("*") if p.is_file()) \
        if folder.is_dir() else []
    with atomic_path(archive) as tmp, zipfile.ZipFile(tmp, "w", zipfile.ZIP_STORED, allowZip64=True) as zf:
        for name, src in files:
            info = zipfile.ZipInfo(name, date_time=_EPOCH)
            info.external_attr = 0o100644 << 16  # a regular file, rw-r--r--
            info.create_system = 3  # unix, so the mode above is read as one
            with open(src, "rb") as fh, zf.open(info, "w", force_zip64=os.path.getsize(src) >= 2**31) as dst:
                while chunk := fh.read(1 << 20):
                    dst.write(chunk)
    return Path(archive)


def resolve(out: str | Path, archive: str | None, relative: str) -> str:
    """Return the absolute path of an output ``relative`` to its stage folder ``out``, or to the ``archive``
    (relative to ``out``) it was packed into: a path through the archive, for :func:`open_binary`."""
    base = Path(out).resolve()
    return str(base / archive / relative) if isinstance(archive, str) else os.path.normpath(base / relative)
