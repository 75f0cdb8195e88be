"""SSv2 ingestion: plan (label-level checks), per-shard probe + training copy, merge to one manifest.

The plan is pure and cheap (label files + a directory listing), so every shard job recomputes it
and takes its own slice. This module holds only what is SSv2's: the plan, one video's probe and training
copy, the manifest's columns and the merge's last step; :data:`FANOUT` hands them to the shared fan-out
skeleton (``lib.shards``), which writes the digest-named shards and ``manifest.parquet``, ``quarantine.json``,
``summary.json``.
"""
from __future__ import annotations

import os
from collections import Counter
from dataclasses import dataclass
from pathlib import Path
from typing import Annotated, Literal

import numpy as np
import pandas as pd
from annotated_types import Ge
from PIL import Image

from lib import archive
from lib.config import Checked
from lib.io import SafeRoot, UnsafePathError, is_within, remove_unlisted, safe_join
from lib.quarantine import QuarantineEntry, QuarantineError
from lib.shards import ARCHIVE_COLUMN, FanOut, ShardPlan, natural_key, result_counts, shard_of
from lib.shards import QUARANTINE as QUARANTINE  # re-exported: readers of the outputs name them from here
from lib.shards import SUMMARY as SUMMARY
from lib.ssv2.labels import (
    BadEntry,
    LabelEntry,
    normalize_template,
    read_classes,
    read_split,
)
from lib.ssv2.layout import SPLIT_FILES, VIDEO_DIR, VIDEO_SUFFIX
from lib.ssv2.layout import SSv2Source as SSv2Source  # re-exported: the fan-out names its source from here
from lib.video.encode import EncodeSettings, VideoWriter
from lib.video.probe import probe_video


@dataclass(frozen=True)
class IngestSSv2Config(Checked):
    """``ingest_ssv2`` params: sharding, the training copy, and what counts as a bad video."""

    out: str = "data/interim/ssv2"
    shards: Annotated[int, Ge(1)] = 4
    cores: int = 2  # snakemake --cores used by the DVC stage
    # reencode: training copy with the settings below; keep: point at the source
    mode: Literal["reencode", "keep"] = "reencode"
    short_side: int | None = None  # training copy's shorter side in pixels; None keeps the size
    fps: int | None = None  # training copy's frame rate; None keeps it
    keyframe_interval: int = 6  # frames between keyframes in the copy: small = fast random access
    codec: str = "libvpx-vp9"
    suffix: str = ".webm"
    crf: int = 30
    encoder_speed: int = 8
    expected_height: int | None = 240  # real SSv2 is 240 px high; None accepts any height
    min_width: int = 32
    max_width: int = 1920
    min_frames: int = 8
    min_seconds: float = 1.0

    def encode_settings(self) -> EncodeSettings:
        """Return the encoder settings of the training copy."""
        return EncodeSettings(codec=self.codec, crf=self.crf, keyframe_interval=self.keyframe_interval,
                              speed=self.encoder_speed)


MANIFEST = "manifest.parquet"
COPY_DIR = "videos"


# ---------------------------------------------------------------------------------------------
# plan


@dataclass(frozen=True)
class PlannedItem:
    """A video that passed the label-level checks and will be probed."""

    id: str
    split: str
    label: str | None
    template: str | None  # as in labels.json (brackets removed)
    template_raw: str | None  # as in the split file, with [ ] placeholders
    class_index: int
    placeholders: tuple[str, ...]
    source: str  # relative to the root
    bytes: int
    mtime_ns: int
    shard: int


IngestPlan = ShardPlan[PlannedItem]


