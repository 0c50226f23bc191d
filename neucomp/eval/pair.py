"""Two evaluations of the same clips, compared clip by clip: the ship decision.

A new model ships when it beats the shipped one on dev-eval PESQ-wb, STOI and LSD and is
not worse on ViSQOL (issue 10's rule). Means over 45 clips move by noise of a few
hundredths, so the comparison is paired: per clip, candidate minus base, then the mean
of those differences with its standard error and the share of clips that got better.

    neucomp eval data/deveval -b 6 --baselines none --model A.pt --json a.json
    neucomp eval data/deveval -b 6 --baselines none --model B.pt --json b.json
    python -m neucomp.eval pair a.json b.json [--setting 6] [--labels shipped,B]

The verdict: "beats" when the mean paired change of PESQ, STOI and every LSD band is in
the good direction by more than one standard error, and ViSQOL audio's mean change is
no lower than one standard error below zero. Metrics a file does not have (PESQ on
music) are left out of its pairs; metrics neither run computed are skipped.
"""

from __future__ import annotations

import argparse
import json
import math
from dataclasses import dataclass
from pathlib import Path

# metric key, label, +1 when higher is better
METRICS: tuple[tuple[str, str, int], ...] = (
    ("pesq", "PESQ-wb", 1),
    ("stoi", "STOI", 1),
    ("lsd_0_4k", "LSD 0–4k", -1),
    ("lsd_4_8k", "LSD 4–8k", -1),
    ("lsd_8_12k", "LSD 8–12k", -1),
    ("visqol_audio", "ViSQOL audio", 1),
    ("si_snr", "SI-SNR", 1),
    ("mel_distance", "mel dist", -1),
)
MUST_BEAT = ("pesq", "stoi", "lsd_0_4k", "lsd_4_8k", "lsd_8_12k")
NOT_WORSE = ("visqol_audio",)


@dataclass
class Paired:
    key: str
    label: str
    sign: int
    base: float
    cand: float
    diff: float  # mean of candidate - base
    stderr: float
    better: int  # clips where the candidate is better
    n: int

    @property
    def gain(self) -> float:
        """The change in the good direction, in standard errors (no spread: ±inf, or 0)."""
        good = self.sign * self.diff
        if self.stderr > 0:
            return good / self.stderr
        return math.copysign(math.inf, good) if good else 0.0


def _rows(path: Path, codec: str, setting: float | None) -> dict[str, dict]:
    doc = json.loads(Path(path).read_text())
    rows = doc["rows"] if isinstance(doc, dict) else doc
    picked = [r for r in rows if r.get("codec") == codec]
    if setting is not None:
        picked = [r for r in picked if r.get("setting") == setting]
    settings = {r.get("setting") for r in picked}
    if len(settings) > 1:
        raise SystemExit(f"{path}: several settings {sorted(settings)}: choose one with --setting")
    if not picked:
        raise SystemExit(f"{path}: no rows for codec {codec!r} at setting {setting}")
    return {r["file"]: r for r in picked}


def pair(base: dict[str, dict], cand: dict[str, dict]) -> list[Paired]:
    """Paired statistics of every metric both sides have, over the files both scored."""
    files = sorted(base.keys() & cand.keys())
    out = []
    for key, label, sign in METRICS:
        pairs = [
            (base[f][key], cand[f][key])
            for f in files
            if base[f].get(key) is not None and cand[f].get(key) is not None
        ]
        pairs = [(a, b) for a, b in pairs if math.isfinite(a) and math.isfinite(b)]
        if not pairs:
            continue
        n = len(pairs)
        diffs = [b - a for a, b in pairs]
        mean = sum(diffs) / n
        var = sum((d - mean) ** 2 for d in diffs) / (n - 1) if n > 1 else 0.0
        out.append(
            Paired(
                key,
                label,
                sign,
                base=sum(a for a, _ in pairs) / n,
                cand=sum(b for _, b in pairs) / n,
                diff=mean,
                stderr=math.sqrt(var / n),
                better=sum(1 for d in diffs if sign * d > 0),
                n=n,
            )
        )
    return out


def verdict(stats: list[Paired]) -> tuple[bool, list[str]]:
    """(beats, reasons it does not): the ship rule of the module docstring."""
    have = {s.key: s for s in stats}
    reasons = []
    for key in MUST_BEAT:
        if key not in have:
            reasons.append(f"no {key} in both runs")
        elif have[key].gain <= 1.0:
            reasons.append(f"{have[key].label} not better by more than one standard error")
    for key in NOT_WORSE:
        if key in have and have[key].gain < -1.0:
            reasons.append(f"{have[key].label} worse by more than one standard error")
    return not reasons, reasons


def table(stats: list[Paired], labels: tuple[str, str]) -> str:
    a, b = labels
    lines = [
        f"| metric | {a} | {b} | paired change ± s.e. | clips better |",
        "|---|---:|---:|---:|---:|",
    ]
    for s in stats:
        lines.append(
            f"| {s.label} | {s.base:.3f} | {s.cand:.3f} | {s.diff:+.3f} ± {s.stderr:.3f} "
            f"| {s.better}/{s.n} |"
        )
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m neucomp.eval pair", description=__doc__.split("\n\n")[0]
    )
    parser.add_argument("base", type=Path, help="the shipped model's `neucomp eval --json`")
    parser.add_argument("candidate", type=Path, help="the candidate's, on the same clips")
    parser.add_argument("--setting", type=float, default=None, help="bandwidth in kbps")
    parser.add_argument("--codec", default="neucomp")
    parser.add_argument("--labels", default="base,candidate", help="two column names")
    args = parser.parse_args(argv)
    labels = tuple(args.labels.split(","))
    if len(labels) != 2:
        parser.error("--labels takes two names, comma-separated")
    stats = pair(
        _rows(args.base, args.codec, args.setting), _rows(args.candidate, args.codec, args.setting)
    )
    print(table(stats, labels))  # type: ignore[arg-type]
    beats, reasons = verdict(stats)
    print()
    print(
        f"verdict: {labels[1]} beats {labels[0]}"
        if beats
        else f"verdict: {labels[1]} does not beat {labels[0]}: " + "; ".join(reasons)
    )
    return 0
