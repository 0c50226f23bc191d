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


def test_chunks_shorter_than_the_ramp_still_reach_their_gain() -> None:
    """Version 3 (live chunks of a few frames): a chunk shorter than the ramp ramps over
    its own length, so its last sample is at its own gain and the next chunk starts from
    there, with no step. Version 2 files keep their ramp of RAMP_S whatever the length."""
    rate, chunk = 1000, 40  # the ramp is 100 samples
    rng = np.random.default_rng(2)
    audio = np.concatenate(
        [0.3 * rng.standard_normal((1, 80)), 0.003 * rng.standard_normal((1, 80))], axis=1
    ).astype(np.float32)
    lev = level.Leveller(1, chunk, rate)
    pieces = lev.push(audio)
    gains = [g for _, g in pieces]
    assert len(set(gains)) > 1
    factors = np.concatenate([b for b, _ in pieces], axis=1) / audio
    at_ends = 20 * np.log10(factors[0, chunk - 1 :: chunk])
    np.testing.assert_allclose(at_ends, gains, atol=1e-3)  # each chunk ends at its gain
    un = level.Unleveller(rate)  # version 3, the default
    v2 = level.Unleveller(rate, version=2)
    for g in gains:
        un.add_chunk(chunk, g)
        v2.add_chunk(chunk, g)
    levelled = np.concatenate([b for b, _ in pieces], axis=1)
    np.testing.assert_allclose(un.apply(levelled), audio, rtol=1e-5, atol=1e-7)
    assert not np.allclose(v2.apply(levelled), audio, rtol=1e-3)  # another curve
