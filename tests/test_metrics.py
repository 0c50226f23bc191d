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
    assert set(same) == {"lsd_0_4k", "lsd_4_8k", "lsd_8_12k"}
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
