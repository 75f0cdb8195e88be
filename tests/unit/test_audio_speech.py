"""Embedded speech: espeak-ng speaks each labelled id, resampled and normalised, resumable and pruned."""
import os
import subprocess
from dataclasses import replace
from math import gcd

import numpy as np
import pandas as pd
import pytest
import soundfile as sf
from scipy.signal import resample_poly

from lib.audio.speech import (
    ESPEAK_MISSING,
    PEAK,
    SynthSpeechConfig,
    choose_voice,
    plan_speech,
    write_speech,
)
from lib.config import ConfigError, from_dict
from lib.io import DataError

LABELS = {
    "7": "Pushing a red cup from left to right",
    "12": "Moving a pen up",
    "30": "Uncovering a blue box",
}


def write_manifest(path, labels, unlabelled=("40",)):
    rows = [{"id": i, "split": "train" if i != "12" else "validation", "label": t, "template": "x", "class_index": 0,
             "path": f"videos/{i}.webm"} for i, t in labels.items()]
    rows += [{"id": i, "split": "test", "label": None, "template": None, "class_index": -1, "path": f"videos/{i}.webm"}
             for i in unlabelled]
    pd.DataFrame(rows).to_parquet(path, index=False)
    return path


def config(tmp_path, **kw):
    manifest = tmp_path / "manifest.parquet"
    if not manifest.exists():
        write_manifest(manifest, LABELS)
    return SynthSpeechConfig(out=str(tmp_path / "speech"), manifest=str(manifest), **kw)


def mtimes(out):
    return {p.name: p.stat().st_mtime_ns for p in (out / "wavs").glob("*.wav")}


def age_files(out):
    """Set every wav's mtime to a fixed past time, so any rewrite is visible whatever the clock resolution."""
    for p in (out / "wavs").glob("*.wav"):
        os.utime(p, ns=(1_000_000_000, 1_000_000_000))


def test_each_labelled_id_becomes_a_wav_at_the_model_rate(tmp_path):
    cfg = config(tmp_path)
    summary = write_speech(cfg, progress=False)
    out = tmp_path / "speech"
    assert sorted(p.name for p in (out / "wavs").glob("*.wav")) == ["12.wav", "30.wav", "7.wav"]
    meta = pd.read_csv(out / "metadata.csv", dtype={"id": str})
    assert list(meta["id"]) == ["7", "12", "30"]  # numeric id order
    assert dict(zip(meta["id"], meta["text"], strict=False)) == LABELS
    assert dict(zip(meta["id"], meta["split"], strict=False)) == {"7": "train", "12": "validation", "30": "train"}
    for row in meta.itertuples():
        info = sf.info(out / row.path)
        assert (info.samplerate, info.channels, info.subtype) == (16000, 1, "PCM_16")
        assert info.frames / info.samplerate > 0.3
        assert row.seconds == pytest.approx(info.frames / 16000, abs=1e-3)
        wave, _ = sf.read(out / row.path)
        assert np.max(np.abs(wave)) == pytest.approx(PEAK, abs=2 / 32768)
    # the longest text takes longest to say, whatever voice it drew (speeds differ by at most 190/130)
    assert meta.set_index("id")["seconds"]["7"] > meta.set_index("id")["seconds"]["12"]
    quarantine = pd.read_json(out / "quarantine.json", dtype={"id": str})
    assert list(zip(quarantine["id"], quarantine["reason"], strict=False)) == [("40", "no_text")]
    assert summary == {"items": 3, "synthesised": 3, "kept": 0, "quarantined": 1,
                       "seconds": pytest.approx(meta["seconds"].sum(), abs=0.01)}


