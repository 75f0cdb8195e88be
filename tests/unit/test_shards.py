"""The fan-out skeleton (lib.shards) on a toy dataset: shard identity, digest-named files, the verified merge, locks."""
import json
import os
from dataclasses import dataclass, replace
from pathlib import Path
from types import SimpleNamespace

import pandas as pd
import pyarrow.parquet as pq
import pytest

import lib.shards
from lib.deepcad import render_models
from lib.fanout_rules import FanOutRules, RunLocks
from lib.identity import import_closure
from lib.io import DataError
from lib.locks import LockedError, exclusive
from lib.quarantine import QuarantineEntry, QuarantineError
from lib.shards import DIGEST_KEY, FanOut, ShardPlan, result_counts, shard_digest, shard_name, shard_of
from lib.ssv2 import ingest


@dataclass(frozen=True)
class ToyItem:
    id: str
    split: str
    value: int
    shard: int


@dataclass(frozen=True)
class ToySource:
    root: str = "root"


@dataclass(frozen=True)
class ToyConfig:
    out: str = "out"
    shards: int = 3
    cores: int = 1
    scale: int = 1


def toy_plan(root, shards):
    """Items from root/items.json ({id: value}); a negative value is set aside by the plan itself."""
    values = json.loads((root / "items.json").read_text())
    items = [ToyItem(i, "train", v, shard_of(i, shards)) for i, v in values.items() if v >= 0]
    quarantine = [QuarantineEntry(i, i, "missing_video") for i, v in values.items() if v < 0]
    return ShardPlan(items, quarantine)


class ToyWorker:
    """Scales values; 0 is a bad item. Records that it was closed."""

    closed = 0

    def __init__(self, cfg):
        self.cfg = cfg

    def __call__(self, root, item):
        if item.value == 0:
            raise QuarantineError("zero_bytes", "value 0")
        return {"id": item.id, "split": item.split, "source_path": item.id, "value": item.value * self.cfg.scale}

    def close(self):
        ToyWorker.closed += 1


TOY = FanOut(name="toy", rule_prefix="toy", entry="lib.shards", source=("toy_source", ToySource),
             config=("toy", ToyConfig), plan=toy_plan, worker=ToyWorker,
             quarantine_row=lambda it: {"id": it.id, "split": it.split, "source_path": it.id},
             columns=lambda cfg: ["id", "split", "source_path", "value", "reason", "detail"], table="rows.parquet",
             finish=lambda root, cfg, good, q: {"rows": len(good), **result_counts(good, q)}, int_columns=("value",))


ITEMS = {str(i): i for i in range(10)}  # "0" is a bad item


@pytest.fixture
def toy(tmp_path):
    (tmp_path / "root").mkdir()
    (tmp_path / "root/items.json").write_text(json.dumps(ITEMS))
    return tmp_path / "root", ToyConfig(out=str(tmp_path / "out"))


def run_all(root, cfg):
    for i in range(cfg.shards):
        TOY.run_shard(root, cfg, i, progress=False)
    return TOY.merge(root, cfg)


def shard_files(cfg):
    return sorted(p.name for p in (Path(cfg.out) / "shards").glob("shard-*.parquet"))


def test_shard_digest_moves_with_settings_code_and_its_items_not_with_cores(toy, monkeypatch):
    root, cfg = toy
    _, base = TOY.identity(root, cfg)
    assert len(set(base.shards)) == cfg.shards
    assert TOY.identity(root, replace(cfg, cores=8))[1] == base  # cores change no row
    scaled = TOY.identity(root, replace(cfg, scale=2))[1]
    assert all(a != b for a, b in zip(base.shards, scaled.shards, strict=True)) and scaled.digest != base.digest
    monkeypatch.setattr(lib.shards, "code_digest", lambda *modules: "another-code")
    recoded = TOY.identity(root, cfg)[1]
    assert all(a != b for a, b in zip(base.shards, recoded.shards, strict=True))
    monkeypatch.undo()
    (root / "items.json").write_text(json.dumps({**ITEMS, "4": 40}))
    changed = TOY.identity(root, cfg)[1]
    assert [i for i in range(cfg.shards) if changed.shards[i] != base.shards[i]] == [shard_of("4", cfg.shards)]
    assert shard_digest("d", {"a": 1}, "c") != shard_digest("d", {"a": 2}, "c") != shard_digest("d", {"a": 2}, "x")


