"""Sharding shared by every fan-out stage: stable assignment, file names, digests, joining the parts.

A shard job recomputes the (cheap) plan and takes its slice; its Snakemake ``params`` carry a digest of
that slice, so only shards whose items changed rerun.
"""
from __future__ import annotations

import hashlib
import json
import zlib
from collections import Counter
from collections.abc import Iterable
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Generic, TypeVar

import pandas as pd

from lib.io import remove_stale_temps
from lib.quarantine import QuarantineEntry

Item = TypeVar("Item")


@dataclass
class ShardPlan(Generic[Item]):
    """What a fan-out stage will process (dataclass items with a ``shard`` field) and what it set aside
    before processing anything."""

    items: list[Item]
    quarantine: list[QuarantineEntry] = field(default_factory=list)

    def shard_items(self, index: int) -> list[Item]:
        """Return the items of shard ``index``."""
        return [it for it in self.items if it.shard == index]

    def fingerprints(self, shards: int) -> list[str]:
        """Return one digest per shard of everything in the data that shard's output depends on."""
        rows: list[list[dict[str, Any]]] = [[] for _ in range(shards)]
        for it in self.items:
            rows[it.shard].append(asdict(it))
        return [digest(r) for r in rows]

    def digest(self) -> str:
        """Return a digest of the whole plan, quarantine included (what the merge depends on)."""
        return digest([*(asdict(it) for it in self.items), *(q.to_dict() for q in self.quarantine)])


def shard_of(key: str, shards: int) -> int:
    """Return the shard of ``key``: a stable hash, so adding items moves no existing one."""
    return zlib.crc32(key.encode()) % shards


def shard_name(index: int) -> str:
    """Return the file name of shard ``index`` (zero-padded so listings sort)."""
    return f"shard-{index:05d}.parquet"


def digest(records: Iterable[dict]) -> str:
    """Return a short sha256 of JSON-serialisable records, in order."""
    h = hashlib.sha256()
    for r in records:
        h.update(json.dumps(r, sort_keys=True, default=str).encode())
    return h.hexdigest()[:16]


def read_shards(directory: str | Path, shards: int, *, rerun_hint: str) -> pd.DataFrame:
    """Concatenate shard parquets 0..shards-1 of ``directory``; a missing one raises naming ``rerun_hint``."""
    directory = Path(directory)
    remove_stale_temps(directory)
    parts = []
    for i in range(shards):
        path = directory / shard_name(i)
        if not path.is_file():
            raise FileNotFoundError(f"{path}: shard missing; run `{rerun_hint}` to finish")
        parts.append(pd.read_parquet(path))
    return pd.concat(parts, ignore_index=True)


def natural_key(item_id: str) -> tuple:
    """Sort key putting numeric ids in numeric order ("2" before "10"), path parts compared piecewise."""
    return tuple((0, int(p), "") if p.isdigit() else (1, 0, p) for p in item_id.split("/"))


def split_results(rows: pd.DataFrame, plan: ShardPlan,
                  int_columns: Iterable[str] = ()) -> tuple[pd.DataFrame, list[dict]]:
    """Split joined shard rows (with ``id, split, source_path, reason, detail``) into the good rows, sorted
    by id without ``reason``/``detail``, and every quarantine entry (the plan's and the rows'), sorted by
    reason then id."""
    bad = rows[rows["reason"].notna()]
    good = rows[rows["reason"].isna()].drop(columns=["reason", "detail"])
    good = good.assign(_k=good["id"].map(natural_key)).sort_values("_k").drop(columns="_k").reset_index(drop=True)
    for col in int_columns:
        good[col] = good[col].astype("int64")
    quarantine = [q.to_dict() for q in plan.quarantine]
    quarantine += [QuarantineEntry(r.id, r.source_path, r.reason, r.detail or "", r.split).to_dict()
                   for r in bad.itertuples()]
    quarantine.sort(key=lambda q: (q["reason"], natural_key(q["id"])))
    return good, quarantine


def result_counts(good: pd.DataFrame, quarantine: list[dict]) -> dict[str, Any]:
    """Return the summary counts every fan-out stage reports: quarantined, good rows per split, per reason."""
    return {
        "quarantined": len(quarantine),
        "by_split": {s: int(n) for s, n in good["split"].value_counts().sort_index().items()},
        "quarantine_by_reason": dict(sorted(Counter(q["reason"] for q in quarantine).items())),
    }
