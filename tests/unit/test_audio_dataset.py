"""Training crops: shapes, wave/mel alignment, batches a pure function of (seed, step), exact resume."""
import numpy as np
import pandas as pd
import pytest
import soundfile as sf
import torch

from lib.audio.dataset import AudioCropDataset, iterate_audio_steps
from lib.audio.features import MelConfig, log_mel
from lib.audio.folder import AudioFolderConfig, scan_audio_folder
from lib.io import DataError

MEL = MelConfig(sample_rate=8000, n_fft=256, hop_length=64, n_mels=32)
CROP = 20  # frames: 1280 samples = 0.16 s


@pytest.fixture(scope="module")
def files(tmp_path_factory):
    """Seven train clips of distinct tones and lengths (one shorter than a crop), two validation clips."""
    root = tmp_path_factory.mktemp("audio")
    rows = []
    for k in range(9):
        seconds = 0.1 if k == 3 else 0.3 + 0.1 * k
        t = np.arange(int(seconds * 8000)) / 8000
        sf.write(root / f"c{k}.wav", (0.5 * np.sin(2 * np.pi * (200 + 100 * k) * t)).astype(np.float32), 8000)
        rows.append({"id": f"c{k}", "split": "validation" if k >= 7 else "train", "path": f"c{k}.wav"})
    pd.DataFrame(rows).to_csv(root / "metadata.csv", index=False)
    return scan_audio_folder(AudioFolderConfig(root=str(root), sample_rate=8000, min_seconds=0.05)).files


def dataset(files, **kw):
    return AudioCropDataset(files, "train", mel=MEL, crop_frames=CROP, **kw)


def test_batch_shapes_and_alignment(files):
    ds = dataset(files)
    assert len(ds) == 7 and ds.crop_samples == CROP * 64
    b = ds.batch(0, 4)
    assert b["wave"].shape == (4, 1280) and b["wave"].dtype == torch.float32
    assert b["mel"].shape == (4, 32, CROP) and b["mel"].dtype == torch.float32
    for i, (clip_id, offset) in enumerate(zip(b["ids"], b["offsets"], strict=False)):
        source = ds.waves[ds.ids.index(clip_id)]
        n = min(1280, source.size - offset)
        np.testing.assert_array_equal(b["wave"][i, :n].numpy(), source[offset: offset + n])
        assert int(b["length"][i]) == n
        # the mel is the librosa log-mel of the crop, first CROP centred frames
        np.testing.assert_allclose(b["mel"][i].numpy(), log_mel(b["wave"][i].numpy(), MEL)[:, :CROP], atol=2e-3)


def test_short_clip_is_zero_padded(files):
    ds = dataset(files)
    short = ds.ids.index("c3")  # 0.1 s = 800 samples < 1280
    wave, n = ds.crop(short, 0)
    assert n == 800 and ds.max_offset(short) == 0
    np.testing.assert_array_equal(wave[:800], ds.waves[short])
    assert not wave[800:].any()
    item = ds[short]
    assert item["id"] == "c3" and item["length"] == 800 and item["mel"].shape == (32, CROP)


def test_each_epoch_visits_every_clip_once(files):
    ds = dataset(files, seed=3)
    ids = [i for step in range(7) for i in ds.batch(step, 2)["ids"]]  # 14 samples = 2 epochs of 7
    assert sorted(ids[:7]) == sorted(ds.ids) == sorted(ids[7:])
    assert ids[:7] != ids[7:]  # a new order each epoch


def test_batches_are_a_function_of_seed_and_step(files):
    a, b = dataset(files, seed=5), dataset(files, seed=5)
    steps = [0, 3, 11]
    from_a = {s: a.batch(s, 3) for s in steps}
    from_b = {s: b.batch(s, 3) for s in reversed(steps)}  # drawn in another order
    for s in steps:
        assert from_a[s]["ids"] == from_b[s]["ids"] and from_a[s]["offsets"] == from_b[s]["offsets"]
        assert torch.equal(from_a[s]["wave"], from_b[s]["wave"]) and torch.equal(from_a[s]["mel"], from_b[s]["mel"])
    other = dataset(files, seed=6)
    assert [other.batch(s, 3)["ids"] for s in range(4)] != [a.batch(s, 3)["ids"] for s in range(4)]


def test_resume_from_start_step_equals_the_tail_of_a_full_run(files):
    ds = dataset(files, seed=9)
    full = list(iterate_audio_steps(ds, batch_size=4, total_steps=10))
    fresh = dataset(files, seed=9)  # a new process after a kill: nothing carried over
    resumed = list(iterate_audio_steps(fresh, batch_size=4, total_steps=10, start_step=6))
    assert [b["step"] for b in resumed] == [6, 7, 8, 9]
    for x, y in zip(full[6:], resumed, strict=False):
        assert x["ids"] == y["ids"] and x["offsets"] == y["offsets"]
        assert torch.equal(x["wave"], y["wave"]) and torch.equal(x["mel"], y["mel"])
    # the iterator's seed overrides the dataset's
    assert [b["ids"] for b in iterate_audio_steps(ds, batch_size=4, total_steps=3, seed=1)] == \
           [dataset(files, seed=1).batch(s, 4)["ids"] for s in range(3)]


def test_bad_arguments_are_named(files):
    with pytest.raises(DataError, match=r"no audio clips in split 'test'"):
        AudioCropDataset(files, "test", mel=MEL, crop_frames=CROP)
    with pytest.raises(ValueError, match="exactly one of crop_frames and crop_seconds"):
        AudioCropDataset(files, "train", mel=MEL)
    with pytest.raises(DataError, match="max_cached_seconds"):
        dataset(files, max_cached_seconds=1.0)
    assert AudioCropDataset(files, "validation", mel=MEL, crop_seconds=0.16).crop_frames == CROP
    with pytest.raises(ValueError, match="start_step"):
        next(iterate_audio_steps(dataset(files), batch_size=2, total_steps=3, start_step=4))
