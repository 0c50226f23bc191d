"""E21: how much of a decoding sits on the frame rate's harmonics (k × 75 Hz).

    python scripts/e21/comb.py MODEL... [--bw 6]

Per model, over the dev-eval music clips (stereo at 48 kHz, first channel, first 6 s):
the mean power of the 0.17-Hz bins within 1 Hz of a multiple of the frame rate over that
of the other bins, in dB, per band; the reference's own ratio first (≈ 0 dB: music is
not locked to 75 Hz).
"""

from __future__ import annotations

import argparse
from pathlib import Path

import numpy as np

import neucomp
from neucomp.audio import load_reference

RATE, SECONDS, FRAME_HZ = 48000, 6, 75.0
BANDS = [(100, 1000), (1000, 4000), (4000, 8000), (8000, 12000), (12000, 20000)]


def comb_db(s: np.ndarray) -> list[float]:
    n = RATE * SECONDS
    spec = np.abs(np.fft.rfft(s[:n] * np.hanning(n))) ** 2
    f = np.fft.rfftfreq(n, 1 / RATE)
    out = []
    for lo, hi in BANDS:
        sel = (f >= lo) & (f < hi)
        phase = f[sel] % FRAME_HZ
        on = (phase < 1.0) | (phase > FRAME_HZ - 1.0)
        out.append(10 * np.log10(spec[sel][on].mean() / spec[sel][~on].mean()))
    return out


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("models", nargs="+")
    ap.add_argument("--bw", type=float, default=6.0)
    a = ap.parse_args()
    clips = [
        load_reference(f, RATE, 2)[:, : RATE * SECONDS].copy()
        for f in sorted(Path("data/deveval/music").glob("*.flac"))
    ]
    clips = [c for c in clips if c.shape[-1] == RATE * SECONDS]
    rows = {"reference": [comb_db(c[0]) for c in clips]}
    for m in a.models:
        rows[m] = []
        for c in clips:
            d, _ = neucomp.decompress(neucomp.compress(c, RATE, bandwidth=a.bw, model=m), model=m)
            rows[m].append(comb_db(np.asarray(d)[0]))
    print(f"{len(clips)} clips; dB on k×75 Hz over the rest, per band {BANDS}")
    for name, r in rows.items():
        print(f"{name:40s}", " ".join(f"{v:6.1f}" for v in np.mean(r, axis=0)))


if __name__ == "__main__":
    main()
