"""Per-chunk levelling: the gain rule, the ramp, and that decoding divides out exactly
what encoding multiplied in, whatever the block sizes."""

from __future__ import annotations

import numpy as np

from neucomp import level


def test_gain_brings_a_chunk_to_the_target_and_respects_the_peak() -> None:
    rng = np.random.default_rng(0)
    quiet = (10 ** (-45 / 20) * rng.standard_normal((1, 24000))).astype(np.float32)
    assert level.chunk_gain_db(quiet) == 22  # −45 dBFS RMS → −23
    spiky = np.zeros((1, 24000), np.float32)
    spiky[0, ::2400] = 0.5  # very low RMS, but a loud peak: limited to 0.99 / 0.5
    assert level.chunk_gain_db(spiky) == 5
    assert level.chunk_gain_db(np.zeros((2, 100), np.float32)) == 0  # silence
    assert level.chunk_gain_db(np.zeros((1, 0), np.float32)) == 0


def test_gain_curve_ramps_in_db_then_holds() -> None:
    curve = level.gain_curve(10, 0, 20, ramp=4)
    db = 20 * np.log10(curve)
    np.testing.assert_allclose(db, [5, 10, 15, 20, 20, 20, 20, 20, 20, 20], atol=1e-4)
    # A slice gives the same values as the whole.
    np.testing.assert_array_equal(level.gain_curve(5, 0, 20, 4, start=2), curve[2:7])


def test_unleveller_inverts_the_leveller_across_any_split() -> None:
    rng = np.random.default_rng(1)
    rate, chunk = 1000, 700
    loud = 0.3 * rng.standard_normal((2, 1500))
    quiet = 0.003 * rng.standard_normal((2, 1700))
    audio = np.concatenate([loud, quiet], axis=1).astype(np.float32)  # 3200 samples
    lev = level.Leveller(2, chunk, rate)
    out, gains = [], []
    for a, b in [(0, 1), (1, 650), (650, 2100), (2100, 3200)]:
        for block, gain in lev.push(audio[:, a:b]):
            out.append(block)
            gains.append(gain)
    block, gain = lev.flush()
    out.append(block)
    gains.append(gain)
    assert [b.shape[1] for b in out] == [700, 700, 700, 700, 400]
    assert gains[0] < 0 < gains[-1]  # loud chunks turned down, quiet ones up
    levelled = np.concatenate(out, axis=1)
    un = level.Unleveller(rate)
    for b, g in zip(out, gains, strict=True):
        un.add_chunk(b.shape[1], g)
    restored = np.concatenate(
        [un.apply(levelled[:, a:b]) for a, b in [(0, 3), (3, 1000), (1000, 3200)]], axis=1
    )
    np.testing.assert_allclose(restored, audio, rtol=1e-5, atol=1e-7)
