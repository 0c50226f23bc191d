"""Evaluation results as rows, and their summaries: markdown tables, JSON, rate–quality plot.

A `Row` is one file through one codec at one setting. Summaries average the rows of a
(codec, setting) over the files of a category ("speech", "music", "sfx", …) and over
all files ("all"). matplotlib is imported only to draw the plot.
"""

from __future__ import annotations

import math
from collections import defaultdict
from collections.abc import Iterable, Sequence
from dataclasses import asdict, dataclass, fields
from pathlib import Path

from neucomp.eval.metrics import MissingDependencyError

#: Known categories first, in this order; others follow alphabetically, then "all".
CATEGORY_ORDER = ("speech", "music", "sfx")
OVERALL = "all"
#: Codecs in table order (neucomp first); unknown ones follow alphabetically.
CODEC_ORDER = ("neucomp", "neucomp+lm", "opus", "mp3")
METRICS = ("kbps", "visqol_audio", "visqol_speech", "si_snr", "mel_distance")
#: Bitrates marked on the plot's log axis.
XTICKS = (1.5, 3, 6, 12, 24, 48, 96)
#: Table columns: metric key → header.
COLUMNS = {
    "kbps": "actual kbps",
    "visqol_audio": "ViSQOL audio ↑",
    "visqol_speech": "ViSQOL speech ↑",
    "si_snr": "SI-SNR dB ↑",
    "mel_distance": "mel dist ↓",
}


@dataclass
class Row:
    """One file decoded by one codec at one setting, with its metrics (None = not measured)."""

    file: str
    category: str
    codec: str  # "neucomp", "neucomp+lm", "opus", "mp3"
    setting: float  # nominal kbps: neucomp bandwidth or the baseline encoder's bitrate
    seconds: float
    kbps: float
    si_snr: float
    mel_distance: float
    visqol_audio: float | None = None
    visqol_speech: float | None = None


@dataclass
class Summary:
    """Means of one (codec, setting) over the files of a category."""

    category: str
    codec: str
    setting: float
    files: int
    kbps: float | None
    visqol_audio: float | None
    visqol_speech: float | None
    si_snr: float | None
    mel_distance: float | None


def _mean(values: Iterable[float | None]) -> float | None:
    present = [v for v in values if v is not None and not math.isnan(v)]
    return sum(present) / len(present) if present else None


def _category_key(name: str) -> tuple[int, str]:
    if name == OVERALL:
        return (2, name)
    if name in CATEGORY_ORDER:
        return (0, f"{CATEGORY_ORDER.index(name):02d}")
    return (1, name)


def summarise(rows: Sequence[Row]) -> dict[str, list[Summary]]:
    """Per-category and overall means, each list sorted by codec then setting.

    When every file has the same category, only "all" is kept (it would repeat it).
    """
    groups: dict[tuple[str, str, float], list[Row]] = defaultdict(list)
    for row in rows:
        groups[(row.category, row.codec, row.setting)].append(row)
        groups[(OVERALL, row.codec, row.setting)].append(row)
    categories = {row.category for row in rows}
    out: dict[str, list[Summary]] = {}
    for (category, codec, setting), members in sorted(groups.items(), key=_group_key):
        if category != OVERALL and len(categories) == 1:
            continue
        means = {m: _mean(getattr(r, m) for r in members) for m in METRICS}
        out.setdefault(category, []).append(
            Summary(category, codec, setting, len({r.file for r in members}), **means)
        )
    return out


def _group_key(item: tuple[tuple[str, str, float], list[Row]]) -> tuple:
    (category, codec, setting), _ = item
    return (_category_key(category), _codec_key(codec), setting)


def _codec_key(codec: str) -> tuple[int, str]:
    return (CODEC_ORDER.index(codec) if codec in CODEC_ORDER else len(CODEC_ORDER), codec)


def _fmt(value: float | None, digits: int) -> str:
    return "–" if value is None else f"{value:.{digits}f}"


def markdown(rows: Sequence[Row], note: str = "") -> str:
    """Markdown tables of the means: one per category (when there are several) and overall."""
    parts = [note.strip(), ""] if note else []
    digits = {"kbps": 2, "visqol_audio": 2, "visqol_speech": 2, "si_snr": 1, "mel_distance": 3}
    for category, summaries in summarise(rows).items():
        shown = [m for m in METRICS if any(getattr(s, m) is not None for s in summaries)]
        files = max(s.files for s in summaries)
        parts.append(f"**{category}** ({files} file{'s' if files != 1 else ''})")
        parts.append("")
        parts.append("| codec | nominal kbps | " + " | ".join(COLUMNS[m] for m in shown) + " |")
        parts.append("|---|---:|" + "---:|" * len(shown))
        for s in summaries:
            cells = [_fmt(getattr(s, m), digits[m]) for m in shown]
            parts.append(f"| {s.codec} | {s.setting:g} | " + " | ".join(cells) + " |")
        parts.append("")
    return "\n".join(parts).rstrip() + "\n"


def to_json(rows: Sequence[Row], meta: dict | None = None) -> dict:
    """Everything as one JSON-able dict: metadata, per-file rows, and the summaries."""
    return {
        "meta": meta or {},
        "rows": [asdict(r) for r in rows],
        "summary": {k: [asdict(s) for s in v] for k, v in summarise(rows).items()},
    }


def rows_from_json(doc: dict) -> list[Row]:
    """Rows back from `to_json` output (e.g. to redraw a plot)."""
    names = {f.name for f in fields(Row)}
    return [Row(**{k: v for k, v in r.items() if k in names}) for r in doc["rows"]]


def plot(rows: Sequence[Row], path: str | Path, title: str = "") -> None:
    """Rate–quality PNG: mean actual kbps on x (log scale), mean ViSQOL audio on y.

    One panel per category (plus "all"), one curve per codec. Raises
    MissingDependencyError when matplotlib is absent.
    """
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        raise MissingDependencyError(
            "the plot needs matplotlib: pip install 'neucomp[eval]'"
        ) from None

    panels = summarise(rows)
    fig, axes = plt.subplots(
        1, len(panels), figsize=(4.2 * len(panels), 3.8), squeeze=False, sharey=True
    )
    for ax, (category, summaries) in zip(axes[0], panels.items(), strict=True):
        by_codec: dict[str, list[Summary]] = defaultdict(list)
        for s in summaries:
            if s.kbps is not None and s.visqol_audio is not None:
                by_codec[s.codec].append(s)
        for codec, points in by_codec.items():
            points.sort(key=lambda s: s.kbps)
            ax.plot([p.kbps for p in points], [p.visqol_audio for p in points], "o-", label=codec)
        ax.set_xscale("log")
        ax.set_xticks(XTICKS, [f"{t:g}" for t in XTICKS])
        ax.minorticks_off()
        ax.set_title(category)
        ax.set_xlabel("actual bitrate (kbps)")
        ax.grid(True, which="both", alpha=0.3)
        if by_codec:
            ax.legend(fontsize=8)
    axes[0][0].set_ylabel("ViSQOL audio (MOS-LQO)")
    if title:
        fig.suptitle(title, fontsize=10)
    fig.tight_layout()
    fig.savefig(str(path), dpi=110)
    plt.close(fig)
