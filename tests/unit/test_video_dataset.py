"""Clip dataset, size-bucketed batches, step-based iteration: shapes, coverage, determinism, resume."""
import json
import os
from dataclasses import replace

import pandas as pd
import pytest
import torch

from lib.data.clips import ClipSpec
from lib.data.video_dataset import (
    BucketBatchSampler,
    SSv2ClipDataset,
    VideoLoaderConfig,
    iterate_steps,
    load_stable_config,
    make_loader,
)
from lib.video.encode import EncodeSettings, write_video
from tests.helpers.ssv2_data import moving_frames

SIZES = {(64, 96): 7, (64, 80): 5}  # train items per size


@pytest.fixture(scope="module")
def manifest(tmp_path_factory):
    """A tiny manifest in a tmp dir: 12 train videos of two sizes (10..32 frames), 2 validation."""
    root = tmp_path_factory.mktemp("clips")
    rows, k = [], 1
    for (h, w), n in SIZES.items():
        for j in range(n + 1):
            frames = 10 + 2 * k
            path = f"videos/{k}.webm"
            write_video(root / path, moving_frames(frames, h, w, seed=k), fps=12,
                        settings=EncodeSettings(keyframe_interval=6))
            rows.append({"id": str(k), "split": "train" if j < n else "validation", "label": f"l{k}",
                         "template": "t", "class_index": k % 3, "path": path, "frames": frames, "fps": 12.0,
                         "width": w, "height": h})
            k += 1
    out = root / "manifest.parquet"
    pd.DataFrame(rows).to_parquet(out)
    return out


def cfg_for(manifest, **kw):
    base = {"manifest": str(manifest), "batch_size": 2, "clip": ClipSpec(4, 2), "seed": 3}
    return VideoLoaderConfig(**{**base, **kw})


def ids_of(batches):
    return [tuple(b["id"]) for b in batches]


def test_item_shape_dtype_and_determinism(manifest):
    ds = SSv2ClipDataset(manifest, "train", clip=ClipSpec(4, 2), seed=3)
    assert len(ds) == 12 and set(ds.sizes()) == set(SIZES)
    item = ds[(0, 5)]
    assert item["video"].dtype == torch.uint8 and item["video"].shape == (3, 4, 64, 96)
    assert item["id"] == "1" and item["label"] == 1
    assert torch.equal(item["video"], ds[(0, 5)]["video"])  # same (seed, epoch, index): same clip
    ds.set_epoch(5)
    assert torch.equal(item["video"], ds[0]["video"])  # int indexing uses the set epoch
    starts = {int(ds.clip_frames(11, e)[0]) for e in range(30)}
    assert len(starts) > 1  # the start changes with the epoch


def test_dataset_from_dataframe(manifest):
    df = pd.read_parquet(manifest)
    with pytest.raises(ValueError, match="base_dir"):
        SSv2ClipDataset(df, "validation")
    ds = SSv2ClipDataset(df, "validation", base_dir=manifest.parent, clip=ClipSpec(3, 1, "uniform"))
    assert len(ds) == 2 and ds[0]["video"].shape == (3, 3, 64, 96) and ds[1]["video"].shape == (3, 3, 64, 80)
    with pytest.raises(FileNotFoundError, match="ingest_ssv2"):
        SSv2ClipDataset(manifest.parent / "nope.parquet")


def test_bucket_sampler_plan():
    sizes = [(1, 1)] * 7 + [(2, 2)] * 5
    s = BucketBatchSampler(sizes, 2, seed=0, drop_last=True)
    assert len(s) == 3 + 2
    for epoch in range(4):
        s.set_epoch(epoch)
        batches = list(s)
        assert len(batches) == len(s)
        assert all(len({sizes[i] for i in b}) == 1 and len(b) == 2 for b in batches)
        flat = [i for b in batches for i in b]
        assert len(flat) == len(set(flat))  # nobody twice
    assert s.epoch_batches(0) == s.epoch_batches(0) != s.epoch_batches(1)
    keep = BucketBatchSampler(sizes, 2, seed=0, drop_last=False)
    assert len(keep) == 4 + 3
    assert sorted(i for b in keep.epoch_batches(2) for i in b) == list(range(12))
    plain = BucketBatchSampler(sizes, 5, shuffle=False, drop_last=False)
    assert plain.epoch_batches(0) == [[0, 1, 2, 3, 4], [5, 6], [7, 8, 9, 10, 11]]


