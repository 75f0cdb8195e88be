import json
import os
import shutil
from pathlib import Path

import pandas as pd
import pytest

from lib.archive import members
from lib.shards import shard_of
from lib.ssv2.ingest import (
    IngestSSv2Config,
    merge_shards,
    plan_ingest,
    read_manifest,
    run_shard,
    target_size,
)
from lib.video.probe import probe_video
from tests.helpers.ssv2_data import H, make_bad_root, make_good_root


def ingest(root, out, **kw):
    cfg = IngestSSv2Config(out=str(out), expected_height=H, **{"shards": 3, **kw})
    for i in range(cfg.shards):
        run_shard(root, cfg, i, progress=False)
    return cfg, merge_shards(root, cfg)


@pytest.fixture(scope="module")
def bad_run(tmp_path_factory):
    base = tmp_path_factory.mktemp("bad")
    good, cases = make_bad_root(base / "root", base / "outside")
    cfg, summary = ingest(base / "root", base / "out")
    return base, good, cases, cfg, summary


def test_every_bad_input_is_quarantined_with_its_reason(bad_run):
    base, good, cases, cfg, summary = bad_run
    quarantine = json.loads((base / "out/quarantine.json").read_text())
    by_id = {}
    for q in quarantine:
        by_id.setdefault(q["id"], set()).add(q["reason"])
    for vid, reason in cases.items():
        assert by_id.get(vid) == {reason}, vid
    assert sum(1 for q in quarantine if q["reason"] == "duplicate_id") == 2  # both copies, both splits


def test_good_videos_all_survive_bad_neighbours(bad_run):
    base, good, cases, cfg, summary = bad_run
    manifest = read_manifest(base / "out")
    assert sorted(manifest["id"], key=int) == sorted(good, key=int)
    assert summary["videos"] == len(good)
    assert summary["quarantined"] == len(cases) + 1  # the duplicate counts twice
    for p in manifest["abs_path"]:
        assert probe_video(p).frames > 0
    # nothing a bad video started is left in the training copies: one archive per shard (3), holding exactly
    # the good videos, and no loose copy or staging folder
    archives = sorted((base / "out/archives").iterdir())
    assert len(archives) == cfg.shards and not (base / "out/videos").exists() and not (base / "out/.staging").exists()
    assert sorted(m for a in archives for m in members(a)) == sorted(f"videos/{v}.webm" for v in good)
    assert {Path(p).parent.parent.name for p in manifest["abs_path"]} <= {a.name for a in archives}


def test_manifest_rows_carry_labels_and_probe_fields(bad_run):
    base, good, *_ = bad_run
    m = pd.read_parquet(base / "out/manifest.parquet")
    row = m[m["id"] == "1"].iloc[0]
    assert row["split"] == "train" and row["template"] == "Pushing something from left to right"
    assert row["class_index"] == 93  # index in the real labels.json
    assert row["label"] == "pushing a cup from left to right" and list(row["placeholders"]) == ["a cup"]
    assert (row["probe_width"], row["probe_height"], row["probe_fps"], row["probe_codec"]) == (96, 64, 12.0, "vp9")
    assert row["probe_frames"] == 20 and row["frames"] == 20
    test_rows = m[m["split"] == "test"]
    assert (test_rows["class_index"] == -1).all() and test_rows["label"].isna().all()


def test_training_copy_resamples_and_resizes(tmp_path):
    make_good_root(tmp_path / "root", n_per_class=1)
    cfg, _ = ingest(tmp_path / "root", tmp_path / "out", fps=6, short_side=32, shards=1)
    m = read_manifest(tmp_path / "out")
    for r in m.itertuples():
        assert (r.width, r.height, r.fps) == (48, 32, 6.0)
        assert r.frames == (r.probe_frames + 1) // 2
        p = probe_video(r.abs_path)
        assert (p.width, p.height, p.frames) == (48, 32, r.frames)


