"""Candidate models side by side on one clip: a spectrogram and the clip's scores.

The picture that decides between training runs (docs/EXPERIMENTS.md): the reference
and each model's decoding of the same dev-eval clip at one bandwidth, on one dB scale,
each panel labelled with its PESQ-wb / STOI (speech) and its LSD per band. The clip is
cut to ``--seconds`` and levelled to ``--level`` dBFS RMS first; every model codes it
through the public API (container, per-chunk levelling and all).

    python -m neucomp.eval spectrogram data/deveval MODEL [MODEL ...] --out img.png \\
        [--labels shipped,P8,...] [--category speech] [--clip 0] [--bandwidth 6] [--postfilter]
"""

from __future__ import annotations

import argparse
from pathlib import Path

import numpy as np


def _clip(deveval: Path, category: str, index: int) -> Path:
    from neucomp.eval.runner import audio_files_under

    files = audio_files_under(deveval / category) if (deveval / category).is_dir() else []
    if not files:
        raise SystemExit(f"no {category} clips under {deveval}")
    if not 0 <= index < len(files):
        raise SystemExit(f"--clip {index}: {deveval / category} has {len(files)} clips")
    return files[index]


def panel_label(name: str, scores: dict[str, float]) -> str:
    """``name`` over its scores, one line each: "P8", "PESQ 2.08 STOI 0.717", "LSD 12.7/10.7"."""
    parts = [name]
    if "pesq" in scores:
        parts.append(f"PESQ {scores['pesq']:.2f} STOI {scores['stoi']:.3f}")
    lsd = [v for k, v in scores.items() if k.startswith("lsd") and np.isfinite(v)]
    if lsd:
        parts.append("LSD " + "/".join(f"{v:.1f}" for v in lsd))
    return "\n".join(parts)


def main(argv: list[str] | None = None) -> int:
    import soundfile as sf
    import torch

    import neucomp
    from neucomp.audio.signal import resample, to_mono
    from neucomp.eval import spectrogram
    from neucomp.eval.metrics import lsd_bands, rms_db, speech_scores
    from neucomp.registry import load_model

    ap = argparse.ArgumentParser(
        prog="python -m neucomp.eval spectrogram", description=__doc__.splitlines()[0]
    )
    ap.add_argument("deveval", type=Path)
    ap.add_argument("models", nargs="+", help="model names or files (a run's exported .pt)")
    ap.add_argument("--out", type=Path, required=True, help="PNG to write")
    ap.add_argument("--labels", help="comma-separated panel names (default: the file names)")
    ap.add_argument("--category", default="speech", choices=("speech", "music", "sfx"))
    ap.add_argument("--clip", type=int, default=0, help="index in the sorted category folder")
    ap.add_argument("--bandwidth", "-b", type=float, default=6.0)
    ap.add_argument("--seconds", type=float, default=5.0)
    ap.add_argument("--level", type=float, default=-23.0, help="dBFS RMS of the cut clip")
    ap.add_argument(
        "--postfilter", action="store_true", help="also each model with the decoder's postfilter"
    )
    args = ap.parse_args(argv)
    labels = args.labels.split(",") if args.labels else [Path(m).stem for m in args.models]
    if len(labels) != len(args.models):
        raise SystemExit(f"{len(labels)} labels for {len(args.models)} models")
    torch.set_num_threads(1)

    path = _clip(args.deveval, args.category, args.clip)
    audio, sr = sf.read(path, always_2d=True, dtype="float32")
    rate = load_model(args.models[0]).config.sample_rate
    ref = resample(to_mono(audio.T)[: int(sr * args.seconds)], sr, rate)
    ref = (ref * 10 ** ((args.level - rms_db(ref)) / 20)).astype(np.float32)

    def scores(deg: np.ndarray) -> dict[str, float]:
        out = speech_scores(ref, deg, rate) if args.category == "speech" else {}
        return out | lsd_bands(ref, deg, rate)

    panels = [(f"{path.stem}\nreference", ref)]
    for model, label in zip(args.models, labels, strict=True):
        # Plain packing: the entropy coder does not change the audio, and a run's
        # exported model has no coder tables of its own.
        data = neucomp.compress(ref, rate, bandwidth=args.bandwidth, model=model, coder="plain")
        for postfilter in (False, True) if args.postfilter else (False,):
            decoded, out_rate = neucomp.decompress(data, model=model, postfilter=postfilter)
            deg = to_mono(np.asarray(decoded, dtype=np.float32))  # [C, T] at the input's rate
            if out_rate != rate:
                deg = resample(deg, out_rate, rate)
            deg = deg[: len(ref)]
            s = {k: v for k, v in scores(deg).items() if np.isfinite(v)}  # none above Nyquist
            name = f"{label} + postfilter" if postfilter else label
            print(f"{name}: " + ", ".join(f"{k} {v:.3f}" for k, v in s.items()), flush=True)
            panels.append((panel_label(f"{name} {args.bandwidth:g} kbps", s), deg))
    args.out.parent.mkdir(parents=True, exist_ok=True)
    spectrogram.write(args.out, panels, rate, title=f"{path.name}, {args.level:g} dBFS")
    print(f"wrote {args.out}")
    return 0


if __name__ == "__main__":
    main()
