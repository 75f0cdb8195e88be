"""Audio folder scan: good files found recursively with ids and splits, every bad file quarantined with its reason."""
import os
import zlib

import numpy as np
import pandas as pd
import pytest
import soundfile as sf

from lib.audio.folder import AudioFolderConfig, hash_split, load_audio, scan_audio_folder
from lib.audio.reasons import AUDIO_REASONS, describe
from lib.io import DataError


def sine(freq, seconds, rate, amp=0.5):
    t = np.arange(round(seconds * rate)) / rate
    return (amp * np.sin(2 * np.pi * freq * t)).astype(np.float32)


def make_folder(root, outside):
    """Three good files (one a stereo flac in a subfolder) and one of each bad kind; return expected reasons."""
    (root / "sub/deeper").mkdir(parents=True)
    sf.write(root / "a.wav", sine(440, 1.0, 16000), 16000)
    sf.write(root / "sub/b.flac", np.stack([sine(440, 1.5, 22050), sine(440, 1.5, 22050, amp=0.25)], axis=1), 22050)
    sf.write(root / "sub/deeper/c.wav", sine(1000, 0.5, 8000), 8000, subtype="PCM_16")
    (root / "corrupt.wav").write_bytes(b"RIFF but not really a wave file" * 20)
    (root / "empty.flac").write_bytes(b"")
    sf.write(root / "short.wav", sine(440, 0.1, 16000), 16000)
    sf.write(root / "silent.wav", np.zeros(16000, np.float32), 16000)
    sf.write(root / "long.wav", sine(440, 3.0, 16000), 16000)
    sf.write(root / "dup.wav", sine(440, 1.0, 16000), 16000)
    sf.write(root / "dup.flac", sine(440, 1.0, 16000), 16000)
    sf.write(root / "whole.flac", sine(300, 2.0, 16000), 16000)
    whole = (root / "whole.flac").read_bytes()
    (root / "truncated.flac").write_bytes(whole[: len(whole) // 2])
    (root / "whole.flac").unlink()
    (root / "notes.txt").write_text("not audio, not listed")
    sf.write(root / ".hidden.wav", sine(440, 1.0, 16000), 16000)
    outside.mkdir()
    sf.write(outside / "x.wav", sine(440, 1.0, 16000), 16000)
    os.symlink(outside / "x.wav", root / "escape.wav")
    os.symlink(outside, root / "linked_dir")  # a folder link out of the root is never entered
    return {"corrupt": {"not_audio"}, "empty": {"zero_bytes"}, "short": {"too_short"}, "silent": {"silent"},
            "long": {"too_long"}, "dup": {"duplicate_id"}, "truncated": {"unreadable_audio"},
            "escape": {"path_escape"}}


@pytest.fixture
def folder(tmp_path):
    expected = make_folder(tmp_path / "root", tmp_path / "outside")
    return AudioFolderConfig(root=str(tmp_path / "root"), max_seconds=2.0), expected


def test_scan_finds_good_files_and_quarantines_the_rest(folder):
    cfg, expected = folder
    scan = scan_audio_folder(cfg)
    files = scan.files.set_index("id")
    assert list(scan.files["id"]) == ["a", "sub/b", "sub/deeper/c"]
    assert list(files["path"]) == ["a.wav", "sub/b.flac", "sub/deeper/c.wav"]
    assert list(files["sample_rate"]) == [16000, 22050, 8000]
    assert list(files["channels"]) == [1, 2, 1]
    assert files["seconds"].tolist() == pytest.approx([1.0, 1.5, 0.5])
    assert all(os.path.isabs(p) and os.path.isfile(p) for p in files["abs_path"])
    reasons = {}
    for q in scan.quarantine:
        reasons.setdefault(q.id, set()).add(q.reason)
    assert reasons == expected
    dup_paths = sorted(q.path for q in scan.quarantine if q.reason == "duplicate_id")
    assert dup_paths == ["dup.flac", "dup.wav"]
    assert {q.reason for q in scan.quarantine} & set(AUDIO_REASONS)  # new codes, documented
    assert all(describe(q.reason) for q in scan.quarantine)  # KeyError for an undocumented code


def test_hash_split_is_stable_and_follows_fractions(folder):
    cfg, _ = folder
    fractions = {"train": 0.8, "validation": 0.1, "test": 0.1}
    ids = [f"spk{i % 17}/utt{i}" for i in range(3000)]
    splits = [hash_split(i, fractions) for i in ids]
    share = pd.Series(splits).value_counts(normalize=True)
    assert share["train"] == pytest.approx(0.8, abs=0.03) and share["test"] == pytest.approx(0.1, abs=0.02)
    # crc32 bucket of the id alone: independent of the other ids and of the run
    assert hash_split("a", fractions) == ("train" if zlib.crc32(b"a") % 10000 < 8000 else
                                          "validation" if zlib.crc32(b"a") % 10000 < 9000 else "test")
    scan = scan_audio_folder(cfg)
    assert dict(zip(scan.files["id"], scan.files["split"], strict=False)) == {
        i: hash_split(i, cfg.split_fractions) for i in ("a", "sub/b", "sub/deeper/c")}


def test_split_file_with_paths_names_and_splits_the_clips(tmp_path):
    root = tmp_path / "root"
    (root / "wavs").mkdir(parents=True)
    for vid in ("7", "12", "30"):
        sf.write(root / f"wavs/{vid}.wav", sine(440, 1.0, 16000), 16000)
    pd.DataFrame({"id": ["7", "12", "99"], "split": ["train", "validation", "train"],
                  "path": ["wavs/7.wav", "wavs/12.wav", "wavs/99.wav"], "text": ["x", "y", "z"]}).to_csv(
        root / "metadata.csv", index=False)
    scan = scan_audio_folder(AudioFolderConfig(root=str(root)))
    assert dict(zip(scan.files["id"], scan.files["split"], strict=False)) == {"7": "train", "12": "validation"}
    assert sorted((q.id, q.reason) for q in scan.quarantine) == [("99", "missing_audio"), ("wavs/30", "not_in_split")]
    # the same folder without the split file: ids are relative paths, splits by hash
    scan = scan_audio_folder(AudioFolderConfig(root=str(root), split_file=None))
    assert list(scan.files["id"]) == ["wavs/7", "wavs/12", "wavs/30"] and not scan.quarantine


def test_split_file_keyed_by_id(tmp_path):
    root = tmp_path / "root"
    (root / "spk1").mkdir(parents=True)
    sf.write(root / "spk1/u1.flac", sine(440, 1.0, 16000), 16000)
    sf.write(root / "spk1/u2.flac", sine(440, 1.0, 16000), 16000)
    (root / "splits.csv").write_text("id,split\nspk1/u1,test\nspk1/u2,train\n")
    scan = scan_audio_folder(AudioFolderConfig(root=str(root), split_file="splits.csv"))
    assert dict(zip(scan.files["id"], scan.files["split"], strict=False)) == {"spk1/u1": "test", "spk1/u2": "train"}


def test_bad_split_file_and_missing_root_are_named(tmp_path):
    root = tmp_path / "root"
    root.mkdir()
    (root / "metadata.csv").write_text("name,fold\na,train\n")
    with pytest.raises(DataError, match=r"metadata.csv: split file lacks column\(s\) \['id', 'split'\]"):
        scan_audio_folder(AudioFolderConfig(root=str(root)))
    with pytest.raises(FileNotFoundError, match=r"nowhere: audio root is not a folder; set audio.root"):
        scan_audio_folder(AudioFolderConfig(root=str(tmp_path / "nowhere")))


def test_load_audio_downmixes_and_resamples(folder):
    cfg, _ = folder
    wave = load_audio(os.path.join(cfg.root, "sub/b.flac"), 16000)  # stereo 22050 Hz, amplitudes 0.5 and 0.25
    assert wave.dtype == np.float32 and wave.ndim == 1
    assert abs(wave.size - 24000) <= 2
    spectrum = np.abs(np.fft.rfft(wave * np.hanning(wave.size)))
    assert np.fft.rfftfreq(wave.size, 1 / 16000)[np.argmax(spectrum)] == pytest.approx(440, abs=1)
    middle = wave[2000:-2000]
    assert np.max(np.abs(middle)) == pytest.approx(0.375, abs=0.01)  # mean of the two channels
    with pytest.raises(DataError, match=r"corrupt.wav: cannot read audio"):
        load_audio(os.path.join(cfg.root, "corrupt.wav"), 16000)