def test_plan_level_quarantine_moves_the_plan_digest_only(toy):
    root, cfg = toy
    _, base = TOY.identity(root, cfg)
    (root / "items.json").write_text(json.dumps({**ITEMS, "99": -1}))
    _, more = TOY.identity(root, cfg)
    assert more.shards == base.shards and more.digest != base.digest


def test_shards_are_named_by_their_digest_and_carry_it(toy):
    root, cfg = toy
    ToyWorker.closed = 0
    summary = run_all(root, cfg)
    _, ident = TOY.identity(root, cfg)
    assert shard_files(cfg) == [shard_name(i, d) for i, d in enumerate(ident.shards)]
    for i, d in enumerate(ident.shards):
        assert pq.read_schema(f"{cfg.out}/shards/{shard_name(i, d)}").metadata[DIGEST_KEY] == d.encode()
    record = json.loads((Path(cfg.out) / "shards" / ident.record_file()).read_text())
    assert [s["digest"] for s in record["shards"]] == list(ident.shards) and record["items"] == 10
    assert summary["rows"] == 9 and summary["quarantine_by_reason"] == {"zero_bytes": 1}
    assert sorted(pd.read_parquet(f"{cfg.out}/rows.parquet")["value"]) == list(range(1, 10))
    assert json.loads((Path(cfg.out) / "quarantine.json").read_text())[0]["id"] == "0"
    assert ToyWorker.closed == sum(1 for i in range(cfg.shards) if toy_plan(root, cfg.shards).shard_items(i))


def test_merge_refuses_a_shard_whose_embedded_digest_is_not_the_plans(toy):
    root, cfg = toy
    run_all(root, cfg)
    new = replace(cfg, scale=2)
    _, ident = TOY.identity(root, new)
    old = shard_files(cfg)
    # old rows under the new plan's names: a copied or renamed file must not pass for the plan's shard
    for i, name in enumerate(old):
        (Path(cfg.out) / "shards" / name).rename(Path(cfg.out) / "shards" / ident.shard_file(i))
    with pytest.raises(DataError, match=rf"{ident.shard_file(0)}: shard digest \w+ is not the plan's "
                                        rf"{ident.shards[0]}.*snakemake --cores N toy"):
        TOY.merge(root, new)


def test_merge_refuses_a_missing_shard_naming_it(toy):
    root, cfg = toy
    TOY.run_shard(root, cfg, 0, progress=False)
    _, ident = TOY.identity(root, cfg)
    with pytest.raises(FileNotFoundError, match=rf"{ident.shard_file(1)}: shard missing; run `snakemake"):
        TOY.merge(root, cfg)


def test_merge_deletes_shards_and_records_of_other_plans(toy):
    root, cfg = toy
    run_all(root, cfg)
    legacy = Path(cfg.out) / "shards/shard-00000.parquet"  # a name from before digests
    legacy.write_bytes(b"old")
    new = replace(cfg, scale=3)
    run_all(root, new)
    _, ident = TOY.identity(root, new)
    left = sorted(p.name for p in (Path(cfg.out) / "shards").iterdir())
    assert left == sorted([ident.record_file(), *(ident.shard_file(i) for i in range(cfg.shards))])
    assert sorted(pd.read_parquet(f"{cfg.out}/rows.parquet")["value"]) == [3 * v for v in range(1, 10)]


def test_a_shard_job_planned_with_another_digest_writes_nothing(toy):
    root, cfg = toy
    with pytest.raises(DataError, match="changed while the workflow ran"):
        TOY.run_shard(root, cfg, 1, progress=False, expected="0" * 16)
    with pytest.raises(DataError, match="changed while the workflow ran"):
        TOY.write_plan_record(root, cfg, expected="0" * 16)
    assert not (Path(cfg.out) / "shards").exists()


def test_both_datasets_run_on_the_shared_skeleton():
    for module, entry in ((ingest, "stages.ingest_ssv2"), (render_models, "stages.render_deepcad")):
        assert isinstance(module.FANOUT, FanOut) and module.FANOUT.entry == entry
        assert module.run_shard.__func__ is FanOut.run_shard and module.merge_shards.__func__ is FanOut.merge
        assert not hasattr(module, "read_shards")
    # the code identity is the stage's import closure: the modules the old hand-written lists missed are in it
    assert {"lib.ssv2.layout", "lib.io", "lib.quarantine", "lib.shards"} <= set(import_closure("stages.ingest_ssv2"))
    assert {"lib.deepcad.layout", "lib.io", "lib.quarantine"} <= set(import_closure("stages.render_deepcad"))