def plan_ingest(root: str | Path, shards: int) -> IngestPlan:
    """Read the label files and list the videos of an SSv2 root; return what to probe and what to quarantine.

    Label-level quarantine: malformed entries, duplicate ids (every copy), unknown templates, ids or
    symlinks that escape the root, label entries without a video, videos without a label entry.
    """
    root = Path(root)
    video_dir = root / VIDEO_DIR
    if not video_dir.is_dir():
        raise FileNotFoundError(
            f"{video_dir}: no SSv2 video folder. Point ssv2.root in params.yaml at an SSv2 download "
            f"(with {VIDEO_DIR}/ and labels/) or run `dvc repro synth_ssv2` for the embedded data.")
    classes = read_classes(root)
    quarantine: list[QuarantineEntry] = []
    entries: list[LabelEntry] = []
    for split in SPLIT_FILES:
        good, bad = read_split(root, split)
        entries.extend(good)
        quarantine.extend(_bad_entry(b) for b in bad)

    on_disk = _list_videos(video_dir)
    counts = Counter(e.id for e in entries)
    seen_ids: set[str] = set()
    items: list[PlannedItem] = []
    guard = SafeRoot(root)
    for e in entries:
        seen_ids.add(e.id)
        rel = f"{VIDEO_DIR}/{e.id}{VIDEO_SUFFIX}"
        if counts[e.id] > 1:
            quarantine.append(QuarantineEntry(e.id, rel, "duplicate_id",
                                              f"id appears {counts[e.id]} times in the label files", e.split))
            continue
        try:
            path = guard.join(rel)
        except UnsafePathError as err:
            quarantine.append(QuarantineEntry(e.id, rel, "path_escape", str(err), e.split))
            continue
        class_index = -1
        template = None
        if e.template is not None:
            template = normalize_template(e.template)
            if template not in classes:
                quarantine.append(QuarantineEntry(e.id, rel, "unknown_template",
                                                  f"{e.template!r} is not in labels/labels.json", e.split))
                continue
            class_index = classes[template]
        if e.id not in on_disk:
            quarantine.append(QuarantineEntry(e.id, rel, "missing_video", f"{rel} does not exist", e.split))
            continue
        st = path.stat()
        items.append(PlannedItem(id=e.id, split=e.split, label=e.label, template=template, template_raw=e.template,
                                 class_index=class_index, placeholders=tuple(e.placeholders), source=rel,
                                 bytes=st.st_size, mtime_ns=st.st_mtime_ns, shard=shard_of(e.id, shards)))
    for vid in sorted(on_disk.keys() - seen_ids):
        rel = f"{VIDEO_DIR}/{on_disk[vid]}"
        if not is_within(root, root / rel):
            quarantine.append(QuarantineEntry(vid, rel, "path_escape", "symlink resolves outside the root"))
        else:
            quarantine.append(QuarantineEntry(vid, rel, "missing_label", "id is in no label file"))
    items.sort(key=lambda it: natural_key(it.id))
    return ShardPlan(items, quarantine)


def _list_videos(video_dir: Path) -> dict[str, str]:
    with os.scandir(video_dir) as it:
        names = [e.name for e in it if e.name.endswith(VIDEO_SUFFIX) and not e.name.startswith(".")]
    return {n[: -len(VIDEO_SUFFIX)]: n for n in names}


def _bad_entry(b: BadEntry) -> QuarantineEntry:
    return QuarantineEntry(b.id, f"labels/{SPLIT_FILES[b.split]}#{b.position}", "bad_label_entry", b.detail, b.split)


# ---------------------------------------------------------------------------------------------
# per-video work


def target_size(width: int, height: int, short_side: int | None) -> tuple[int, int]:
    """Return (width, height) scaled so the shorter side is ``short_side`` (even numbers, for yuv420p)."""
    if short_side is None:
        return width, height
    scale = short_side / min(width, height)
    w = max(2, int(round(width * scale / 2)) * 2)
    h = max(2, int(round(height * scale / 2)) * 2)
    return w, h


class _TrainingCopy:
    """Frame sink that resamples the frame rate, resizes, and encodes the training copy."""

    def __init__(self, dst: Path, src_fps: float, cfg: IngestSSv2Config):
        self.cfg = cfg
        self.out_fps = cfg.fps or max(1, int(round(src_fps)))
        # Timestamps are rounded by the container (ms in webm); snapping each frame to the nearest
        # output slot within half a source period keeps exactly one frame per slot.
        self.snap = 0.5 * min(1.0, self.out_fps / src_fps) if src_fps > 0 else 0.5
        self.writer = VideoWriter(dst, fps=self.out_fps, settings=cfg.encode_settings())
        self.next_slot = 0
        self.t0: float | None = None
        self.size: tuple[int, int] | None = None

    def push(self, rgb: np.ndarray, t: float) -> None:
        if self.t0 is None:
            self.t0 = t
        slot = int(np.floor((t - self.t0) * self.out_fps + self.snap))
        if slot < self.next_slot:  # a lower output rate drops this frame
            return
        self.next_slot = slot + 1
        h, w = rgb.shape[:2]
        tw, th = target_size(w, h, self.cfg.short_side)
        if (tw, th) != (w, h):
            rgb = np.asarray(Image.fromarray(rgb).resize((tw, th), Image.Resampling.BICUBIC))
        self.size = (tw, th)
        self.writer.write(rgb)


