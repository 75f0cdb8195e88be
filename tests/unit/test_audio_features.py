"""Log-mel features, Griffin-Lim inversion and the log-spectral distance, checked against hand computations."""
import librosa
import numpy as np
import pytest
import torch

from lib.audio.features import LogMel, MelConfig, log_mel, log_spectral_distance, mel_to_audio, n_frames

SR = 16000


def sine(freq, seconds=1.0, amp=0.5):
    return (amp * np.sin(2 * np.pi * freq * np.arange(int(seconds * SR)) / SR)).astype(np.float32)


@pytest.mark.parametrize("n", [1100, 2560, 16000, 16001])
def test_log_mel_shape_follows_centred_frame_count(n):
    cfg = MelConfig(n_fft=1024, hop_length=256, n_mels=64)
    out = log_mel(np.random.default_rng(0).standard_normal(n).astype(np.float32) * 0.1, cfg)
    assert out.shape == (64, 1 + n // 256) == (64, n_frames(n, 256))
    assert out.dtype == np.float32


def test_sine_peaks_in_the_mel_bin_centred_on_its_frequency():
    cfg = MelConfig(n_mels=64)
    # mel band k spans centres[k] .. centres[k + 2] and peaks at centres[k + 1] (librosa.mel_frequencies)
    centres = librosa.mel_frequencies(n_mels=cfg.n_mels + 2, fmin=0, fmax=SR / 2)
    for k in (10, 25, 40):
        energy = log_mel(sine(centres[k + 1]), cfg)[:, 4:-4].mean(axis=1)
        assert int(np.argmax(energy)) == k


def test_silence_sits_at_the_log_floor():
    cfg = MelConfig(log_floor=1e-5)
    assert np.allclose(log_mel(np.zeros(4000, np.float32), cfg), np.log(1e-5))


def test_log_spectral_distance_hand_checks():
    rng = np.random.default_rng(1)
    noise = (0.1 * rng.standard_normal(SR)).astype(np.float64)
    assert log_spectral_distance(noise, noise) == 0.0
    # a gain g scales every power bin by g^2: a constant 20 log10(1/g) dB in every bin and frame
    assert log_spectral_distance(noise, 0.5 * noise) == pytest.approx(20 * np.log10(2), abs=1e-3)
    assert log_spectral_distance(0.5 * noise, noise) == pytest.approx(20 * np.log10(2), abs=1e-3)
    # aligned to the shorter wave: a tail on the estimate does not count
    assert log_spectral_distance(noise, np.concatenate([noise, rng.standard_normal(4000)])) == 0.0
    # two independent noises: about the LSD of two exponential power spectra, several dB
    assert 5 < log_spectral_distance(noise, 0.1 * rng.standard_normal(SR)) < 12


def test_griffin_lim_inversion_recovers_the_dominant_frequency():
    cfg = MelConfig(n_mels=80)
    wave = sine(440, seconds=0.5)
    est = mel_to_audio(log_mel(wave, cfg), cfg, n_iter=16, length=wave.size)
    assert est.shape == wave.shape
    spectrum = np.abs(np.fft.rfft(est * np.hanning(est.size)))
    assert np.fft.rfftfreq(est.size, 1 / SR)[np.argmax(spectrum)] == pytest.approx(440, abs=30)
    assert log_spectral_distance(wave, est) < log_spectral_distance(wave, sine(1500, seconds=0.5))


@pytest.mark.parametrize("power", [1.0, 2.0])
def test_torch_log_mel_matches_librosa(power):
    cfg = MelConfig(power=power, n_fft=512, hop_length=128, n_mels=40)
    rng = np.random.default_rng(2)
    batch = np.stack([0.2 * rng.standard_normal(5000), sine(700, 5000 / SR)]).astype(np.float32)
    got = LogMel(cfg)(torch.from_numpy(batch)).numpy()
    ref = np.stack([log_mel(w, cfg) for w in batch])
    assert got.shape == ref.shape == (2, 40, 1 + 5000 // 128)
    np.testing.assert_allclose(got, ref, atol=2e-3)
    one = LogMel(cfg)(torch.from_numpy(batch[1])).numpy()
    np.testing.assert_allclose(one, ref[1], atol=2e-3)


def test_bad_config_is_named():
    with pytest.raises(ValueError, match="hop_length <= n_fft"):
        MelConfig(n_fft=256, hop_length=512)
    with pytest.raises(ValueError, match="fmax <= sample_rate/2"):
        MelConfig(fmax=12000)
