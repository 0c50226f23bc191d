"""Quality metrics: each must rank degradations the way a listener would."""

from __future__ import annotations

import numpy as np
import pytest

from neucomp.eval import metrics

RATE = 24000


def _music(seconds: float = 2.0, rate: int = RATE, seed: int = 0) -> np.ndarray:
    """A few harmonics with a slow tremolo and a little noise: not a pure tone."""
    t = np.arange(int(seconds * rate)) / rate
    x = sum(np.sin(2 * np.pi * f * t) / k for k, f in enumerate((220, 440, 660, 1320, 3000), 1))
    x = x * (0.6 + 0.4 * np.sin(2 * np.pi * 1.5 * t))
    x = x + 0.01 * np.random.default_rng(seed).standard_normal(len(t))
    return (0.3 * x / np.abs(x).max()).astype(np.float32)


def _noisy(x: np.ndarray, level: float, seed: int = 1) -> np.ndarray:
    return x + level * np.random.default_rng(seed).standard_normal(x.shape).astype(np.float32)


def test_si_snr_of_a_copy_is_very_high() -> None:
    x = _music()
    assert metrics.si_snr(x, x) > 100


def test_si_snr_falls_as_noise_rises() -> None:
    x = _music()
    values = [metrics.si_snr(x, _noisy(x, level)) for level in (1e-4, 1e-3, 1e-2, 1e-1, 1.0)]
    assert all(a > b for a, b in zip(values, values[1:], strict=False))
    # White noise at 1/10 of the signal's RMS is about 20 dB down.
    rms = float(np.sqrt(np.mean(x**2)))
    assert metrics.si_snr(x, _noisy(x, rms / 10)) == pytest.approx(20.0, abs=0.5)


def test_si_snr_ignores_gain_and_dc_but_not_delay() -> None:
    x = _music()
    assert metrics.si_snr(x, 0.5 * x + 0.1) > 100
    assert metrics.si_snr(x, np.concatenate([np.zeros(40, np.float32), x])) < 10


def test_si_snr_uses_common_length_and_averages_channels() -> None:
    x = _music()
    clean = np.stack([x, x])
    one_noisy = np.stack([x, _noisy(x, 0.01)])
    assert metrics.si_snr(x, np.concatenate([x, np.ones(100, np.float32)])) > 100
    expected = (metrics.si_snr(x, x) + metrics.si_snr(x, _noisy(x, 0.01))) / 2
    assert metrics.si_snr(clean, one_noisy) == pytest.approx(expected)


def test_mel_distance_is_zero_for_a_copy_and_grows_with_degradation() -> None:
    x = _music()
    assert metrics.mel_distance(x, x, RATE) == 0.0
    values = [metrics.mel_distance(x, _noisy(x, level), RATE) for level in (1e-3, 1e-2, 1e-1)]
    assert 0 < values[0] < values[1] < values[2]
    # A band-limited copy (nothing above ~3 kHz) is far from the original.
    spectrum = np.fft.rfft(x)
    spectrum[int(len(spectrum) * 3000 / (RATE / 2)) :] = 0
    assert metrics.mel_distance(x, np.fft.irfft(spectrum, len(x)), RATE) > values[0]


