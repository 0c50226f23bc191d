"""E20 pilot: a long-term (pitch) postfilter after the formant postfilter, offline.

For each speech clip: neucomp at the given bandwidths with the decoder's default
postfilter, then a causal comb y[n] = (x[n] + g x[n - T]) / (1 + g) per subframe, T and
g from the decoded signal's own normalised correlation (G.729's long-term postfilter
without its transmitted pitch). Scores at the 24 kHz eval domain: PESQ-wb, STOI, LSD.

    python scripts/e20/pitch_pf.py data/deveval/speech --bandwidths 6 --json out.json
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import numpy as np


def comb_postfilter(
    x: np.ndarray,
    rate: int,
    gamma: float = 0.5,
    threshold: float = 0.5,
    sub_s: float = 0.005,
    fmin: float = 60.0,
    fmax: float = 500.0,
    frac: int = 1,
    cutoff: float = 0.0,
) -> tuple[np.ndarray, np.ndarray]:
    """The comb-filtered signal and each subframe's gain. `frac` > 1 searches lags on a
    1/frac-sample grid (linear interpolation of the past)."""
    x = np.asarray(x, dtype=np.float64)
    sub = round(sub_s * rate)
    t_min, t_max = int(rate / fmax), int(np.ceil(rate / fmin)) + 1
    y = x.copy()
    gains = []
    lags_grid = np.arange(t_min * frac, t_max * frac + 1) / frac
    for start in range(t_max + 1, len(x) - sub + 1, sub):
        cur = x[start : start + sub]
        e_cur = cur @ cur
        if e_cur < 1e-10:
            gains.append(0.0)
            continue
        # integer lags first (vectorised), then refine around the best
        idx = start - np.arange(t_min, t_max + 1)[:, None] + np.arange(sub)[None, :]
        past = x[idx]
        num = past @ cur
        den = np.sqrt(np.einsum("ij,ij->i", past, past) * e_cur) + 1e-12
        c = num / den
        best = int(np.argmax(c))
        lag, corr, seg = float(t_min + best), c[best], past[best]
        if frac > 1:
            for t in lags_grid[(lags_grid > lag - 1) & (lags_grid < lag + 1)]:
                i0 = int(np.floor(t))
                w = t - i0  # x[n - t] = (1 - w) x[n - i0] + w x[n - i0 - 1]
                p = (1 - w) * x[start - i0 : start - i0 + sub] + w * x[
                    start - i0 - 1 : start - i0 - 1 + sub
                ]
                cc = (p @ cur) / (np.sqrt((p @ p) * e_cur) + 1e-12)
                if cc > corr:
                    lag, corr, seg = t, cc, p
        g = gamma * min(corr, 1.0) if corr >= threshold else 0.0
        gains.append(g)
        if g > 0:
            y[start : start + sub] = (cur + g * seg) / (1.0 + g)
    if cutoff > 0:  # the comb's change below `cutoff` only (zero-phase: offline pilot)
        d = np.fft.rfft(y - x)
        f = np.fft.rfftfreq(len(x), 1 / rate)
        d *= np.clip((cutoff * 1.25 - f) / (cutoff * 0.5), 0.0, 1.0)
        y = x + np.fft.irfft(d, len(x))
    return y, np.array(gains)


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("folder")
    ap.add_argument("--bandwidths", default="6")
    ap.add_argument("--gammas", default="0,0.25,0.5")
    ap.add_argument("--thresholds", default="0.5")
    ap.add_argument("--cutoffs", default="0")
    ap.add_argument("--sub-ms", type=float, default=5.0)
    ap.add_argument("--frac", type=int, default=1)
    ap.add_argument("--model", default=None)
    ap.add_argument("--max-clips", type=int, default=0)
    ap.add_argument("--json", default=None)
    a = ap.parse_args()

    import torch  # noqa: F401

    import neucomp
    from neucomp import registry

    registry.set_threads(1)  # torch and numpy's BLAS
    from neucomp.audio import load_reference
    from neucomp.audio.readers import read_audio
    from neucomp.eval import metrics
    from neucomp.eval.runner import DEFAULT_DOMAIN, _in_domain, audio_files_under

    files = audio_files_under(Path(a.folder))
    if a.max_clips:
        files = files[: a.max_clips]
    rate = DEFAULT_DOMAIN.rate
    variants = [(0.0, 0.0, 0.0)] + [
        (float(g), float(t), float(c))
        for g in a.gammas.split(",")
        for t in a.thresholds.split(",")
        for c in a.cutoffs.split(",")
        if float(g) > 0
    ]
    rows: dict[str, list[dict]] = {}
    for f in files:
        audio, sr = read_audio(f)
        ref = load_reference(f, rate)
        for bw in [float(b) for b in a.bandwidths.split(",")]:
            data = neucomp.compress(audio, sr, bandwidth=bw, model=a.model)
            dec, out_rate = neucomp.decompress(data, model=a.model)
            deg = _in_domain(dec, out_rate, DEFAULT_DOMAIN, len(ref))
            for g, t, cut in variants:
                y = (
                    deg
                    if g == 0
                    else comb_postfilter(
                        deg,
                        rate,
                        gamma=g,
                        threshold=t,
                        sub_s=a.sub_ms / 1000,
                        frac=a.frac,
                        cutoff=cut,
                    )[0].astype(np.float32)
                )
                s = metrics.speech_scores(ref, y, rate)
                s.update(metrics.lsd_bands(ref, y, rate))
                key = f"bw{bw:g}_g{g:g}_t{t:g}_c{cut:g}"
                rows.setdefault(key, []).append({"clip": f.name, **s})
        print(f.name, flush=True)
    summary = {}
    for key, rs in rows.items():
        summary[key] = {
            m: float(np.mean([r[m] for r in rs if r[m] == r[m]])) for m in rs[0] if m != "clip"
        }
        print(key, {m: round(v, 3) for m, v in summary[key].items()})
    if a.json:
        Path(a.json).write_text(json.dumps({"summary": summary, "rows": rows}, indent=1))


if __name__ == "__main__":
    main()