def test_loader_epoch_covers_every_item_once_one_size_per_batch(manifest):
    cfg = cfg_for(manifest, drop_last=False)
    loader = make_loader(cfg)
    sizes = dict(zip(loader.dataset.ids, loader.dataset.sizes(), strict=False))
    for epoch in range(2):
        loader.batch_sampler.set_epoch(epoch)
        batches = list(loader)
        assert len(batches) == len(loader) == 4 + 3
        seen = [i for b in batches for i in b["id"]]
        assert sorted(seen) == sorted(loader.dataset.ids)  # every item exactly once
        for b in batches:
            assert len({sizes[i] for i in b["id"]}) == 1
            B, C, T, H, W = b["video"].shape
            assert (3, 4, sizes[b["id"][0]]) == (C, T, (H, W)) and len(b["id"]) == B
            assert b["video"].dtype == torch.uint8 and b["label"].dtype == torch.int64


def test_iterate_steps_deterministic_and_resumable(manifest):
    cfg = cfg_for(manifest)  # drop_last: 3 + 2 = 5 batches per epoch
    full = [(s, b) for s, b in iterate_steps(cfg, 13)]
    assert [s for s, _ in full] == list(range(13))
    again = list(iterate_steps(cfg, 13))
    assert ids_of(b for _, b in again) == ids_of(b for _, b in full)
    assert all(torch.equal(a["video"], b["video"]) for (_, a), (_, b) in zip(full, again, strict=False))
    # epochs differ, and each epoch's batches hold distinct items
    assert ids_of(b for _, b in full[:5]) != ids_of(b for _, b in full[5:10])
    for e in range(2):
        seen = [i for _, b in full[5 * e: 5 * e + 5] for i in b["id"]]
        assert len(seen) == len(set(seen)) == 10
    for start in (3, 5, 7, 12):  # mid-epoch, at an epoch boundary, last step
        resumed = list(iterate_steps(cfg, 13, start_step=start))
        assert [s for s, _ in resumed] == list(range(start, 13))
        assert ids_of(b for _, b in resumed) == ids_of(b for _, b in full[start:])
        assert all(torch.equal(a["video"], b["video"]) for (_, a), (_, b) in zip(resumed, full[start:], strict=False))
    assert list(iterate_steps(cfg, 5, start_step=5)) == []
    # the finite loader from a mid-epoch step yields the rest of that epoch
    rest = list(make_loader(cfg, start_step=7))
    assert ids_of(rest) == ids_of(b for _, b in full[7:10])


def test_ranks_split_the_single_process_sequence(manifest):
    cfg = cfg_for(manifest)
    full = list(iterate_steps(cfg, 12))
    ranks = [list(iterate_steps(cfg, 6, rank=r, world=2)) for r in range(2)]
    # rank r's step s is global step 2s + r: together the ranks read every batch once, across epochs
    for r, got in enumerate(ranks):
        assert [s for s, _ in got] == [2 * s + r for s in range(6)]
        assert ids_of(b for _, b in got) == ids_of(b for _, b in full[r::2])
    # resuming rank 1 at step 4 yields the tail of its own sequence
    tail = list(iterate_steps(cfg, 6, start_step=4, rank=1, world=2))
    assert [s for s, _ in tail] == [9, 11] and ids_of(b for _, b in tail) == ids_of(b for _, b in ranks[1][4:])
    with pytest.raises(ValueError, match="rank 2"):
        list(iterate_steps(cfg, 6, rank=2, world=2))


