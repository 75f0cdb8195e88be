"""Embedded speech data: every labelled SSv2 video's label spoken by espeak-ng, keyed by the video id.

Real synthesized speech (not tones) in any sandbox without a download: each id gets a voice, speed and
pitch drawn from its own RNG ``(seed, crc32(id))``, so the choice does not depend on which other ids
exist and audio-visual work can pair ``wavs/<id>.wav`` with the video of the same id. The output is an
audio folder (``wavs/`` + ``metadata.csv`` with a ``split`` column) that :mod:`lib.audio.folder` reads
like any real corpus.

Resumable: ``.synth_state.json`` records the digest (text, voice, speed, pitch, rate, espeak-ng version,
this module's code) each wav was made for; a rerun keeps wavs whose digest still matches, re-synthesises
the rest and deletes wavs of ids no longer wanted.
"""
from __future__ import annotations

import hashlib
import json
import logging
import math
import shutil
import subprocess
import tempfile
import zlib
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Annotated

import numpy as np
import pandas as pd
import soundfile as sf
import soxr
from annotated_types import Doc, Ge, MinLen
from tqdm import tqdm

from lib.config import Checked
from lib.identity import code_digest
from lib.io import (
    DataError,
    UnsafePathError,
    atomic_path,
    atomic_write_json,
    read_json,
    remove_stale_temps,
    remove_unlisted,
    safe_join,
)
from lib.quarantine import QuarantineEntry
from lib.shards import natural_key

log = logging.getLogger("lib.audio.speech")

# Voices of Debian's espeak-ng-data (no mbrola needed); "+fN"/"+mN" are espeak-ng variants.
DEFAULT_VOICES = ["en-us", "en-gb", "en-gb-scotland", "en-029", "en-us+f3", "en-gb+f2", "en+m3", "en-gb-x-rp+f4"]

ESPEAK = "espeak-ng"
ESPEAK_MISSING = "espeak-ng not found: install the Debian package espeak-ng (bash scripts/setup.sh installs it)"
WAV_DIR = "wavs"
METADATA = "metadata.csv"
QUARANTINE = "quarantine.json"
STATE_FILE = ".synth_state.json"
METADATA_COLUMNS = ["id", "split", "text", "voice", "speed", "pitch", "seconds", "sample_rate", "path", "digest"]

PEAK = 0.95  # peak-normalise to -0.45 dBFS: loud enough to be useful, no clipping after 16-bit rounding
SILENT_PEAK = 1e-4  # espeak-ng output quieter than this (-80 dBFS) has nothing in it: quarantined
ESPEAK_TIMEOUT_S = 60.0


@dataclass(frozen=True)
class SynthSpeechConfig(Checked):
    """``synth_speech`` params: which labels to speak, with which voices, at which output rate."""

    out: str = "data/raw/speech_synth"
    manifest: str = "data/interim/ssv2/manifest.parquet"  # SSv2 ingest manifest: id, split, label
    sample_rate: Annotated[int, Ge(8000), Doc("Hz")] = 16000
    voices: Annotated[list[str], MinLen(1), Doc("espeak-ng voices, see `espeak-ng --voices`")] = field(
        default_factory=lambda: list(DEFAULT_VOICES))
    speeds: list[int] = field(default_factory=lambda: [130, 190])  # [min, max] words per minute
    pitches: list[int] = field(default_factory=lambda: [30, 70])  # [min, max] espeak-ng pitch, 0..99
    seed: int = 0
    max_items: Annotated[int, Ge(1)] | None = None  # first N labelled ids in id order; None: all
    workers: Annotated[int, Ge(1)] = 2  # espeak-ng processes at once

    def __post_init__(self) -> None:
        super().__post_init__()
        if len(self.speeds) != 2 or not 80 <= self.speeds[0] <= self.speeds[1] <= 450:
            raise ValueError(f"speeds must be [min, max] words per minute with 80 <= min <= max <= 450, "
                             f"got {self.speeds}")
        if len(self.pitches) != 2 or not 0 <= self.pitches[0] <= self.pitches[1] <= 99:
            raise ValueError(f"pitches must be [min, max] with 0 <= min <= max <= 99, got {self.pitches}")


@dataclass(frozen=True)
class SpeechItem:
    """One utterance to make: the video id it belongs to, its split, the text and how it is spoken."""

    id: str
    split: str
    text: str
    voice: str
    speed: int
    pitch: int


def espeak_executable() -> str:
    """Return the path of espeak-ng; raise FileNotFoundError with the install hint when it is missing."""
    exe = shutil.which(ESPEAK)
    if exe is None:
        raise FileNotFoundError(ESPEAK_MISSING)
    return exe


def espeak_version(exe: str) -> str:
    """Return espeak-ng's version line: part of every digest, since another version speaks differently."""
    proc = subprocess.run([exe, "--version"], capture_output=True, text=True, timeout=ESPEAK_TIMEOUT_S, check=False)
    return proc.stdout.strip().split("  Data at")[0]


