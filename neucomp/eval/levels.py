"""Does quality depend on how loud the input is? PESQ-wb of speech clips against level.

Each speech clip is scaled to every level in `LEVELS_DB` (RMS, dBFS; a clip whose peak
would clip is left out at that level), coded at one bandwidth and scored against the
scaled reference. A codec whose quality does not depend on level gives a flat row.
(`python -m neucomp.eval.levels data/deveval --json bench/levels.json`)
"""

from __future__ import annotations

import argparse
import json
from collections.abc import Sequence
from pathlib import Path

import numpy as np

from neucomp import DEFAULT_BANDWIDTH
from neucomp.audio import load_reference, to_mono
from neucomp.eval import metrics
from neucomp.eval.runner import EVAL_RATE, CodecFn, find_files, neucomp_codec

LEVELS_DB: tuple[float, ...] = (-50.0, -45.0, -35.0, -25.0, -15.0)


def level_sweep(
    clips: Sequence[np.ndarray],
    codec: CodecFn,
    bandwidth: float,
    levels: Sequence[float] = LEVELS_DB,
    rate: int = EVAL_RATE,
) -> dict:
    """{"levels": {level: {"pesq", "stoi", "clips"}}, "spread": worst per-clip PESQ range
    over the clips that fit at every level (None if none does), "spread_clips": n}."""
    table: dict[float, dict[str, float]] = {}
    per_clip: dict[int, dict[float, float]] = {}
    for level in levels:
        pesqs, stois = [], []
        for i, clip in enumerate(clips):
            scaled = clip * 10 ** ((level - metrics.rms_db(clip)) / 20)
            if np.abs(scaled).max() >= 1.0:
                continue
            decoded, out_rate, _ = codec(scaled.astype(np.float32), rate, bandwidth)
            deg = to_mono(np.asarray(decoded, dtype=np.float32))
            assert out_rate == rate, "the codec must give back the rate it was given"
            scores = metrics.speech_scores(scaled, deg, rate)
            if np.isfinite(scores["pesq"]):
                pesqs.append(scores["pesq"])
                per_clip.setdefault(i, {})[level] = scores["pesq"]
            stois.append(scores["stoi"])
        table[level] = {
            "pesq": float(np.mean(pesqs)) if pesqs else float("nan"),
            "stoi": float(np.mean(stois)) if stois else float("nan"),
            "clips": len(stois),
        }
    full = [v for v in per_clip.values() if len(v) == len(levels)]
    spread = max((max(v.values()) - min(v.values()) for v in full), default=None)
    return {"levels": table, "spread": spread, "spread_clips": len(full)}


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m neucomp.eval.levels", description=__doc__)
    p.add_argument("refs", nargs="+", help="dev-eval folder(s); speech clips are used")
    p.add_argument("-b", "--bandwidth", type=float, default=DEFAULT_BANDWIDTH)
    p.add_argument("--model", default=None, help="model name or .pt path")
    p.add_argument("--max-clips", type=int, default=0, help="0: every speech clip")
    p.add_argument(
        "--levels", default=",".join(f"{v:g}" for v in LEVELS_DB), help="dBFS, comma-separated"
    )
    p.add_argument("--json", type=Path, default=None)
    args = p.parse_args(argv)
    files = [f for f in find_files(args.refs) if f.category == "speech"]
    if args.max_clips:
        files = files[: args.max_clips]
    clips = [load_reference(f.path, EVAL_RATE) for f in files]
    levels = [float(v) for v in args.levels.split(",")]
    result = level_sweep(clips, neucomp_codec(model=args.model), args.bandwidth, levels)
    for level, row in result["levels"].items():
        print(
            f"{level:6.1f} dBFS  PESQ {row['pesq']:.2f}  STOI {row['stoi']:.3f}"
            f"  ({row['clips']} clips)"
        )
    if result["spread"] is not None:
        print(
            f"worst PESQ range of one clip over all levels: {result['spread']:.2f} "
            f"({result['spread_clips']} clips fit at every level)"
        )
    if args.json:
        record = {"bandwidth": args.bandwidth, "model": args.model, **result}
        args.json.write_text(json.dumps(record, indent=1))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
