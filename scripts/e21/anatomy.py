"""E21: where the 48 kHz model's LSD below 4 kHz comes from, against Opus 6 stereo.

    python scripts/e21/anatomy.py MODEL [bandwidth]

Per codec, over the dev-eval music clips in stereo at 48 kHz, the per-bin dB error
(decoded − reference) in 0–4 kHz on the LSD's STFT and active frames, split by
the bin's place in the reference: peaks (bins above their frame's 0–4 kHz median) and
valleys, and by frame level (loud half, quiet half). Bias > 0: the decoding is louder.
"""

from __future__ import annotations

import sys
from pathlib import Path

import numpy as np

import neucomp
from neucomp.audio import load_reference
from neucomp.audio.signal import fit_length, resample
from neucomp.eval import metrics
from neucomp.eval.baselines import Baseline, round_trip

RATE = 48000


def db_pair(ref, deg):
    n_fft = metrics._lsd_fft(RATE)
    r, d = metrics._aligned(ref, deg)
    p_ref, p_deg = metrics._power(r, n_fft), metrics._power(d, n_fft)
    floor = max(float(p_ref.max()), 1e-20) * 1e-10
    db_ref = 10 * np.log10(np.maximum(p_ref, floor))
    db_deg = 10 * np.log10(np.maximum(p_deg, floor))
    energy = 10 * np.log10(p_ref.sum(axis=(0, 1)) + 1e-30)
    active = energy > energy.max() - metrics.LSD_ACTIVE_DB
    freqs = np.arange(p_ref.shape[1]) * RATE / n_fft
    sel = freqs < 4000
    return db_ref[:, sel][:, :, active], db_deg[:, sel][:, :, active], energy[active]


def main(model: str, bandwidth: float = 6.0) -> None:
    files = sorted(Path("data/deveval/music").glob("*.flac"))
    stats: dict[str, list] = {"neucomp": [], "unfolded": [], "notched": [], "opus": []}
    for f in files:
        x = load_reference(f, RATE, 2)
        data = neucomp.compress(x, RATE, bandwidth=bandwidth, model=model)
        dec, out_rate = neucomp.decompress(data, model=model)
        dec = fit_length(resample(np.atleast_2d(dec), out_rate, RATE), x.shape[-1])
        opus = round_trip(x, RATE, Baseline("opus", int(bandwidth)))
        op = opus.audio
        hop = 640  # the frame-periodic part: the mean of the decoding folded on its frame grid
        whole = dec.shape[-1] // hop * hop
        period = dec[:, :whole].reshape(dec.shape[0], -1, hop).mean(axis=1)
        unfolded = dec - np.tile(period, (1, dec.shape[-1] // hop + 1))[:, : dec.shape[-1]]
        # an oracle: the whole clip's spectrum with the bins within 1.5 Hz of a multiple of
        # the frame rate (above 100 Hz) zeroed: what LSD would be without the comb
        spec = np.fft.rfft(dec, axis=-1)
        freqs = np.fft.rfftfreq(dec.shape[-1], 1 / RATE)
        phase = freqs % 75.0
        comb = ((phase < 1.5) | (phase > 73.5)) & (freqs > 100)
        spec[:, comb] = 0
        notched = np.fft.irfft(spec, n=dec.shape[-1], axis=-1)
        for name, deg in (
            ("neucomp", dec),
            ("unfolded", unfolded),
            ("notched", notched),
            ("opus", op),
        ):
            r, d, energy = db_pair(x, deg)
            diff = d - r  # [C, bins, T]
            med = np.median(r, axis=1, keepdims=True)
            peak = r > med
            loud = energy > np.median(energy)
            lsd = np.mean(np.sqrt(np.mean(diff**2, axis=1)))
            stats[name].append(
                dict(
                    lsd=lsd,
                    bias=diff.mean(),
                    peak_rms=np.sqrt(np.mean(diff[peak] ** 2)),
                    valley_rms=np.sqrt(np.mean(diff[~peak] ** 2)),
                    peak_bias=diff[peak].mean(),
                    valley_bias=diff[~peak].mean(),
                    loud_lsd=np.mean(np.sqrt(np.mean(diff[:, :, loud] ** 2, axis=1))),
                    quiet_lsd=np.mean(np.sqrt(np.mean(diff[:, :, ~loud] ** 2, axis=1))),
                    mid_lsd=metrics.lsd_bands(x.mean(0), deg.mean(0), RATE)["lsd_0_4k"],
                )
            )
        print(f.name, {k: round(v[-1]["lsd"], 2) for k, v in stats.items()}, flush=True)
    for name, rows in stats.items():
        keys = rows[0].keys()
        print(name, " ".join(f"{k} {np.mean([r[k] for r in rows]):.2f}" for k in keys))


if __name__ == "__main__":
    main(sys.argv[1], float(sys.argv[2]) if len(sys.argv) > 2 else 6.0)