def ingest_video(root: Path, out: Path, item: PlannedItem, cfg: IngestSSv2Config) -> dict:
    """Probe one video (full decode) and write its training copy; return its manifest row.

    Raises :class:`QuarantineError` for a bad video; no partial copy is left behind.
    """
    src = safe_join(root, item.source)
    copy: _TrainingCopy | None = None
    dst = out / COPY_DIR / f"{item.id}{cfg.suffix}"

    def on_frame(rgb: np.ndarray, t: float, stream_fps: float) -> None:
        nonlocal copy, checked
        if not checked:
            _check_size(rgb.shape[1], rgb.shape[0], cfg)
            checked = True
            if cfg.mode == "reencode":
                copy = _TrainingCopy(dst, stream_fps, cfg)
        if copy is not None:
            copy.push(rgb, t)

    checked = False
    try:
        probe = probe_video(src, on_frame=on_frame)
        if probe.frames < cfg.min_frames or probe.duration_s < cfg.min_seconds:
            raise QuarantineError("too_short", f"{probe.frames} frames, {probe.duration_s:.2f}s; "
                                  f"need >= {cfg.min_frames} frames and >= {cfg.min_seconds}s")
        if copy is not None:
            copy.writer.commit()
    except BaseException:
        if copy is not None:
            copy.writer.abort()
        raise
    row = _base_row(item)
    row.update({f"probe_{k}": v for k, v in probe.to_dict().items()})
    if copy is not None:
        row.update(path=os.path.relpath(dst, out), frames=copy.writer.frames, fps=float(copy.out_fps),
                   width=copy.size[0], height=copy.size[1])
    else:
        row.update(path=os.path.relpath(src, out), frames=probe.frames, fps=probe.fps,
                   width=probe.width, height=probe.height)
    return row


def _check_size(width: int, height: int, cfg: IngestSSv2Config) -> None:
    if cfg.expected_height is not None and height != cfg.expected_height:
        raise QuarantineError("wrong_size", f"{width}x{height}: height must be {cfg.expected_height}")
    if not cfg.min_width <= width <= cfg.max_width:
        raise QuarantineError("wrong_size", f"{width}x{height}: width outside [{cfg.min_width}, {cfg.max_width}]")


def _base_row(item: PlannedItem) -> dict:
    return {"id": item.id, "split": item.split, "label": item.label, "template": item.template,
            "template_raw": item.template_raw, "class_index": item.class_index, "placeholders": list(item.placeholders),
            "source_path": item.source}


# ---------------------------------------------------------------------------------------------
# shards and merge (the loop, the shard files and the verified merge are lib.shards's)

SHARD_COLUMNS = ["id", "split", "label", "template", "template_raw", "class_index", "placeholders", "source_path",
                 "path", "frames", "fps", "width", "height", "probe_frames", "probe_fps", "probe_width", "probe_height",
                 "probe_duration_s", "probe_declared_duration_s", "probe_codec", "probe_bytes",
                 "reason", "detail"]


def _video_worker(cfg: IngestSSv2Config):
    out = Path(cfg.out)
    return lambda root, item: ingest_video(root, out, item, cfg)


def _finish(root: Path, cfg: IngestSSv2Config, good: pd.DataFrame, quarantine: list[dict]) -> dict:
    """Delete loose training copies (the layout before per-shard archives: the copies are in the archives now,
    which the skeleton keeps exactly the plan's of); return the summary."""
    remove_unlisted(Path(cfg.out) / COPY_DIR, set())
    return {"root": str(root), "videos": int(len(good)), **result_counts(good, quarantine), "mode": cfg.mode}


FANOUT = FanOut(
    name="ingest_ssv2", rule_prefix="ssv2", entry="stages.ingest_ssv2",
    source=("ssv2", SSv2Source), config=("ingest_ssv2", IngestSSv2Config),
    plan=plan_ingest, worker=_video_worker, quarantine_row=_base_row, columns=lambda cfg: SHARD_COLUMNS,
    table=MANIFEST, finish=_finish, item=PlannedItem, unit="video", mem_mb=1500,
    archive=lambda cfg: cfg.mode == "reencode",  # keep mode writes no copies: its rows point into the root
    int_columns=("frames", "width", "height", "probe_frames", "probe_width", "probe_height", "probe_bytes",
                 "class_index"))
run_shard = FANOUT.run_shard  # (root, cfg, index, *, progress=True): one shard's parquet
merge_shards = FANOUT.merge  # (root, cfg): the manifest, quarantine and summary; returns the summary


def video_paths(out: str | Path, manifest: pd.DataFrame) -> list[str]:
    """Return each row's video as a path readers open (``lib.archive.open_binary``): through its shard's
    archive (reencode mode) or to the source (keep mode), absolute."""
    archives = manifest[ARCHIVE_COLUMN] if ARCHIVE_COLUMN in manifest else [None] * len(manifest)
    return [archive.resolve(out, a, p) for a, p in zip(archives, manifest["path"], strict=True)]


def read_manifest(out: str | Path) -> pd.DataFrame:
    """Return the manifest with an extra absolute ``abs_path`` column for readers (see :func:`video_paths`)."""
    df = pd.read_parquet(Path(out) / MANIFEST)
    df["abs_path"] = video_paths(out, df)
    return df
