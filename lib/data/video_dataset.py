"""SSv2 clip loading: a Dataset of clips, size-bucketed batches, and deterministic step-based iteration.

How determinism works, also with worker processes:

* Batches are planned in the main process. ``BucketBatchSampler.epoch_batches(epoch)`` is a pure
  function of ``(seed, epoch)``: items are grouped by frame size (H, W), shuffled within their
  bucket, cut into batches, and the batches of all buckets are shuffled together.
* ``StepBatchSampler`` walks that plan over global steps (step ``s`` is batch ``s % per_epoch`` of
  epoch ``s // per_epoch``) and yields each batch as ``[(index, epoch), ...]`` pairs.
* ``SSv2ClipDataset.__getitem__((index, epoch))`` draws the clip start from an rng seeded with
  ``(seed, epoch, index)``. The epoch travels with the index, so a persistent worker never holds a
  stale epoch, and an item's clip does not depend on which worker decodes it or in what order.

So the batches of a run depend only on the config and the step: ``iterate_steps(cfg, steps,
start_step=k)`` yields exactly what an uninterrupted run yields from step ``k`` on, with any
``num_workers``. ``iterate_steps(..., transform=f)`` runs ``f(step, batch)`` (random crops, resizes,
degradations seeded by the step) in the worker that decoded the batch, so only what the step needs
crosses to the trainer's process (a 256 px crop of 1024 px frames is a sixteenth of their bytes).
"""
from __future__ import annotations

import itertools
import json
import math
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Annotated, Literal, get_args

import numpy as np
import pandas as pd
import torch
from annotated_types import Ge
from torch.utils.data import DataLoader, Dataset, Sampler, default_collate

from lib.archive import resolve
from lib.config import Checked
from lib.data.clips import ClipSpec, clip_indices
from lib.video.decode import BACKENDS, Backend, read_frames

Split = Literal["train", "validation", "test"]
SPLITS: tuple[str, ...] = get_args(Split)
STABLE_KEYS = ("batch_size", "num_workers", "prefetch_factor", "backend")

# rng stream tags, so the sampler's and the clips' streams never share a seed
_SAMPLER_STREAM, _CLIP_STREAM = 0, 1


@dataclass(frozen=True)
class VideoLoaderConfig(Checked):
    """Everything that decides which batches a loader yields (plus how fast: workers, prefetch, pinning).

    ``manifest`` is the ingest manifest (paths inside are relative to its folder). Take
    ``batch_size``/``num_workers``/``prefetch_factor``/``backend`` from ``load_stable_config`` via
    ``with_stable`` rather than hard-coding them.
    """

    manifest: str = "data/interim/ssv2/manifest.parquet"
    split: Split = "train"
    backend: Backend = "decord"
    clip: ClipSpec = field(default_factory=ClipSpec)
    batch_size: Annotated[int, Ge(1)] = 4
    num_workers: Annotated[int, Ge(0)] = 0
    prefetch_factor: Annotated[int, Ge(1)] = 2
    seed: Annotated[int, Ge(0)] = 0
    bucket_by_size: bool = True
    drop_last: bool = True
    pin_memory: bool = False

    def with_stable(self, stable: dict) -> VideoLoaderConfig:
        """Return a copy with batch_size, num_workers, prefetch_factor and backend taken from ``stable``."""
        return replace(self, **{k: stable[k] for k in STABLE_KEYS if k in stable})


def load_stable_config(path: str | Path = "data/loader/stable.json", default: dict | None = None) -> dict:
    """Return the loader settings the ``bench_loader`` stage chose (``batch_size``, ``num_workers``,
    ``prefetch_factor``, ``backend``, plus whatever else it recorded) as a dict.

    A missing file returns a copy of ``default`` when one is given, else raises FileNotFoundError.
    """
    path = Path(path)
    if not path.exists():
        if default is not None:
            return dict(default)
        raise FileNotFoundError(f"{path}: no benchmarked loader settings; run `dvc repro bench_loader` "
                                f"(or pass default=... to load_stable_config)")
    stable = json.loads(path.read_text())
    if not isinstance(stable, dict):
        raise ValueError(f"{path}: expected a JSON object with keys {STABLE_KEYS}, got {type(stable).__name__}")
    missing = [k for k in STABLE_KEYS if k not in stable]
    if missing:
        raise ValueError(f"{path}: missing field(s) {missing}; rerun `dvc repro bench_loader`")
    return stable


