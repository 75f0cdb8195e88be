"""Embedded SSv2-format data: a dataset in SSv2's own layout whose videos really show their templates.

The plan (ids, classes, splits, object names, durations, sizes) is drawn from one seeded RNG and
written as the real label files; each video is rendered by :mod:`lib.ssv2.motion` from its own
RNG ``(seed, id)``, so videos can be rendered in any order, in parallel, and resumed.
"""
from __future__ import annotations

import json
import math
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Annotated, Literal

import numpy as np
from annotated_types import Gt
from tqdm import tqdm

from lib.config import Checked, ConfigError
from lib.identity import code_digest
from lib.io import atomic_write_json, read_json, remove_stale_temps
from lib.ssv2.labels import bracket_template, fill_template, reference_classes
from lib.ssv2.layout import CLASSES_FILE, SPLIT_FILES, VIDEO_SUFFIX, label_path, video_path
from lib.video.encode import EncodeSettings, write_video

DEFAULT_TEMPLATES = [
    "Pushing something from left to right",
    "Pushing something from right to left",
    "Moving something up",
    "Moving something down",
    "Moving something towards the camera",
    "Moving something away from the camera",
    "Turning the camera left while filming something",
    "Turning the camera right while filming something",
    "Something falling like a rock",
    "Spinning something so it continues spinning",
    "Covering something with something",
    "Uncovering something",
]

OBJECT_NAMES = [
    "a red cup", "a blue box", "a pen", "a tennis ball", "a book", "a phone", "a remote control",
    "a green bottle", "a wallet", "a spoon", "a candle", "a toy car", "a coin", "a mug", "a sponge",
    "an orange", "a matchbox", "a paper cup", "a marker", "a bowl", "a towel", "a lid", "a notebook",
    "a plate", "a glass", "a stapler", "a roll of tape", "a shoe", "a key", "a lemon",
]


@dataclass(frozen=True)
class SynthSSv2Config(Checked):
    """``synth_ssv2`` params: how many videos, of which classes, at what size and length."""

    out: str = "data/raw/ssv2_synth"
    seed: int = 0
    count: int = 96
    templates: list[str] = field(default_factory=lambda: list(DEFAULT_TEMPLATES))
    class_balance: Literal["real", "uniform"] = "real"  # real: proportional to the real dataset's counts
    min_per_class: int = 6
    split_fractions: dict[str, float] = field(
        default_factory=lambda: {"train": 0.7, "validation": 0.15, "test": 0.15})
    height: int = 240
    widths: list[int] = field(default_factory=lambda: [320, 427])
    fps: int = 12
    min_seconds: Annotated[float, Gt(0)] = 2.0
    max_seconds: float = 4.0  # >= min_seconds
    crf: int = 32
    encoder_speed: int = 8
    keyframe_interval: int = 12
    workers: int = 2

    def __post_init__(self) -> None:
        super().__post_init__()
        if set(self.split_fractions) - set(SPLIT_FILES):
            raise ValueError(f"split_fractions keys must be among {sorted(SPLIT_FILES)}")
        if abs(sum(self.split_fractions.values()) - 1.0) > 1e-6:
            raise ValueError(f"split_fractions must add up to 1, got {sum(self.split_fractions.values())}")
        if self.min_seconds > self.max_seconds:
            raise ValueError("need 0 < min_seconds <= max_seconds")
        if self.count < len(self.templates) * self.min_per_class:
            raise ValueError(f"count={self.count} is below len(templates) * min_per_class = "
                             f"{len(self.templates) * self.min_per_class}; raise count or lower min_per_class")


@dataclass(frozen=True)
class PlannedVideo:
    """One video to render and its label-file entry."""

    id: str
    split: str
    template: str  # labels.json form, no brackets
    placeholders: tuple[str, ...]
    width: int
    n_frames: int


def class_counts(cfg: SynthSSv2Config) -> dict[str, int]:
    """Return how many videos each template gets: ``min_per_class`` each, the rest by the balance rule.

    With ``real`` balance the remainder follows the real dataset's class frequencies (largest
    remainder rounding), so per-class counts mirror SSv2's long tail on the chosen subset.
    """
    from lib.ssv2.motion import SUPPORTED_TEMPLATES

    known = {c.template: c.videos for c in reference_classes()}
    for t in cfg.templates:
        if t not in known:
            raise ConfigError(f"synth_ssv2.templates: {t!r} is not an SSv2 template "
                              "(see lib/ssv2/reference/templates.tsv)")
        if t not in SUPPORTED_TEMPLATES:
            raise ConfigError(f"synth_ssv2.templates: {t!r} has no renderer; supported: {sorted(SUPPORTED_TEMPLATES)}")
    weights = np.array([known[t] if cfg.class_balance == "real" else 1 for t in cfg.templates], dtype=float)
    spare = cfg.count - cfg.min_per_class * len(cfg.templates)
    share = weights / weights.sum() * spare
    extra = np.floor(share).astype(int)
    for i in np.argsort(-(share - extra), kind="stable")[: spare - extra.sum()]:
        extra[i] += 1
    return {t: cfg.min_per_class + int(e) for t, e in zip(cfg.templates, extra, strict=False)}


