"""Tiny SSv2 roots for tests: good videos with moving textures, and a corpus of every kind of bad input."""
from __future__ import annotations

import json
import os
from pathlib import Path

import numpy as np

from lib.ssv2.labels import bracket_template, fill_template, reference_classes
from lib.ssv2.layout import VIDEO_DIR
from lib.video.encode import EncodeSettings, write_video

TEMPLATES = ["Pushing something from left to right", "Moving something up", "Uncovering something"]
H, W = 64, 96  # tests set ingest_ssv2.expected_height to H


def moving_frames(n: int, h: int = H, w: int = W, seed: int = 0) -> list[np.ndarray]:
    """Return n frames of a random texture sliding right 2 px per frame (real temporal structure)."""
    rng = np.random.default_rng(seed)
    # 8x8 blocks: a texture a codec can keep, so decoded frames stay close to their sources
    coarse = rng.integers(0, 255, (h // 8 + 1, (w + 2 * n) // 8 + 1, 3), dtype=np.uint8)
    base = coarse.repeat(8, axis=0).repeat(8, axis=1)[:h, : w + 2 * n]
    return [np.ascontiguousarray(base[:, 2 * n - 2 * i: 2 * n - 2 * i + w]) for i in range(n)]


def write_good(root: Path, vid: str, n: int = 24, h: int = H, w: int = W, fps: int = 12) -> Path:
    """Write a valid VP9 webm for id ``vid``; return its path."""
    path = root / VIDEO_DIR / f"{vid}.webm"
    write_video(path, moving_frames(n, h, w, seed=int(vid) if vid.isdigit() else 0), fps=fps,
                settings=EncodeSettings(keyframe_interval=6))
    return path


def header_only(path: Path) -> bytes:
    """Return the bytes of ``path`` cut a few bytes into its first video packet: a container that
    opens but whose frames cannot decode."""
    import av

    with av.open(str(path)) as c:
        first = next(p for p in c.demux(c.streams.video[0]) if p.pos is not None and p.pos >= 0)
        pos = first.pos
    return path.read_bytes()[: pos + 8]


def entry(vid: str, template: str, objects: list[str] | None = None) -> dict:
    """Return a train/validation entry in SSv2's format."""
    bracketed = bracket_template(template)
    objects = objects or ["a cup"] * bracketed.count("[")
    return {"id": vid, "label": fill_template(bracketed, objects), "template": bracketed, "placeholders": objects}


def write_labels(root: Path, train: list, validation: list, test: list) -> None:
    """Write labels/labels.json (the real 174 classes) and the three split files."""
    labels = root / "labels"
    labels.mkdir(parents=True, exist_ok=True)
    (labels / "labels.json").write_text(json.dumps({c.template: str(c.index) for c in reference_classes()}))
    for name, rows in (("train", train), ("validation", validation), ("test", test)):
        (labels / f"{name}.json").write_text(json.dumps(rows))


def make_good_root(root: Path, n_per_class: int = 2) -> list[str]:
    """A small clean root: n_per_class train videos per template, one validation each, two test; return ids."""
    train, val, test, ids = [], [], [], []
    k = 1
    for t in TEMPLATES:
        for j in range(n_per_class + 1):
            vid = str(k)
            write_good(root, vid, n=18 + 2 * k)
            (train if j < n_per_class else val).append(entry(vid, t))
            ids.append(vid)
            k += 1
    for _ in range(2):
        vid = str(k)
        write_good(root, vid)
        test.append({"id": vid})
        ids.append(vid)
        k += 1
    write_labels(root, train, val, test)
    return ids


# id -> expected quarantine reason
BAD_CASES = {
    "901": "zero_bytes",
    "902": "truncated",
    "903": "not_video",
    "904": "undecodable",
    "905": "wrong_size",
    "906": "too_short",
    "907": "missing_label",
    "908": "missing_video",
    "909": "unknown_template",
    "910": "duplicate_id",
    "911": "path_escape",  # symlink out of the root
    "../../outside": "path_escape",  # id that climbs out
    "912": "bad_label_entry",
}


def make_bad_root(root: Path, outside: Path) -> tuple[list[str], dict[str, str]]:
    """A root with good videos plus one instance of every bad input; return (good ids, BAD_CASES)."""
    good = make_good_root(root, n_per_class=1)
    vdir = root / VIDEO_DIR
    (vdir / "901.webm").write_bytes(b"")
    whole = write_good(root, "902", n=48).read_bytes()
    (vdir / "902.webm").write_bytes(whole[: len(whole) // 2])
    (vdir / "903.webm").write_bytes(b"this is not a video, just text pretending\n" * 50)
    (vdir / "904.webm").write_bytes(header_only(write_good(root, "904", n=12)))
    write_good(root, "905", h=H // 2, w=W)
    write_good(root, "906", n=3)
    write_good(root, "907")
    write_good(root, "909")
    write_good(root, "910")
    outside.mkdir(parents=True, exist_ok=True)
    write_good(outside, "911")
    os.symlink(outside / VIDEO_DIR / "911.webm", vdir / "911.webm")
    labels = root / "labels"
    train = json.loads((labels / "train.json").read_text())
    val = json.loads((labels / "validation.json").read_text())
    t = TEMPLATES[0]
    train += [entry("901", t), entry("902", t), entry("903", t), entry("904", t), entry("905", t),
              entry("906", t), entry("908", t), entry("911", t), entry("../../outside", t),
              {"id": "909", "label": "juggling a cup", "template": "Juggling [something]", "placeholders": ["a cup"]},
              entry("910", t), {"id": "912", "template": 7}]
    val += [entry("910", TEMPLATES[1])]
    (labels / "train.json").write_text(json.dumps(train))
    (labels / "validation.json").write_text(json.dumps(val))
    return good, BAD_CASES


def write_clip_manifest(root: Path, frames: list[int], splits: list[str], h: int = H, w: int = W,
                        classes: list[int] | None = None) -> Path:
    """Write one moving-texture video per entry of ``frames`` (video k: ``frames[k]`` frames, split ``splits[k]``,
    class ``classes[k]`` or 0) under ``root/videos`` and the ingest manifest of them; return the manifest's path."""
    import pandas as pd

    rows = []
    for k, (n, split) in enumerate(zip(frames, splits, strict=True)):
        path = f"videos/{k}.webm"
        write_video(root / path, moving_frames(n, h, w, seed=k), fps=12, settings=EncodeSettings(keyframe_interval=6))
        rows.append({"id": str(k), "split": split, "label": "l", "template": "t",
                     "class_index": classes[k] if classes else 0, "path": path, "frames": n, "fps": 12.0,
                     "width": w, "height": h})
    out = root / "manifest.parquet"
    pd.DataFrame(rows).to_parquet(out)
    return out