class SSv2ClipDataset(Dataset):
    """Clips of the videos of one manifest split.

    ``ds[i]`` (clip drawn for the epoch set by ``set_epoch``) or ``ds[(i, epoch)]`` returns
    ``{"video": uint8 tensor [C=3, T, H, W], "label": class_index (-1 on test), "id": str}``.
    The clip start comes from an rng seeded with ``(seed, epoch, i)``: the same item and epoch give
    the same clip in any process.
    """

    def __init__(self, manifest: str | Path | pd.DataFrame, split: str = "train", *,
                 base_dir: str | Path | None = None, clip: ClipSpec | None = None,
                 backend: str = "decord", seed: int = 0):
        if split not in SPLITS:
            raise ValueError(f"split must be one of {SPLITS}, got {split!r}")
        if backend not in BACKENDS:
            raise ValueError(f"backend must be one of {BACKENDS}, got {backend!r}")
        if isinstance(manifest, pd.DataFrame):
            df, source = manifest, "<DataFrame>"
        else:
            source = Path(manifest)
            if not source.exists():
                raise FileNotFoundError(f"{source}: manifest missing; run `dvc repro ingest_ssv2`")
            df = pd.read_parquet(source)
            base_dir = source.parent if base_dir is None else base_dir
        df = df[df["split"] == split].reset_index(drop=True)
        if df.empty:
            raise ValueError(f"{source}: no rows with split={split!r}")
        if "abs_path" in df.columns:
            paths = [str(p) for p in df["abs_path"]]
        elif base_dir is not None:  # through each row's shard archive, when it has one (lib.shards)
            archives = df["archive"] if "archive" in df.columns else [None] * len(df)
            paths = [resolve(base_dir, a, p) for a, p in zip(archives, df["path"], strict=True)]
        else:
            raise ValueError(f"{source}: manifest rows have relative 'path's; pass base_dir (their folder)")
        self.paths = paths
        self.ids = [str(v) for v in df["id"]]
        self.labels = [int(v) for v in df["class_index"]]
        self.num_frames = [int(v) for v in df["frames"]]
        self._sizes = [(int(h), int(w)) for h, w in zip(df["height"], df["width"], strict=False)]
        self.split, self.clip, self.backend, self.seed = split, clip or ClipSpec(), backend, seed
        self.epoch = 0

    def __len__(self) -> int:
        return len(self.paths)

    def set_epoch(self, epoch: int) -> None:
        """Set the epoch used by plain-int indexing (indexing by ``(i, epoch)`` ignores it)."""
        self.epoch = int(epoch)

    def sizes(self) -> list[tuple[int, int]]:
        """Return the (H, W) frame size of every item, in item order."""
        return list(self._sizes)

    def clip_frames(self, index: int, epoch: int) -> np.ndarray:
        """Return the source frame indices of item ``index``'s clip in ``epoch``."""
        rng = np.random.default_rng([self.seed, epoch, _CLIP_STREAM, index])
        return clip_indices(self.num_frames[index], self.clip, rng)

    def __getitem__(self, key: int | tuple[int, int]) -> dict:
        index, epoch = (key if isinstance(key, tuple) else (key, self.epoch))
        index, epoch = int(index), int(epoch)
        if not 0 <= index < len(self):
            raise IndexError(f"item {index} out of range for {len(self)} items")
        frames = read_frames(self.paths[index], self.clip_frames(index, epoch), self.backend)  # [T, H, W, 3]
        video = torch.from_numpy(frames).permute(3, 0, 1, 2).contiguous()  # [C, T, H, W]
        return {"video": video, "label": self.labels[index], "id": self.ids[index]}


