"""E20: the envelope encoder's beam search, end to end on speech clips.

python scripts/e20/beam.py data/deveval/speech --beams 1,4,16 --bandwidths 3,6 --json out.json
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import numpy as np


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("folder")
    ap.add_argument("--beams", default="1,4,16")
    ap.add_argument("--bandwidths", default="6")
    ap.add_argument("--model", default=None)
    ap.add_argument("--learned-beam", type=int, default=1, help="beam for the learned RVQ too")
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

    codec = registry.load_model(a.model)
    codec.learned_beam = a.learned_beam
    rate = DEFAULT_DOMAIN.rate
    rows: dict[str, list[dict]] = {}
    for f in audio_files_under(Path(a.folder)):
        audio, sr = read_audio(f)
        ref = load_reference(f, rate)
        for bw in [float(b) for b in a.bandwidths.split(",")]:
            for beam in [int(b) for b in a.beams.split(",")]:
                codec.envelope_beam = beam
                t0 = time.perf_counter()
                data = neucomp.compress(audio, sr, bandwidth=bw, model=a.model)
                enc_s = time.perf_counter() - t0
                dec, out_rate = neucomp.decompress(data, model=a.model)
                deg = _in_domain(dec, out_rate, DEFAULT_DOMAIN, len(ref))
                s = metrics.speech_scores(ref, deg, rate)
                s.update(metrics.lsd_bands(ref, deg, rate))
                s["encode_s"] = enc_s
                s["bytes"] = len(data)
                rows.setdefault(f"bw{bw:g}_beam{beam}", []).append({"clip": f.name, **s})
        print(f.name, flush=True)
    summary = {}
    for key, rs in rows.items():
        summary[key] = {
            m: float(np.nanmean([np.nan if r[m] is None else r[m] for r in rs]))
            for m in rs[0]
            if m != "clip"
        }
        print(key, {m: round(v, 3) for m, v in summary[key].items()})
    if a.json:
        Path(a.json).write_text(json.dumps({"summary": summary, "rows": rows}, indent=1))


if __name__ == "__main__":
    main()