def check_voices(exe: str, voices: list[str]) -> None:
    """Speak one word with each voice, so a misspelt voice fails before any work, naming the param."""
    with tempfile.TemporaryDirectory(prefix="espeak-check-") as tmp:
        for voice in voices:
            proc = subprocess.run([exe, "-v", voice, "-w", str(Path(tmp) / "v.wav"), "--", "test"],
                                  capture_output=True, text=True, timeout=ESPEAK_TIMEOUT_S, check=False)
            if proc.returncode != 0 or "does not exist" in proc.stderr:
                raise ValueError(f"synth_speech.voices: espeak-ng has no voice {voice!r} ({proc.stderr.strip()}); "
                                 f"list them with `espeak-ng --voices` (variants: `espeak-ng --voices=variant`, "
                                 f"written VOICE+NAME, e.g. en-us+f3)")


def choose_voice(cfg: SynthSpeechConfig, video_id: str) -> tuple[str, int, int]:
    """Return (voice, words per minute, pitch) for ``video_id``: a pure function of (seed, id, ranges)."""
    rng = np.random.default_rng([cfg.seed, zlib.crc32(video_id.encode())])
    voice = cfg.voices[int(rng.integers(len(cfg.voices)))]
    speed = int(rng.integers(cfg.speeds[0], cfg.speeds[1] + 1))
    pitch = int(rng.integers(cfg.pitches[0], cfg.pitches[1] + 1))
    return voice, speed, pitch


def clean_text(label: object) -> str:
    """Return the label as one line of text ('' for a missing label); espeak-ng reads it as given."""
    if label is None or (isinstance(label, float) and math.isnan(label)):
        return ""
    return " ".join(str(label).split())


def read_manifest_labels(path: str | Path) -> pd.DataFrame:
    """Return ``id, split, label`` of the SSv2 manifest at ``path``, ids as strings in natural id order."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"{path}: SSv2 manifest not found; run `dvc repro ingest_ssv2` first "
                                f"or point synth_speech.manifest at an ingest manifest")
    try:
        frame = pd.read_parquet(path)
    except Exception as err:  # pyarrow raises several types for a file that is not parquet
        raise DataError(f"{path}: not a readable parquet file ({err})") from err
    missing = [c for c in ("id", "split", "label") if c not in frame.columns]
    if missing:
        raise DataError(f"{path}: manifest lacks column(s) {missing}; expected an SSv2 ingest manifest "
                        f"(id, split, label, ...)")
    frame = frame[["id", "split", "label"]].assign(id=lambda f: f["id"].astype(str))
    dupes = sorted(set(frame["id"][frame["id"].duplicated()]))
    if dupes:
        raise DataError(f"{path}: ids listed more than once: {dupes[:5]}; re-run ingest_ssv2")
    return frame.iloc[sorted(range(len(frame)), key=lambda i: natural_key(frame["id"].iloc[i]))].reset_index(drop=True)


def plan_speech(cfg: SynthSpeechConfig) -> tuple[list[SpeechItem], list[QuarantineEntry]]:
    """Return the utterances to make (labelled ids, in id order, at most ``max_items``) and the ids set aside."""
    items: list[SpeechItem] = []
    quarantine: list[QuarantineEntry] = []
    for row in read_manifest_labels(cfg.manifest).itertuples(index=False):
        rel = f"{WAV_DIR}/{row.id}.wav"
        text = clean_text(row.label)
        if not text:
            quarantine.append(QuarantineEntry(row.id, rel, "no_text", "label is empty", str(row.split)))
            continue
        try:
            safe_join(Path(cfg.out) / WAV_DIR, f"{row.id}.wav")
        except UnsafePathError as err:
            quarantine.append(QuarantineEntry(row.id, rel, "path_escape", str(err), str(row.split)))
            continue
        if cfg.max_items is not None and len(items) >= cfg.max_items:
            continue
        voice, speed, pitch = choose_voice(cfg, row.id)
        items.append(SpeechItem(row.id, str(row.split), text, voice, speed, pitch))
    return items, quarantine


def item_digest(item: SpeechItem, sample_rate: int, engine: str) -> str:
    """Return a short digest of everything that decides the bytes of ``item``'s wav."""
    payload = [item.text, item.voice, item.speed, item.pitch, sample_rate, engine]
    return hashlib.sha256(json.dumps(payload).encode()).hexdigest()[:16]