def test_keep_mode_points_at_the_source(tmp_path):
    make_good_root(tmp_path / "root", n_per_class=1)
    ingest(tmp_path / "root", tmp_path / "out", mode="keep", shards=2)
    m = read_manifest(tmp_path / "out")
    assert not (tmp_path / "out/videos").exists() and not (tmp_path / "out/archives").exists()
    assert m["archive"].isna().all()
    for r in m.itertuples():
        assert os.path.samefile(r.abs_path, tmp_path / "root" / r.source_path)


def test_shards_partition_the_plan_stably(tmp_path):
    make_good_root(tmp_path / "root")
    plan = plan_ingest(tmp_path / "root", 4)
    ids = [i.id for s in range(4) for i in plan.shard_items(s)]
    assert sorted(ids) == sorted(i.id for i in plan.items)
    assert all(shard_of(i.id, 4) == i.shard for i in plan.items)
    before = plan.fingerprints(4)
    (tmp_path / "root/20bn-something-something-v2/1.webm").write_bytes(b"changed")
    after = plan_ingest(tmp_path / "root", 4).fingerprints(4)
    changed = [s for s in range(4) if before[s] != after[s]]
    assert changed == [shard_of("1", 4)]  # only the shard holding the changed video


def test_missing_root_says_what_to_do(tmp_path):
    with pytest.raises(FileNotFoundError, match="ssv2.root"):
        plan_ingest(tmp_path / "nowhere", 2)


def test_merge_without_all_shards_names_the_fix(tmp_path):
    make_good_root(tmp_path / "root", n_per_class=1)
    cfg = IngestSSv2Config(out=str(tmp_path / "out"), expected_height=H, shards=2)
    run_shard(tmp_path / "root", cfg, 0, progress=False)
    with pytest.raises(FileNotFoundError, match=r"shard-00001-[0-9a-f]{16}\.parquet: shard missing; "
                                                r"run `snakemake --cores N ingest_ssv2`"):
        merge_shards(tmp_path / "root", cfg)


def test_merge_refuses_a_missing_archive_and_drops_other_plans(tmp_path):
    make_good_root(tmp_path / "root", n_per_class=1)
    cfg, _ = ingest(tmp_path / "root", tmp_path / "out", shards=2)
    archives = sorted((tmp_path / "out/archives").iterdir())
    stale = tmp_path / "out/archives/shard-00007-0123456789abcdef.zip"
    stale.write_bytes(b"an archive of another plan")
    (tmp_path / "out/.staging/0123456789abcdef").mkdir(parents=True)  # a killed shard's leftovers
    merge_shards(tmp_path / "root", cfg)
    assert sorted((tmp_path / "out/archives").iterdir()) == archives and not (tmp_path / "out/.staging").exists()
    archives[1].unlink()
    with pytest.raises(FileNotFoundError, match=rf"{archives[1].name}: the output archive of a finished shard is "
                                                rf"missing; delete .*{archives[1].stem}\.parquet"):
        merge_shards(tmp_path / "root", cfg)


def test_a_rerun_gives_byte_identical_archives(tmp_path):
    """Deterministic archives: DVC's hash of an unchanged shard does not move when it is recomputed."""
    make_good_root(tmp_path / "root", n_per_class=1)
    ingest(tmp_path / "root", tmp_path / "out", shards=2)
    first = {p.name: p.read_bytes() for p in (tmp_path / "out/archives").iterdir()}
    shutil.rmtree(tmp_path / "out")
    ingest(tmp_path / "root", tmp_path / "out", shards=2)
    assert {p.name: p.read_bytes() for p in (tmp_path / "out/archives").iterdir()} == first


@pytest.mark.parametrize("w, h, short, out", [(427, 240, 120, (214, 120)), (320, 240, None, (320, 240)),
                                              (240, 427, 128, (128, 228))])
def test_target_size_keeps_aspect_with_even_sides(w, h, short, out):
    assert target_size(w, h, short) == out