class BucketBatchSampler(Sampler[list[int]]):
    """Batches of item indices whose items share one (H, W) size.

    Each epoch's plan depends only on ``(seed, epoch)``: items are shuffled within their size
    bucket, cut into batches of ``batch_size`` (a bucket's short last batch is dropped when
    ``drop_last``), and the batches of all buckets are shuffled together. ``shuffle=False`` keeps
    manifest order within buckets and buckets in sorted size order.
    """

    def __init__(self, sizes: Sequence[tuple[int, int]], batch_size: int, *, seed: int = 0,
                 drop_last: bool = True, shuffle: bool = True):
        if batch_size < 1:
            raise ValueError(f"batch_size must be >= 1, got {batch_size}")
        buckets: dict[tuple[int, int], list[int]] = {}
        for i, size in enumerate(sizes):
            buckets.setdefault(tuple(size), []).append(i)
        self.buckets = {k: np.asarray(v, dtype=np.int64) for k, v in sorted(buckets.items())}
        self.batch_size, self.seed, self.drop_last, self.shuffle = batch_size, seed, drop_last, shuffle
        self.epoch = 0

    def set_epoch(self, epoch: int) -> None:
        """Choose the epoch whose plan ``__iter__`` yields."""
        self.epoch = int(epoch)

    def epoch_batches(self, epoch: int) -> list[list[int]]:
        """Return the list of batches (lists of item indices) of ``epoch``."""
        rng = np.random.default_rng([self.seed, epoch, _SAMPLER_STREAM])
        batches: list[list[int]] = []
        for items in self.buckets.values():
            order = rng.permutation(items) if self.shuffle else items
            for lo in range(0, len(order), self.batch_size):
                chunk = order[lo: lo + self.batch_size]
                if len(chunk) == self.batch_size or not self.drop_last:
                    batches.append([int(i) for i in chunk])
        if self.shuffle:
            batches = [batches[k] for k in rng.permutation(len(batches))]
        return batches

    def __iter__(self) -> Iterator[list[int]]:
        return iter(self.epoch_batches(self.epoch))

    def __len__(self) -> int:
        """Return the number of batches per epoch."""
        per = math.floor if self.drop_last else math.ceil
        return sum(per(len(v) / self.batch_size) for v in self.buckets.values())


class StepBatchSampler(Sampler[list[tuple[int, int]]]):
    """Walks ``BucketBatchSampler`` plans over global steps ``[start_step, stop_step)``.

    Yields each batch as ``[(index, epoch), ...]`` so workers need no epoch state; ``stop_step=None``
    runs forever. ``set_epoch(e)`` switches to exactly the steps of epoch ``e`` (for epoch loops).
    ``stride`` > 1 visits every stride-th global step (``start_step, start_step + stride, ...``): how
    data-parallel ranks split one global sequence of batches without decoding each other's.
    """

    def __init__(self, batches: BucketBatchSampler, start_step: int = 0, stop_step: int | None = None,
                 stride: int = 1, with_step: bool = False):
        self.batches = batches
        self.with_step = with_step  # keys (index, epoch, step): a per-step transform in the worker needs the step
        if stride < 1:
            raise ValueError(f"stride must be >= 1, got {stride}")
        self.stride = stride
        self.per_epoch = len(batches)
        if self.per_epoch == 0:
            raise ValueError(f"no batches: every size bucket {({k: len(v) for k, v in batches.buckets.items()})} "
                             f"is smaller than batch_size={batches.batch_size} with drop_last; "
                             f"lower batch_size or set drop_last=False")
        if start_step < 0 or (stop_step is not None and stop_step < start_step):
            raise ValueError(f"bad step range [{start_step}, {stop_step})")
        self.start_step, self.stop_step = start_step, stop_step

    def set_epoch(self, epoch: int) -> None:
        """Restrict iteration to the steps of ``epoch``."""
        self.start_step, self.stop_step = epoch * self.per_epoch, (epoch + 1) * self.per_epoch

    def __iter__(self) -> Iterator[list[tuple[int, int]]]:
        start, stop, stride = self.start_step, self.stop_step, self.stride
        steps = itertools.count(start, stride) if stop is None else range(start, stop, stride)
        epoch, plan = -1, []
        for step in steps:
            step_epoch, pos = divmod(step, self.per_epoch)
            if step_epoch != epoch:
                epoch, plan = step_epoch, self.batches.epoch_batches(step_epoch)
            yield [(i, epoch, step) if self.with_step else (i, epoch) for i in plan[pos]]

    def __len__(self) -> int:
        if self.stop_step is None:
            raise TypeError("an infinite StepBatchSampler has no length")
        return len(range(self.start_step, self.stop_step, self.stride))


def make_dataset(cfg: VideoLoaderConfig) -> SSv2ClipDataset:
    """Return the ``SSv2ClipDataset`` that ``cfg`` describes."""
    return SSv2ClipDataset(cfg.manifest, cfg.split, clip=cfg.clip, backend=cfg.backend, seed=cfg.seed)


def _loader(cfg: VideoLoaderConfig, dataset: Dataset, sampler: StepBatchSampler,
            collate_fn: Callable | None = None) -> DataLoader:
    extra = {"prefetch_factor": cfg.prefetch_factor, "persistent_workers": True} if cfg.num_workers > 0 else {}
    return DataLoader(dataset, batch_sampler=sampler, num_workers=cfg.num_workers, pin_memory=cfg.pin_memory,
                      collate_fn=collate_fn, **extra)


StepTransform = Callable[[int, dict], dict]  # (global step, collated batch) -> what the trainer's step reads