def speak(exe: str, item: SpeechItem, sample_rate: int) -> np.ndarray:
    """Run espeak-ng on ``item`` (text as an argument after ``--``, no shell) and return float32 mono at
    ``sample_rate``, peak-normalised to :data:`PEAK`; an all-silent result comes back as all zeros."""
    with tempfile.TemporaryDirectory(prefix="espeak-") as tmp:
        raw = Path(tmp) / "speech.wav"
        cmd = [exe, "-v", item.voice, "-s", str(item.speed), "-p", str(item.pitch), "-w", str(raw), "--", item.text]
        proc = subprocess.run(cmd, capture_output=True, text=True, timeout=ESPEAK_TIMEOUT_S, check=False)
        if proc.returncode != 0 or not raw.is_file():
            raise RuntimeError(f"espeak-ng failed on id {item.id} (voice {item.voice}): {proc.stderr.strip()}")
        wave, rate = sf.read(raw, dtype="float32", always_2d=True)
    wave = wave.mean(axis=1)
    if rate != sample_rate:
        wave = soxr.resample(wave, rate, sample_rate, quality="HQ").astype(np.float32)
    peak = float(np.max(np.abs(wave))) if wave.size else 0.0
    if peak < SILENT_PEAK:
        return np.zeros_like(wave)
    return (wave * (PEAK / peak)).astype(np.float32)


def wav_path(out: str | Path, video_id: str) -> Path:
    """Return ``<out>/wavs/<id>.wav``; raises UnsafePathError if the id escapes."""
    return safe_join(Path(out) / WAV_DIR, f"{video_id}.wav")


def _prune(cfg: SynthSpeechConfig, wanted: dict[str, str]) -> None:
    """Delete wavs made for another digest (or no longer wanted), then record what this run will make.

    Recording before synthesising is what makes a killed run resumable: any wav present later was
    written for the recorded digest.
    """
    out = Path(cfg.out)
    state_path = out / STATE_FILE
    old = read_json(state_path) if state_path.is_file() else {}
    wav_dir = out / WAV_DIR
    wav_dir.mkdir(parents=True, exist_ok=True)
    remove_stale_temps(wav_dir)
    for path in wav_dir.glob("*.wav"):
        vid = path.name[: -len(".wav")]
        if vid not in wanted or old.get(vid) != wanted[vid]:
            path.unlink()
    atomic_write_json(state_path, wanted, indent=None)


def _make(exe: str, cfg: SynthSpeechConfig, item: SpeechItem) -> tuple[SpeechItem, bool, str | None]:
    """Write ``item``'s wav unless it exists; return (item, whether it was synthesised, quarantine detail)."""
    path = wav_path(cfg.out, item.id)
    if path.exists():  # written atomically, and _prune removed any made for another digest
        return item, False, None
    wave = speak(exe, item, cfg.sample_rate)
    if not np.any(wave):
        return item, True, f"peak below {SILENT_PEAK} for text {item.text!r}"
    with atomic_path(path) as tmp:
        sf.write(tmp, wave, cfg.sample_rate, subtype="PCM_16", format="WAV")
    return item, True, None


def write_speech(cfg: SynthSpeechConfig, *, progress: bool = True) -> dict[str, int | float]:
    """Synthesise every planned utterance under ``cfg.out``; write metadata.csv and quarantine.json; return
    counts (items, synthesised, kept, quarantined, seconds)."""
    exe = espeak_executable()
    check_voices(exe, cfg.voices)
    engine = f"{espeak_version(exe)}|{code_digest(__name__)}"
    items, quarantine = plan_speech(cfg)
    digests = {it.id: item_digest(it, cfg.sample_rate, engine) for it in items}
    _prune(cfg, digests)

    made = 0
    good: list[SpeechItem] = []
    bar = tqdm(total=len(items), desc="synth_speech", unit="utt", disable=not progress)
    with ThreadPoolExecutor(max_workers=cfg.workers) as pool:  # espeak-ng runs as subprocesses: threads suffice
        for item, synthesised, problem in pool.map(lambda it: _make(exe, cfg, it), items):
            made += synthesised
            if problem is None:
                good.append(item)
            else:
                quarantine.append(QuarantineEntry(item.id, f"{WAV_DIR}/{item.id}.wav", "empty_speech", problem,
                                                  item.split))
            bar.update()
    bar.close()

    rows = []
    for it in good:
        info = sf.info(wav_path(cfg.out, it.id))
        rows.append({"id": it.id, "split": it.split, "text": it.text, "voice": it.voice, "speed": it.speed,
                     "pitch": it.pitch, "seconds": round(info.frames / info.samplerate, 4),
                     "sample_rate": info.samplerate, "path": f"{WAV_DIR}/{it.id}.wav", "digest": digests[it.id]})
    remove_unlisted(Path(cfg.out) / WAV_DIR, {f"{it.id}.wav" for it in good})
    with atomic_path(Path(cfg.out) / METADATA) as tmp:
        pd.DataFrame(rows, columns=METADATA_COLUMNS).to_csv(tmp, index=False)
    quarantine.sort(key=lambda q: (q.reason, natural_key(q.id)))
    atomic_write_json(Path(cfg.out) / QUARANTINE, [q.to_dict() for q in quarantine])
    return {"items": len(good), "synthesised": made, "kept": len(items) - made, "quarantined": len(quarantine),
            "seconds": round(sum(r["seconds"] for r in rows), 2)}