def test_workers_give_the_same_batches(manifest):
    cfg = cfg_for(manifest)
    serial = [b for _, b in iterate_steps(cfg, 8, start_step=2)]
    parallel = [b for _, b in iterate_steps(replace(cfg, num_workers=2, prefetch_factor=2), 8, start_step=2)]
    assert ids_of(parallel) == ids_of(serial)
    assert all(torch.equal(a["video"], b["video"]) for a, b in zip(serial, parallel, strict=False))
    loader = make_loader(replace(cfg, num_workers=2))
    assert loader.persistent_workers and loader.prefetch_factor == 2
    assert not make_loader(cfg).persistent_workers


def test_pyav_backend_gives_the_same_batches(manifest):
    cfg = cfg_for(manifest)
    a = [b for _, b in iterate_steps(cfg, 4)]
    b = [b for _, b in iterate_steps(replace(cfg, backend="pyav"), 4)]
    assert ids_of(a) == ids_of(b) and all(torch.equal(x["video"], y["video"]) for x, y in zip(a, b, strict=False))


def test_mixed_sizes_need_bucketing(manifest):
    with pytest.raises(ValueError, match="bucket_by_size=True"):
        make_loader(cfg_for(manifest, bucket_by_size=False))
    one = list(make_loader(cfg_for(manifest, bucket_by_size=False, batch_size=1, drop_last=False)))
    assert len(one) == 12


def test_too_few_items_for_a_batch(manifest):
    with pytest.raises(ValueError, match="drop_last=False"):
        make_loader(cfg_for(manifest, split="validation", batch_size=2))


def test_config_validation():
    VideoLoaderConfig()
    for bad in ({"split": "dev"}, {"backend": "cv2"}, {"batch_size": 0}, {"num_workers": -1},
                {"prefetch_factor": 0}, {"clip": (8, 2)}, {"drop_last": 1}, {"batch_size": True}):
        field = next(iter(bad))
        with pytest.raises(ValueError, match=f"^{field}: "):
            VideoLoaderConfig(**bad)


def test_load_stable_config(tmp_path):
    path = tmp_path / "stable.json"
    with pytest.raises(FileNotFoundError, match="dvc repro bench_loader"):
        load_stable_config(path)
    assert load_stable_config(path, default={"num_workers": 0}) == {"num_workers": 0}
    stable = {"batch_size": 8, "num_workers": 6, "prefetch_factor": 4, "backend": "pyav", "clips_per_s": 123.0}
    path.write_text(json.dumps(stable))
    assert load_stable_config(path) == stable
    cfg = VideoLoaderConfig().with_stable(stable)
    assert (cfg.batch_size, cfg.num_workers, cfg.prefetch_factor, cfg.backend) == (8, 6, 4, "pyav")
    path.write_text(json.dumps({"batch_size": 8}))
    with pytest.raises(ValueError, match="num_workers"):
        load_stable_config(path)


def _mark(step, batch):
    """A step transform: keeps the ids and the step it was called with, drops the frames (module level: picklable)."""
    return {"step": step, "id": list(batch["id"]), "pid": os.getpid(), "frames": tuple(batch["video"].shape)}


@pytest.mark.parametrize("workers", [0, 2])
def test_a_step_transform_sees_each_batch_with_its_global_step(manifest, workers):
    cfg = replace(cfg_for(manifest), num_workers=workers)
    plain = list(iterate_steps(cfg, 12, start_step=1))
    for rank in (0, 1):
        got = list(iterate_steps(cfg, 6, start_step=1, rank=rank, world=2, transform=_mark))
        steps = [s for s, _ in got]
        assert steps == [2 * s + rank for s in range(1, 6)] and [b["step"] for _, b in got] == steps
        # the same batches as without the transform, each transformed where it was decoded
        assert [b["id"] for _, b in got] == [list(b["id"]) for s, b in plain if s in steps]
        assert all(b["frames"] == tuple(plain[s - 1][1]["video"].shape) for s, b in got)
        assert all((b["pid"] != os.getpid()) == bool(workers) for _, b in got)
