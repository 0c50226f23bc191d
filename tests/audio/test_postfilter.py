"""The decoder's formant postfilter: block-independent, loudness-keeping, deeper valleys."""

from __future__ import annotations

import numpy as np
import pytest

from neucomp.audio.postfilter import FormantPostfilter, lpc

RATE = 24000


def formant_speech_like(seconds: float = 2.0, noise_db: float = -25.0, seed: int = 0):
    """A 150 Hz pulse train through two resonances (700 Hz, 2.2 kHz), plus white noise
    `noise_db` below it: harmonics under an envelope, with a haze in the valleys."""
    rng = np.random.default_rng(seed)
    n = int(seconds * RATE)
    x = np.zeros(n)
    x[:: RATE // 150] = 1.0
    for freq, bw in ((700, 120), (2200, 200)):
        r, theta = np.exp(-np.pi * bw / RATE), 2 * np.pi * freq / RATE
        a1, a2 = -2 * r * np.cos(theta), r * r
        y = np.zeros(n)
        for i in range(n):  # a two-pole resonator
            y[i] = x[i] - a1 * (y[i - 1] if i else 0) - a2 * (y[i - 2] if i > 1 else 0)
        x = y
    x *= 0.1 / np.sqrt(np.mean(x**2))
    noise = rng.normal(size=n) * 0.1 * 10 ** (noise_db / 20)
    return (x + noise).astype(np.float32)[None]


def band_db(x: np.ndarray, lo: float, hi: float) -> float:
    spec = np.abs(np.fft.rfft(x[0, RATE // 2 :] * np.hanning(x.shape[1] - RATE // 2))) ** 2
    f = np.fft.rfftfreq(x.shape[1] - RATE // 2, 1 / RATE)
    return 10 * np.log10(spec[(f >= lo) & (f < hi)].mean())


def test_any_block_split_gives_the_same_samples() -> None:
    x = formant_speech_like()
    whole = FormantPostfilter(RATE).process(x)
    pf, parts, i = FormantPostfilter(RATE), [], 0
    rng = np.random.default_rng(1)
    while i < x.shape[1]:
        n = int(rng.integers(1, 2000))
        parts.append(pf.process(x[:, i : i + n]))
        i += n
    assert np.array_equal(np.concatenate(parts, axis=1), whole)
    assert whole.dtype == np.float32 and whole.shape == x.shape


def test_valleys_fall_and_loudness_stays() -> None:
    x = formant_speech_like()
    y = FormantPostfilter(RATE).process(x)
    peak_change = band_db(y, 600, 800) - band_db(x, 600, 800)
    valley_change = band_db(y, 1200, 1700) - band_db(x, 1200, 1700)
    # the valley between the formants is deeper relative to the peak (mildly at 24 kHz:
    # a gamma's bandwidth widening grows with the sample rate; 0.78 dB here, and a
    # filter with its gammas swapped would raise the valley instead)
    assert valley_change < peak_change - 0.5
    rms = lambda s: 20 * np.log10(np.sqrt(np.mean(s[0, RATE // 2 :] ** 2)))  # noqa: E731
    assert abs(rms(y) - rms(x)) < 1.0


def test_silence_and_tiny_signals_stay_finite() -> None:
    pf = FormantPostfilter(RATE)
    assert not pf.process(np.zeros((1, 5000), np.float32)).any()
    tiny = formant_speech_like() * 1e-7
    assert np.isfinite(FormantPostfilter(RATE).process(tiny)).all()


def test_channels_are_filtered_independently() -> None:
    left, right = formant_speech_like(seed=0), formant_speech_like(seed=3) * 0.5
    both = FormantPostfilter(RATE, channels=2).process(np.concatenate([left, right]))
    assert np.array_equal(both[:1], FormantPostfilter(RATE).process(left))
    assert np.array_equal(both[1:], FormantPostfilter(RATE).process(right))


def test_lpc_solves_the_normal_equations() -> None:
    from scipy.linalg import solve_toeplitz

    x = np.random.default_rng(0).normal(size=480)
    a = lpc(x, 16, np.ones(17))
    r = np.array([x[: 480 - k] @ x[k:] for k in range(17)])
    r[0] *= 1.0001
    np.testing.assert_allclose(a[1:], solve_toeplitz(r[:16], -r[1:]), rtol=1e-8, atol=1e-10)


def test_gammas_outside_the_fir_bound_are_refused() -> None:
    with pytest.raises(ValueError, match="gamma"):
        FormantPostfilter(RATE, gamma_num=0.7, gamma_den=0.99)


def switched(x: np.ndarray, flags: list[bool], chunk: int, splits: list[int]) -> np.ndarray:
    from neucomp.audio.postfilter import SwitchedPostfilter

    pf = SwitchedPostfilter(RATE)
    for on in flags:
        pf.add_chunk(chunk, on)
    bounds = [0, *splits, x.shape[1]]
    return np.concatenate(
        [pf.process(x[:, a:b]) for a, b in zip(bounds[:-1], bounds[1:], strict=True)], 1
    )


def test_switched_postfilter_follows_the_chunk_flags_and_fades_between_them() -> None:
    """Off chunks pass through untouched; an all-on stream is the plain postfilter; on
    chunks after off ones are filtered (from the history, at the right loudness), and a
    switch crossfades over 10 ms instead of jumping; any block split, same samples."""
    x = formant_speech_like(2.0)
    chunk = 8000  # 1/3 s
    flags = [False, True, True, False, True, False]
    whole = switched(x, flags, chunk, [])
    np.testing.assert_array_equal(whole, switched(x, flags, chunk, [1, 7999, 8001, 12345, 30000]))
    np.testing.assert_array_equal(whole[:, :chunk], x[:, :chunk])
    fade = RATE // 100
    np.testing.assert_array_equal(
        whole[:, 3 * chunk + fade : 4 * chunk], x[:, 3 * chunk + fade : 4 * chunk]
    )
    on = whole[:, chunk + fade : 3 * chunk]
    assert not np.allclose(on, x[:, chunk + fade : 3 * chunk], atol=1e-3)
    assert abs(10 * np.log10(np.mean(on**2) / np.mean(x[:, chunk + fade : 3 * chunk] ** 2))) < 1.5
    all_on = switched(x, [True] * 6, chunk, [5000])
    np.testing.assert_allclose(all_on, FormantPostfilter(RATE).process(x), atol=1e-6)
    # no step at a switch: the largest sample-to-sample change stays that of the signal
    for edge in (chunk, 3 * chunk, 4 * chunk):
        jump = np.abs(np.diff(whole[0, edge - 50 : edge + 50])).max()
        assert jump < 1.5 * np.abs(np.diff(x[0])).max()