def test_rules_name_the_plans_files_and_lock_only_the_roots_they_write(toy, tmp_path):
    root, cfg = toy
    config = {"toy_source": {"root": str(root)}, "toy": {"out": cfg.out}}
    fan = FanOutRules(TOY, config, "params.yaml")
    _, ident = TOY.identity(root, cfg)
    assert fan.merge_inputs() == [*(f"{cfg.out}/shards/{ident.shard_file(i)}" for i in range(3)),
                                  f"{cfg.out}/shards/{ident.record_file()}"]
    assert (fan.shard_rule, fan.plan_rule, fan.merge_rule) == ("toy_shard", "toy_plan", "toy_merge")
    other = FanOutRules(replace(TOY, name="toy2", rule_prefix="toy2"),
                        {**config, "toy": {"out": str(tmp_path / "other")}}, "params.yaml")
    locks = RunLocks()
    locks.hold([fan, other], [SimpleNamespace(rule=SimpleNamespace(name="toy_shard"))])  # jobs of `toy` only
    try:
        with pytest.raises(LockedError, match=rf"in use by pid {os.getpid()} "), exclusive(cfg.out, "test"):
            pass
        with exclusive(other.cfg.out, "test"):  # not in this run: not locked
            pass
    finally:
        locks.release()
    with exclusive(cfg.out, "test"):  # released
        pass


def test_plan_digests_in_one_pass_equal_hashing_each_asdict_record():
    """The one-pass digests (a 220k-item plan is hashed once) keep the identity every existing shard is named by:
    sha256 over json.dumps(asdict(item), sort_keys=True), per shard and for the plan with its quarantine."""
    import hashlib
    from dataclasses import asdict

    @dataclass(frozen=True)
    class Item:
        id: str
        placeholders: tuple[str, ...]
        size: int
        shard: int

    items = [Item(str(i), ("a", str(i)), i * 7, i % 3) for i in range(10)]
    quarantine = [QuarantineEntry("q", "videos/q.webm", "missing_video", "gone", "train")]
    plan = ShardPlan(items, quarantine)

    def reference(records):
        h = hashlib.sha256()
        for r in records:
            h.update(json.dumps(r, sort_keys=True, default=str).encode())
        return h.hexdigest()[:16]

    assert plan.fingerprints(4) == [reference([asdict(it) for it in items if it.shard == s]) for s in range(4)]
    assert plan.digest() == reference([*(asdict(it) for it in items), *(q.to_dict() for q in quarantine)])
    assert plan.digests(4) == (plan.fingerprints(4), plan.digest())


def test_a_shard_job_reads_its_slice_instead_of_planning_and_plans_when_the_slice_is_stale(toy, tmp_path):
    import dataclasses

    root, cfg = toy
    fan = dataclasses.replace(TOY, item=ToyItem)
    plan, ident = fan.identity(root, cfg)
    reference_cfg = replace(cfg, out=str(tmp_path / "reference"))
    reference = [pd.read_parquet(fan.run_shard(root, reference_cfg, i, progress=False)) for i in range(cfg.shards)]

    assert fan.write_slices(cfg, plan, ident, range(cfg.shards)) == cfg.shards
    calls = []
    counting = dataclasses.replace(fan, plan=lambda r, n: calls.append(1) or toy_plan(r, n))
    for i in range(cfg.shards):
        path = counting.run_shard(root, cfg, i, progress=False, expected=ident.shards[i])
        assert path.name == ident.shard_file(i)
        pd.testing.assert_frame_equal(pd.read_parquet(path), reference[i])
    assert calls == []  # no job planned

    index = next(i for i in range(cfg.shards) if plan.shard_items(i))
    slice_file = Path(cfg.out) / "shards/.slices" / f"{ident.shards[index]}.json"
    rows = json.loads(slice_file.read_text())
    rows[0]["value"] += 1  # no longer the items its name stands for
    slice_file.write_text(json.dumps(rows))
    assert fan.read_slice(root, cfg, index, ident.shards[index]) is None
    pd.testing.assert_frame_equal(
        pd.read_parquet(counting.run_shard(root, cfg, index, progress=False, expected=ident.shards[index])),
        reference[index])
    assert calls == [1]  # this job planned

    fan.merge(root, cfg)
    assert not [p for p in (Path(cfg.out) / "shards/.slices").rglob("*") if p.is_file()]  # the merge cleans up