def test_mel_filterbank_covers_every_band() -> None:
    for n_fft in metrics.MEL_FFT_SIZES:
        fb = metrics.mel_filterbank(RATE, n_fft)
        assert fb.shape == (metrics.MEL_BANDS, n_fft // 2 + 1)
        assert (fb.max(axis=1) > 0).all()


def test_kbps_from_bytes_and_seconds() -> None:
    assert metrics.kbps(6000, 8.0) == pytest.approx(6.0)
    assert metrics.kbps(1, 0.008) == pytest.approx(1.0)
    with pytest.raises(ValueError):
        metrics.kbps(100, 0.0)


def test_visqol_orders_mild_and_heavy_degradation() -> None:
    pytest.importorskip("visqol")
    x = _music(seconds=3.0)
    mild = metrics.visqol(x, _noisy(x, 0.003), RATE, mode="audio")
    heavy = metrics.visqol(x, _noisy(x, 0.05), RATE, mode="audio")
    assert 1.0 <= heavy < mild <= 5.0
    mild_s = metrics.visqol(x, _noisy(x, 0.003), RATE, mode="speech")
    heavy_s = metrics.visqol(x, _noisy(x, 0.05), RATE, mode="speech")
    assert heavy_s < mild_s


def test_visqol_rejects_unknown_mode() -> None:
    x = _music(seconds=0.5)
    with pytest.raises(ValueError):
        metrics.visqol(x, x, RATE, mode="music")


# ------------------------------------------------------------ speech scores and spectra


def _speech(seconds: float = 5.0, rate: int = RATE) -> np.ndarray:
    """The first seconds of the shipped speech recording, mono, at `rate`."""
    from pathlib import Path

    import soundfile as sf
    import soxr

    audio, sr = sf.read(str(Path(__file__).parent / "data" / "sample.flac"), dtype="float32")
    audio = audio.reshape(len(audio), -1).mean(axis=1)[: int(seconds * sr)]
    return soxr.resample(audio, sr, rate).astype(np.float32) if sr != rate else audio


def test_pesq_is_high_for_a_copy_and_low_for_noise() -> None:
    pytest.importorskip("pesq")
    x = _speech()
    rms = float(np.sqrt(np.mean(x**2)))
    copy = metrics.pesq_wb(x, x, RATE)
    mild = metrics.pesq_wb(x, _noisy(x, rms / 30), RATE)
    noise = metrics.pesq_wb(x, _noisy(np.zeros_like(x), rms), RATE)
    assert copy > 4.4
    assert noise < 1.3
    assert noise < mild < copy


def test_stoi_is_near_one_for_a_copy_and_low_for_noise() -> None:
    pytest.importorskip("pystoi")
    x = _speech()
    rms = float(np.sqrt(np.mean(x**2)))
    assert metrics.stoi(x, x, RATE) > 0.99
    assert metrics.stoi(x, _noisy(np.zeros_like(x), rms), RATE) < 0.3
    assert metrics.speech_scores(x, x, RATE)["stoi"] > 0.99


def test_lsd_is_zero_for_a_copy_and_sees_a_missing_band() -> None:
    x = _music(seconds=2.0) + _noisy(np.zeros(2 * RATE, np.float32), 0.01)
    same = metrics.lsd_bands(x, x, RATE)
    assert set(same) == {"lsd_0_4k", "lsd_4_8k", "lsd_8_12k", "lsd_12_20k"}
    assert np.isnan(same.pop("lsd_12_20k"))  # above Nyquist at 24 kHz
    assert all(v == 0.0 for v in same.values())
    # Nothing above 4 kHz: the upper bands are far off, the lowest one nearly exact.
    spectrum = np.fft.rfft(x)
    spectrum[int(len(spectrum) * 4000 / (RATE / 2)) :] = 0
    lowpass = metrics.lsd_bands(x, np.fft.irfft(spectrum, len(x)), RATE)
    assert lowpass["lsd_4_8k"] > 20 and lowpass["lsd_8_12k"] > 20
    assert lowpass["lsd_0_4k"] < 3
    # At 16 kHz the 8–12 kHz band is above Nyquist.
    assert np.isnan(metrics.lsd_bands(x[:16000], x[:16000], 16000)["lsd_8_12k"])


def test_dnsmos_prefers_speech_to_noise_and_ignores_level() -> None:
    if metrics.missing_for("dnsmos"):
        pytest.skip("speechmos/onnxruntime/librosa not installed")
    x = _speech(seconds=4.0)
    clean = metrics.dnsmos(x, RATE)
    assert set(clean) == set(metrics.DNSMOS_KEYS)
    assert all(1.0 <= v <= 5.0 for v in clean.values())
    quiet = metrics.dnsmos(0.05 * x, RATE)  # peak-normalised first
    assert quiet == pytest.approx(clean, abs=1e-3)
    rms = float(np.sqrt(np.mean(x**2)))
    noisy = metrics.dnsmos(_noisy(x, rms), RATE)
    assert noisy["dnsmos_ovrl"] < clean["dnsmos_ovrl"] - 0.3
    assert noisy["dnsmos_bak"] < clean["dnsmos_bak"] - 0.5
    assert all(np.isnan(v) for v in metrics.dnsmos(np.zeros(RATE), RATE).values())


def test_missing_packages_are_named(monkeypatch: pytest.MonkeyPatch) -> None:
    assert metrics.missing_for("stoi") is None or "pystoi" in metrics.missing_for("stoi")
    monkeypatch.setitem(
        metrics.METRIC_PACKAGES, "pesq", (("no_such_module_xyz",), "pesq (needs a C compiler)")
    )
    why = metrics.missing_for("pesq")
    assert why is not None and "no_such_module_xyz" in why and "C compiler" in why


# ------------------------------------------------------------- full band and the stereo image

HQ = 48000


def _noise(channels: int, seconds: float = 1.0, seed: int = 3) -> np.ndarray:
    """White noise [C, T] at 48 kHz: every band has energy."""
    rng = np.random.default_rng(seed)
    return (0.1 * rng.standard_normal((channels, int(seconds * HQ)))).astype(np.float64)


def _scale_band(x: np.ndarray, lo: float, hi: float, gain: float) -> np.ndarray:
    """x with every frequency in [lo, hi) multiplied by `gain` (an exact FFT filter)."""
    spectrum = np.fft.rfft(x, axis=-1)
    freqs = np.fft.rfftfreq(x.shape[-1], 1 / HQ)
    spectrum[..., (freqs >= lo) & (freqs < hi)] *= gain
    return np.fft.irfft(spectrum, x.shape[-1], axis=-1)


def test_lsd_12_20k_sees_the_top_octave() -> None:
    x = _noise(2)
    twice = metrics.lsd_bands(x, _scale_band(x, 11000, 21000, 2.0), HQ)
    # 6.02 dB louder in the band, exactly as before below it.
    assert twice["lsd_12_20k"] == pytest.approx(20 * np.log10(2), abs=0.1)
    assert twice["lsd_0_4k"] < 0.01 and twice["lsd_4_8k"] < 0.01
    cut = metrics.lsd_bands(x, _scale_band(x, 12000, 24001, 0.0), HQ)
    assert cut["lsd_12_20k"] > 40 and cut["lsd_0_4k"] < 0.01


def test_lsd_scores_each_channel() -> None:
    """A lost right channel is a large error, not the 6 dB a mono mix would show."""
    x = _noise(2)
    lost = x.copy()
    lost[1] = 0
    bands = metrics.lsd_bands(x, lost, HQ)
    left_only = metrics.lsd_bands(x[:1], lost[:1], HQ)
    assert left_only["lsd_4_8k"] == 0.0 and bands["lsd_4_8k"] > 40


def _stereo(side_gain: float = 1.0) -> np.ndarray:
    """L = M + g·S, R = M − g·S with independent noises M and S (S 6 dB below M)."""
    mid, side = _noise(1, seed=4)[0], 0.5 * _noise(1, seed=5)[0]
    return np.stack([mid + side_gain * side, mid - side_gain * side])


def test_mid_side() -> None:
    x = _stereo()
    mid, side = metrics.mid_side(x)
    np.testing.assert_allclose(mid + side, x[0])
    np.testing.assert_allclose(mid - side, x[1])
    with pytest.raises(ValueError):
        metrics.mid_side(x[:1])


def test_side_lsd_has_known_answers() -> None:
    x = _stereo()
    assert metrics.side_lsd(x, x, HQ) == 0.0
    # The side twice as loud: 6.02 dB in every bin.
    assert metrics.side_lsd(x, _stereo(side_gain=2.0), HQ) == pytest.approx(6.02, abs=0.01)
    # Collapsed to mono: the side falls to the floor, 100 dB below the mid.
    mono = np.stack([x.mean(axis=0)] * 2)
    assert metrics.side_lsd(x, mono, HQ) > 60
    # A mono reference decoded as mono is perfect; with invented width it is not.
    assert metrics.side_lsd(mono, mono, HQ) == 0.0
    assert metrics.side_lsd(mono, x, HQ) > 60


def test_ild_error_has_known_answers() -> None:
    source = _noise(1, seed=6)[0]
    left = np.stack([2 * source, source])  # 6.02 dB to the left in every band
    centre = np.stack([1.5 * source, 1.5 * source])
    assert metrics.ild_error(left, left, HQ) == 0.0
    assert metrics.ild_error(left, centre, HQ) == pytest.approx(20 * np.log10(2), abs=1e-6)
    assert metrics.ild_error(left, left[::-1], HQ) == pytest.approx(40 * np.log10(2), abs=1e-6)
    hard = np.stack([source, np.zeros_like(source)])  # fully left: clipped at 30 dB
    assert metrics.ild_error(hard, centre, HQ) == pytest.approx(metrics.ILD_CLIP_DB)
    # The level of both channels together does not matter, only their balance.
    assert metrics.ild_error(left, 0.1 * left, HQ) == pytest.approx(0.0, abs=1e-9)
    assert set(metrics.stereo_scores(left, centre, HQ)) == {"side_lsd", "ild_error"}
    with pytest.raises(ValueError):
        metrics.ild_error(source, source, HQ)


def test_latent_dims_counts_the_principal_components_in_use() -> None:
    from neucomp.eval.latent import latent_dims

    rng = np.random.default_rng(0)
    # 3 strong directions in 16 dims, plus a little noise everywhere
    basis = rng.standard_normal((3, 16))
    z = rng.standard_normal((2000, 3)) * [10.0, 5.0, 3.0] @ basis
    z = z + 0.01 * rng.standard_normal((2000, 16))
    d90, d99 = latent_dims(z)
    assert d90 <= 3 and d99 == 3
    assert latent_dims(rng.standard_normal((5000, 16)), (0.99,))[0] >= 15  # all in use