def test_wav_is_espeak_output_resampled_and_peak_normalised(tmp_path):
    """Re-derive one wav independently: espeak-ng run here, polyphase resampling (scipy), peak scaling."""
    cfg = config(tmp_path, sample_rate=16000)
    write_speech(cfg, progress=False)
    meta = pd.read_csv(tmp_path / "speech/metadata.csv", dtype={"id": str}).set_index("id")
    row = meta.loc["30"]
    raw = tmp_path / "raw.wav"
    subprocess.run(["espeak-ng", "-v", row.voice, "-s", str(row.speed), "-p", str(row.pitch), "-w", str(raw),
                    LABELS["30"]], check=True)
    ref, rate = sf.read(raw)
    assert rate == 22050
    g = gcd(16000, rate)
    ref = resample_poly(ref, 16000 // g, rate // g)
    ref = ref / np.max(np.abs(ref)) * PEAK
    got, _ = sf.read(tmp_path / "speech/wavs/30.wav")
    n = min(ref.size, got.size)
    assert abs(ref.size - got.size) <= 2
    assert np.corrcoef(ref[:n], got[:n])[0, 1] > 0.99


def test_voice_speed_and_pitch_are_a_function_of_seed_and_id(tmp_path):
    cfg = config(tmp_path, speeds=[130, 190], pitches=[30, 70])
    ids = [str(i) for i in range(1, 61)]
    picks = [choose_voice(cfg, i) for i in ids]
    assert picks == [choose_voice(cfg, i) for i in ids]
    assert all(v in cfg.voices and 130 <= s <= 190 and 30 <= p <= 70 for v, s, p in picks)
    assert len({v for v, _, _ in picks}) >= 5 and len({s for _, s, _ in picks}) >= 20
    other_seed = replace(cfg, seed=1)
    assert sum(choose_voice(other_seed, i) != pick for i, pick in zip(ids, picks, strict=False)) >= 50
    # an id's pick does not depend on which other ids the manifest has
    items, _ = plan_speech(cfg)
    write_manifest(tmp_path / "small.parquet", {"30": LABELS["30"]})
    (small,), _ = plan_speech(replace(cfg, manifest=str(tmp_path / "small.parquet")))
    assert small == next(it for it in items if it.id == "30")
    assert (small.voice, small.speed, small.pitch) == choose_voice(cfg, "30")


def test_same_params_give_identical_files(tmp_path):
    cfg = config(tmp_path)
    write_speech(replace(cfg, out=str(tmp_path / "one"), workers=1), progress=False)
    write_speech(replace(cfg, out=str(tmp_path / "two"), workers=2), progress=False)
    for name in ("7.wav", "12.wav", "30.wav"):
        assert (tmp_path / "one/wavs" / name).read_bytes() == (tmp_path / "two/wavs" / name).read_bytes()
    assert (tmp_path / "one/metadata.csv").read_text() == (tmp_path / "two/metadata.csv").read_text()


def test_speed_reaches_espeak(tmp_path):
    cfg = config(tmp_path, voices=["en-us"])
    slow = write_speech(replace(cfg, out=str(tmp_path / "slow"), speeds=[100, 100]), progress=False)
    fast = write_speech(replace(cfg, out=str(tmp_path / "fast"), speeds=[300, 300]), progress=False)
    assert slow["seconds"] > 1.8 * fast["seconds"]


def test_rerun_resynthesises_nothing(tmp_path):
    cfg = config(tmp_path)
    write_speech(cfg, progress=False)
    out = tmp_path / "speech"
    age_files(out)
    before = mtimes(out)
    summary = write_speech(cfg, progress=False)
    assert mtimes(out) == before
    assert summary["synthesised"] == 0 and summary["kept"] == 3


def test_changed_text_resynthesises_only_that_id(tmp_path):
    cfg = config(tmp_path)
    write_speech(cfg, progress=False)
    out = tmp_path / "speech"
    age_files(out)
    old_12 = sf.read(out / "wavs/12.wav")[0]
    write_manifest(tmp_path / "manifest.parquet", {**LABELS, "12": "Moving a pen down"})
    summary = write_speech(cfg, progress=False)
    after = mtimes(out)
    assert after["7.wav"] == after["30.wav"] == 1_000_000_000
    assert after["12.wav"] != 1_000_000_000
    assert summary["synthesised"] == 1
    new_12 = sf.read(out / "wavs/12.wav")[0]
    assert old_12.shape != new_12.shape or not np.allclose(old_12, new_12)
    meta = pd.read_csv(out / "metadata.csv", dtype={"id": str}).set_index("id")
    assert meta.loc["12", "text"] == "Moving a pen down"


def test_changed_voice_settings_resynthesise(tmp_path):
    cfg = config(tmp_path)
    write_speech(cfg, progress=False)
    age_files(tmp_path / "speech")
    summary = write_speech(replace(cfg, sample_rate=22050), progress=False)
    assert summary["synthesised"] == 3
    assert sf.info(tmp_path / "speech/wavs/7.wav").samplerate == 22050


def test_stale_ids_and_stray_files_are_pruned(tmp_path):
    cfg = config(tmp_path)
    write_speech(cfg, progress=False)
    out = tmp_path / "speech"
    (out / "wavs/999.wav").write_bytes(b"left over")
    (out / "wavs/.7.wav.tmp-abc.wav").write_bytes(b"killed mid-write")
    write_manifest(tmp_path / "manifest.parquet", {k: v for k, v in LABELS.items() if k != "30"})
    write_speech(cfg, progress=False)
    assert sorted(p.name for p in (out / "wavs").iterdir()) == ["12.wav", "7.wav"]
    assert list(pd.read_csv(out / "metadata.csv", dtype={"id": str})["id"]) == ["7", "12"]


def test_max_items_takes_the_first_ids(tmp_path):
    write_speech(config(tmp_path, max_items=2), progress=False)
    assert sorted(p.name for p in (tmp_path / "speech/wavs").glob("*.wav")) == ["12.wav", "7.wav"]


def test_missing_espeak_names_the_package(tmp_path, monkeypatch):
    cfg = config(tmp_path)
    monkeypatch.setenv("PATH", str(tmp_path))  # no espeak-ng on this PATH
    with pytest.raises(FileNotFoundError) as err:
        write_speech(cfg, progress=False)
    assert str(err.value) == ESPEAK_MISSING
    assert "apt" not in ESPEAK_MISSING and "Debian package espeak-ng" in ESPEAK_MISSING
    assert not (tmp_path / "speech").exists()


def test_unknown_voice_fails_before_any_work(tmp_path):
    cfg = config(tmp_path, voices=["en-us", "xx-nonexistent"])
    with pytest.raises(ValueError, match=r"synth_speech.voices: espeak-ng has no voice 'xx-nonexistent'"):
        write_speech(cfg, progress=False)
    assert not (tmp_path / "speech").exists()


def test_bad_manifest_and_params_are_named(tmp_path):
    with pytest.raises(FileNotFoundError, match=r"nope.parquet: SSv2 manifest not found; run `dvc repro ingest_ssv2`"):
        plan_speech(SynthSpeechConfig(manifest=str(tmp_path / "nope.parquet")))
    pd.DataFrame({"id": ["1"], "split": ["train"]}).to_parquet(tmp_path / "m.parquet")
    with pytest.raises(DataError, match=r"m.parquet: manifest lacks column\(s\) \['label'\]"):
        plan_speech(SynthSpeechConfig(manifest=str(tmp_path / "m.parquet")))
    with pytest.raises(ConfigError, match=r"synth_speech: speeds must be \[min, max\]"):
        from_dict(SynthSpeechConfig, {"speeds": [200, 100]}, where="synth_speech")