class _StepKeyed(Dataset):
    """A dataset read with ``(index, epoch, step)`` keys: each sample carries its batch's global step."""

    def __init__(self, dataset: SSv2ClipDataset):
        self.dataset = dataset

    def __len__(self) -> int:
        return len(self.dataset)

    def __getitem__(self, key: tuple[int, int, int]) -> tuple[int, dict]:
        index, epoch, step = key
        return step, self.dataset[(index, epoch)]


class _TransformCollate:
    """Collate a batch, then apply ``transform(step, batch)`` where the batch was decoded (a worker, or the main
    process without workers); picklable, so any worker start method carries it."""

    def __init__(self, transform: StepTransform):
        self.transform = transform

    def __call__(self, samples: list[tuple[int, dict]]) -> tuple[int, dict]:
        step = samples[0][0]
        return step, self.transform(step, default_collate([sample for _, sample in samples]))


def make_loader(cfg: VideoLoaderConfig, *, infinite: bool = False, start_step: int = 0,
                stop_step: int | None = None, dataset: SSv2ClipDataset | None = None) -> DataLoader:
    """Return a DataLoader of collated batches ``{"video": uint8 [B, C, T, H, W], "label": int64 [B],
    "id": list[str]}``, all items of a batch one size.

    Global step ``s`` is batch ``s % per_epoch`` of epoch ``s // per_epoch``. ``infinite=False``
    yields from ``start_step`` to the end of its epoch; afterwards ``loader.batch_sampler.set_epoch(e)``
    selects a whole epoch ``e`` per pass. ``infinite=True`` yields from ``start_step`` on, forever
    (or up to ``stop_step``). ``dataset`` reuses an already built dataset (it must match ``cfg``).
    """
    dataset = make_dataset(cfg) if dataset is None else dataset
    batches = _bucket_batches(cfg, dataset)
    per_epoch = len(batches)
    if not infinite:
        stop_step = (start_step // max(per_epoch, 1) + 1) * per_epoch
    return _loader(cfg, dataset, StepBatchSampler(batches, start_step, stop_step))


def iterate_steps(cfg: VideoLoaderConfig, steps: int, start_step: int = 0, *, rank: int = 0,
                  world: int = 1, transform: StepTransform | None = None) -> Iterator[tuple[int, dict]]:
    """Yield ``(step, batch)`` for steps ``start_step .. steps-1``, crossing epochs as needed.

    Deterministic given ``cfg``: resuming with ``start_step=k`` yields the same batches (same items,
    same clips) as an uninterrupted run from step ``k`` on, whatever ``num_workers`` is.

    Data parallel: with ``world`` processes, rank ``r``'s step ``s`` is global loader step
    ``s * world + r``, so the ranks together read the single-process sequence once, each batch on one
    rank, and the yielded ``step`` is that global index (seed per-batch randomness with it).

    ``transform``: the batch is ``transform(step, collated batch)``, computed in the worker that decoded it;
    a pure function of its arguments keeps all of the above true.
    """
    if not 0 <= rank < world:
        raise ValueError(f"rank {rank} is not in [0, world={world})")
    if steps <= start_step:
        return
    global_steps = range(start_step * world + rank, steps * world, world)
    dataset = make_dataset(cfg)
    sampler = StepBatchSampler(_bucket_batches(cfg, dataset), global_steps.start, global_steps.stop, world,
                               with_step=transform is not None)
    if transform is None:
        yield from zip(global_steps, _loader(cfg, dataset, sampler), strict=True)
        return
    for step, (loaded_step, batch) in zip(global_steps, _loader(cfg, _StepKeyed(dataset), sampler,
                                                                _TransformCollate(transform)), strict=True):
        if loaded_step != step:  # the sampler and this loop walk the same range: a mismatch is a bug here
            raise RuntimeError(f"iterate_steps: loader gave step {loaded_step} where {step} was due")
        yield step, batch


def _bucket_batches(cfg: VideoLoaderConfig, dataset: SSv2ClipDataset) -> BucketBatchSampler:
    sizes = dataset.sizes() if cfg.bucket_by_size else [(0, 0)] * len(dataset)
    if not cfg.bucket_by_size and cfg.batch_size > 1 and len(set(dataset.sizes())) > 1:
        raise ValueError(f"{cfg.manifest}: split {cfg.split!r} has frame sizes {sorted(set(dataset.sizes()))}; "
                         f"batches of mixed sizes cannot be stacked: set bucket_by_size=True")
    return BucketBatchSampler(sizes, cfg.batch_size, seed=cfg.seed, drop_last=cfg.drop_last)
