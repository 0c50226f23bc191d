"""Per-chunk levelling: every container chunk's audio reaches the encoder at one loudness.

A codec trained on a range of input levels is worse outside it (the 24 kHz model loses
0.6 PESQ between −25 and −50 dBFS). So the engine measures each chunk's RMS, multiplies
its audio by a whole number of dB that brings it to TARGET_RMS_DB (never pushing the peak
past 0.99), and stores that gain in the chunk (format version 2); decompress divides it
out again. From one chunk to the next the gain moves along a RAMP_S-long line in dB
instead of jumping, at both ends alike, so a level change costs no click. From format
version 3 a chunk shorter than RAMP_S (the live mode's) ramps over its whole length, so
that it still ends at its own gain; version 2 ramped over RAMP_S whatever the length.
"""

from __future__ import annotations

import math

import numpy as np

from neucomp.container import MAX_GAIN_DB, MIN_GAIN_DB

#: The loudness chunks are coded at: the middle of the training gain range.
TARGET_RMS_DB = -23.0
#: Chunks below this are treated as silence and not amplified.
SILENCE_DB = -90.0
#: The peak a levelled chunk may reach.
MAX_PEAK = 0.99
#: How long the gain takes to move from one chunk's value to the next one's.
RAMP_S = 0.1


def chunk_gain_db(audio: np.ndarray) -> int:
    """The whole-dB gain that brings `audio` [C, T] to TARGET_RMS_DB, peak-limited."""
    if audio.size == 0:
        return 0
    x = audio.astype(np.float64, copy=False)
    rms_db = 10 * math.log10(float(np.mean(x * x)) + 1e-30)
    if rms_db < SILENCE_DB:
        return 0
    gain = round(TARGET_RMS_DB - rms_db)
    peak = float(np.abs(x).max())
    gain = min(gain, math.floor(20 * math.log10(MAX_PEAK / peak)))
    return int(min(max(gain, MIN_GAIN_DB), MAX_GAIN_DB))


def gain_curve(n: int, prev_db: int, gain_db: int, ramp: int, start: int = 0) -> np.ndarray:
    """Linear factors for samples [start, start + n) of a chunk: from prev_db to gain_db
    over its first `ramp` samples (linear in dB), then gain_db. The encoder multiplies by
    it, the decoder divides by it."""
    i = np.arange(start, start + n)
    db = np.where(i < ramp, prev_db + (gain_db - prev_db) * (i + 1) / ramp, float(gain_db))
    return (10.0 ** (db / 20.0)).astype(np.float32)


def ramp_samples(sample_rate: int) -> int:
    return max(1, round(RAMP_S * sample_rate))


class Leveller:
    """Compress side: buffers model-rate audio into chunks of `chunk_samples`, levels
    each, and hands back (levelled audio [C, n], gain_db) per chunk."""

    def __init__(self, channels: int, chunk_samples: int, sample_rate: int) -> None:
        self.channels = channels
        self.chunk_samples = chunk_samples
        self.ramp = ramp_samples(sample_rate)
        self.parts: list[np.ndarray] = []  # audio not yet levelled, in order
        self.pending = 0  # samples in `parts`
        self.prev_db: int | None = None

    def push(self, x: np.ndarray) -> list[tuple[np.ndarray, int]]:
        if x.shape[1]:
            self.parts.append(x.astype(np.float32, copy=False))
            self.pending += x.shape[1]
        out = []
        while self.pending >= self.chunk_samples:
            joined = np.concatenate(self.parts, axis=1)
            out.append(self._level(joined[:, : self.chunk_samples]))
            rest = joined[:, self.chunk_samples :]
            self.parts, self.pending = ([rest] if rest.shape[1] else []), rest.shape[1]
        return out

    def flush(self) -> tuple[np.ndarray, int]:
        block = (
            np.concatenate(self.parts, axis=1)
            if self.parts
            else np.zeros((self.channels, 0), np.float32)
        )
        self.parts, self.pending = [], 0
        return self._level(block)

    def _level(self, block: np.ndarray) -> tuple[np.ndarray, int]:
        gain = chunk_gain_db(block)
        prev = gain if self.prev_db is None else self.prev_db
        self.prev_db = gain
        ramp = min(self.ramp, max(1, block.shape[1]))  # version 3: within the chunk
        return block * gain_curve(block.shape[1], prev, gain, ramp), gain


class Unleveller:
    """Decompress side: divides decoded model-rate audio by the gains of the chunks it
    belongs to. Register each chunk (in order) before its samples come out."""

    def __init__(self, sample_rate: int, version: int = 3) -> None:
        self.ramp = ramp_samples(sample_rate)
        self.short_ramps = version >= 3  # a chunk shorter than the ramp ramps over itself
        self.chunks: list[tuple[int, int, int, int, int]] = []  # start, length, prev, dB, ramp
        self.end = 0  # samples registered
        self.position = 0  # samples already passed through
        self.prev_db: int | None = None

    def add_chunk(self, samples: int, gain_db: int | None) -> None:
        """A chunk of `samples` model-rate samples; gain None: unknown (damaged chunk)."""
        prev = self.prev_db
        gain = (prev if prev is not None else 0) if gain_db is None else gain_db
        ramp = min(self.ramp, max(1, samples)) if self.short_ramps else self.ramp
        self.chunks.append((self.end, samples, gain if prev is None else prev, gain, ramp))
        self.end += samples
        self.prev_db = gain

    def apply(self, y: np.ndarray) -> np.ndarray:
        """y [C, n], the next n decoded samples, divided by their gains."""
        n = y.shape[1]
        lo, hi = self.position, self.position + n
        self.position = hi
        factors = np.ones(n, np.float32)
        needed = False
        for start, length, prev, gain, ramp in self.chunks:
            a, b = max(lo, start), min(hi, start + length)
            if a >= b or (prev == 0 and gain == 0):
                continue
            factors[a - lo : b - lo] = gain_curve(b - a, prev, gain, ramp, a - start)
            needed = True
        # Chunks wholly behind us are never needed again.
        self.chunks = [c for c in self.chunks if c[0] + c[1] > hi]
        return y / factors if needed else y
