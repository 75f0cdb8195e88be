"""Exclusive locks on what one process at a time may write (a trainer's out_dir, a fan-out root, a cache).

:func:`exclusive` takes a ``filelock`` lock without waiting and records who holds it beside the lock file, so a
second process fails at once with an error naming the holder instead of interleaving writes. The OS releases the
lock when its holder dies (even by SIGKILL), so a killed run never leaves a lock behind.
"""
from __future__ import annotations

import contextlib
import json
import os
import socket
import sys
import time
from collections.abc import Iterator
from pathlib import Path

from filelock import FileLock, Timeout


class LockedError(RuntimeError):
    """Another process holds the lock; the message names it and what to do."""


def lock_path(target: str | Path, part: str = "") -> Path:
    """Return the lock file of ``target`` (or of one ``part`` of it): a hidden sibling (``data/models/.run.lock``
    for ``data/models/run``), so the lock never lands inside an output that DVC hashes (``.gitignore`` and
    ``.dvcignore`` skip ``.*.lock*`` anyway)."""
    target = Path(target)
    return target.parent / f".{target.name}{'.' + part if part else ''}.lock"


@contextlib.contextmanager
def exclusive(target: str | Path, what: str, part: str = "") -> Iterator[Path]:
    """Hold the lock of ``target`` (or of its ``part``; ``what`` names it in errors, e.g. "trainer out_dir") for
    the ``with`` block.

    Raises :class:`LockedError` at once when another process holds it.
    """
    path = lock_path(target, part)
    path.parent.mkdir(parents=True, exist_ok=True)
    lock = FileLock(str(path), thread_local=False)
    holder_file = path.with_name(path.name + ".holder")
    try:
        lock.acquire(timeout=0)
    except Timeout:
        name = f"{target} ({part})" if part else str(target)
        raise LockedError(f"{name}: {what} is in use by {_describe_holder(holder_file)}; wait for it to finish, "
                          f"or stop it, before running this again") from None
    try:
        holder_file.write_text(json.dumps({"pid": os.getpid(), "host": socket.gethostname(),
                                           "since": time.strftime("%Y-%m-%d %H:%M:%S"),
                                           "command": " ".join(sys.argv)[:300]}))
        yield path
    finally:
        with contextlib.suppress(OSError):
            holder_file.unlink()
        lock.release()


def _describe_holder(holder_file: Path) -> str:
    try:
        h = json.loads(holder_file.read_text())
        return f"pid {h['pid']} on {h['host']} since {h['since']} ({h['command']})"
    except (OSError, ValueError, KeyError):
        return "another process"


__all__ = ["LockedError", "exclusive", "lock_path"]
