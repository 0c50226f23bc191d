"""The encoder's speech detector: block-independent frames, level-blind decisions, speech
heard as speech and steady or noisy sounds not, and live chunks that do not flicker."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import soundfile as sf
import soxr

from neucomp.audio.speech import (
    FrameAnalyser,
    SpeechDetector,
    speech_probability,
    window_feature_names,
    window_features,
)

RATE = 24000
SAMPLE = Path(__file__).parents[1] / "data" / "sample.flac"


def sample_speech() -> np.ndarray:
    audio, rate = sf.read(SAMPLE, dtype="float32", always_2d=True)
    return soxr.resample(audio.mean(axis=1), rate, RATE)


def chord(seconds: float = 6.0) -> np.ndarray:
    """Four sustained tones with a slow swell: harmonic, like music, with no syllables."""
    t = np.arange(int(seconds * RATE)) / RATE
    swell = 1 + 0.3 * np.sin(2 * np.pi * 0.5 * t)
    return sum(0.1 * np.sin(2 * np.pi * f * t) * swell for f in (220, 277, 330, 440))


def test_frames_do_not_depend_on_the_block_split() -> None:
    x = sample_speech()[: 3 * RATE]
    rows, bands = FrameAnalyser(RATE).push(x)
    analyser = FrameAnalyser(RATE)
    parts = [analyser.push(x[a : a + 777]) for a in range(0, len(x), 777)]
    np.testing.assert_allclose(np.concatenate([p[0] for p in parts]), rows, atol=1e-9)
    np.testing.assert_allclose(np.concatenate([p[1] for p in parts]), bands, atol=1e-9)
    assert rows.shape == (len(x) // (RATE // 50), 7)  # 20 ms frames: frame k ends at hop k + 1
    assert window_features(rows, bands).shape == (len(window_feature_names()),)


def test_speech_is_speech_at_any_level_and_other_sounds_are_not() -> None:
    x = sample_speech()
    for scale in (1.0, 0.01, 3.0):
        detector = SpeechDetector(RATE)
        assert detector.push_chunk(np.clip(scale * x, -1, 1)[None])
        assert detector.last_probability > 0.9
    rng = np.random.default_rng(0)
    for other in (chord(), 0.1 * rng.standard_normal(4 * RATE), np.zeros(RATE)):
        detector = SpeechDetector(RATE)
        assert not detector.push_chunk(other[None])
        assert detector.last_probability < 0.4


def test_live_chunks_are_judged_on_two_seconds_and_do_not_flicker() -> None:
    """93 ms chunks: after the first second of speech nearly all are flagged, and a
    switch to a chord turns the flag off once, within the 2 s context, for good."""
    speech, other = sample_speech()[: 6 * RATE], chord(6.0)
    x = np.concatenate([speech, other])
    detector = SpeechDetector(RATE)
    step = 2240
    flags = [detector.push_chunk(x[None, a : a + step]) for a in range(0, len(x), step)]
    first_other = len(speech) // step
    assert np.mean(flags[RATE // step : first_other]) > 0.9
    later = flags[first_other + 2 * RATE // step + 1 :]
    assert not any(later)
    switches = int(np.sum(np.diff(np.array(flags[RATE // step :], dtype=int)) != 0))
    assert switches <= 3


def test_the_shipped_weights_fit_the_features() -> None:
    from neucomp.audio.speech_weights import WEIGHTS

    assert WEIGHTS["names"] == window_feature_names()
    n = len(window_feature_names())
    assert len(WEIGHTS["mean"]) == len(WEIGHTS["scale"]) == len(WEIGHTS["w1"]) == n
    assert 0.0 <= speech_probability(np.array(WEIGHTS["mean"])) <= 1.0