def plan_dataset(cfg: SynthSSv2Config) -> list[PlannedVideo]:
    """Return every video to make, drawn deterministically from ``cfg.seed``.

    Splits are stratified per class; ids are a seeded permutation of 1..count (real ids are
    integers too), so label files are not sorted by class.
    """
    from lib.ssv2.motion import SUPPORTED_TEMPLATES

    rng = np.random.default_rng(cfg.seed)
    counts = class_counts(cfg)
    ids = rng.permutation(np.arange(1, cfg.count + 1))
    splits = [s for s in SPLIT_FILES if cfg.split_fractions.get(s, 0) > 0]
    planned: list[PlannedVideo] = []
    k = 0
    for template, n in counts.items():
        quotas = _split_quota(n, [cfg.split_fractions[s] for s in splits])
        class_splits = [s for s, q in zip(splits, quotas, strict=False) for _ in range(q)]
        rng.shuffle(class_splits)
        for split in class_splits:
            n_obj = SUPPORTED_TEMPLATES[template]
            names = tuple(str(x) for x in rng.choice(OBJECT_NAMES, size=n_obj, replace=False))
            seconds = rng.uniform(cfg.min_seconds, cfg.max_seconds)
            planned.append(PlannedVideo(
                id=str(int(ids[k])), split=split, template=template, placeholders=names,
                width=int(rng.choice(cfg.widths)), n_frames=max(2, int(round(seconds * cfg.fps)))))
            k += 1
    return sorted(planned, key=lambda p: int(p.id))


def _split_quota(n: int, fractions: list[float]) -> list[int]:
    # Largest remainder, but every split with a positive fraction gets at least one video when n allows,
    # so small classes still appear in validation.
    raw = [f * n for f in fractions]
    quota = [math.floor(r) for r in raw]
    for i in sorted(range(len(raw)), key=lambda i: -(raw[i] - quota[i]))[: n - sum(quota)]:
        quota[i] += 1
    for i, q in enumerate(quota):
        if q == 0 and n >= len(quota):
            j = int(np.argmax(quota))
            quota[j] -= 1
            quota[i] += 1
    return quota


def label_files(plan: list[PlannedVideo]) -> dict[str, object]:
    """Return the contents of labels.json and each split file for ``plan``, in SSv2's own format."""
    classes = {c.template: str(c.index) for c in reference_classes()}
    files: dict[str, object] = {CLASSES_FILE: classes}
    for split, name in SPLIT_FILES.items():
        rows = [p for p in plan if p.split == split]
        if split == "test":
            files[name] = [{"id": p.id} for p in rows]
        else:
            files[name] = [_entry(p) for p in rows]
    return files


def _entry(p: PlannedVideo) -> dict[str, object]:
    template = bracket_template(p.template)
    return {"id": p.id, "label": fill_template(template, list(p.placeholders)),
            "template": template, "placeholders": list(p.placeholders)}


def render_video(cfg: SynthSSv2Config, p: PlannedVideo) -> Path:
    """Render and encode one planned video (skipped when already complete); return its path."""
    from lib.ssv2.motion import render_clip

    path = video_path(cfg.out, p.id)
    if path.exists():  # written atomically, so existing means complete: resume
        return path
    rng = np.random.default_rng([cfg.seed, int(p.id)])
    frames = render_clip(p.template, rng, height=cfg.height, width=p.width, n_frames=p.n_frames)
    settings = EncodeSettings(codec="libvpx-vp9", crf=cfg.crf, keyframe_interval=cfg.keyframe_interval,
                              speed=cfg.encoder_speed)
    write_video(path, iter(frames), fps=cfg.fps, settings=settings)
    return path


STATE_FILE = ".synth_state.json"


def _fingerprint(cfg: SynthSSv2Config, p: PlannedVideo, code: str) -> str:
    return json.dumps([code, cfg.seed, cfg.height, cfg.fps, cfg.crf, cfg.encoder_speed, cfg.keyframe_interval,
                       p.template, p.width, p.n_frames])


def _prune_stale_videos(cfg: SynthSSv2Config, plan: list[PlannedVideo]) -> None:
    """Delete videos left by an earlier run with other params, then record what this run will make.

    The stage's outs persist (so a killed run resumes); this keeps a resumed run from mixing in
    videos rendered for another plan.
    """
    state_path = Path(cfg.out) / STATE_FILE
    code = code_digest(__name__)  # this module's import closure decides every video's pixels and bytes
    wanted = {p.id: _fingerprint(cfg, p, code) for p in plan}
    old = read_json(state_path) if state_path.is_file() else {}
    video_dir = video_path(cfg.out, "0").parent
    video_dir.mkdir(parents=True, exist_ok=True)
    remove_stale_temps(video_dir)
    for path in video_dir.glob(f"*{VIDEO_SUFFIX}"):
        vid = path.name[: -len(VIDEO_SUFFIX)]
        if wanted.get(vid) is None or old.get(vid) != wanted[vid]:
            path.unlink()
    atomic_write_json(state_path, wanted, indent=None)


def _render_star(args: tuple[SynthSSv2Config, PlannedVideo]) -> str:
    return str(render_video(*args))


def write_dataset(cfg: SynthSSv2Config, *, progress: bool = True) -> list[PlannedVideo]:
    """Write the whole synthetic dataset under ``cfg.out``; return the plan.

    Label files go first (atomically) so an interrupted run resumes on the same plan; videos
    already present are not rendered again.
    """
    plan = plan_dataset(cfg)
    _prune_stale_videos(cfg, plan)
    for name, content in label_files(plan).items():
        atomic_write_json(label_path(cfg.out, name), content)
    jobs = [(cfg, p) for p in plan]
    bar = tqdm(total=len(jobs), desc="synth_ssv2 videos", unit="video", disable=not progress)
    if cfg.workers <= 1:
        for job in jobs:
            _render_star(job)
            bar.update()
    else:
        with ProcessPoolExecutor(max_workers=cfg.workers) as pool:
            for _ in pool.map(_render_star, jobs, chunksize=4):
                bar.update()
    bar.close()
    return plan
