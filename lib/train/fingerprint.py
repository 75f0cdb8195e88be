"""Run fingerprints: what decides a training run's trajectory, so a checkpoint is resumed only by its own run.

A trainer stage's checkpoints live in a persistent ``out_dir``; ``dvc exp run -S <section>.lr=...`` reruns the
stage on top of them. The Trainer resumes a checkpoint only when its fingerprint equals the new run's, so a
changed param, other data or changed code starts a fresh run instead of silently continuing another experiment.
"""
from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from typing import Any

# Keys that change how a run is watched or stored, not what it computes: a rerun may change them and resume.
BOOKKEEPING = ("out_dir", "log_every", "checkpoint_every", "keep_checkpoints", "tracker", "tracker_dir")


def run_fingerprint(section: Mapping[str, Any], data: Any, code: Sequence[str], *,
                    keep: Iterable[str] = (), skip: Iterable[str] = ()) -> str:
    """Return a digest of a flat params ``section`` (minus :data:`BOOKKEEPING` and ``skip``, except the keys in
    ``keep``), ``data`` (anything JSON-able that identifies the inputs) and the source of the ``code`` modules."""
    from lib.io import source_digest
    from lib.shards import digest

    ignored = (set(BOOKKEEPING) | set(skip)) - set(keep)
    params = {k: v for k, v in section.items() if k not in ignored}
    return digest([params, data, source_digest(*code)])


__all__ = ["BOOKKEEPING", "run_fingerprint"]
