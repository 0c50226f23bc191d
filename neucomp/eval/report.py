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
CODEC_ORDER = ("reference", "neucomp", "neucomp+lm", "opus", "mp3")
#: The codec label of the uncoded reference's rows (DNSMOS only: it needs no reference).
REFERENCE = "reference"
#: Every metric of a row, in table order (speech scores first: they are the main signal).
METRICS = (
    "kbps",
    "pesq",
    "stoi",
    "lsd_0_4k",
    "lsd_4_8k",
    "lsd_8_12k",
    "lsd_12_20k",
    "side_lsd",
    "ild_error",
    "visqol_audio",
    "visqol_speech",
    "si_snr",
    "mel_distance",
    "dnsmos_sig",
    "dnsmos_bak",
    "dnsmos_ovrl",
    "dnsmos_p808",
)
#: Bitrates marked on the plot's log axis.
XTICKS = (1.5, 3, 6, 12, 24, 48, 96)
#: Table columns: metric key → header.
COLUMNS = {
    "kbps": "actual kbps",
    "pesq": "PESQ-wb ↑",
    "stoi": "STOI ↑",
    "lsd_0_4k": "LSD 0–4k ↓",
    "lsd_4_8k": "LSD 4–8k ↓",
    "lsd_8_12k": "LSD 8–12k ↓",
    "lsd_12_20k": "LSD 12–20k ↓",
    "side_lsd": "side LSD ↓",
    "ild_error": "ILD err dB ↓",
    "visqol_audio": "ViSQOL audio ↑",
    "visqol_speech": "ViSQOL speech ↑",
    "si_snr": "SI-SNR dB ↑",
    "mel_distance": "mel dist ↓",
    "dnsmos_sig": "DNSMOS SIG ↑",
    "dnsmos_bak": "DNSMOS BAK ↑",
    "dnsmos_ovrl": "DNSMOS OVRL ↑",
    "dnsmos_p808": "DNSMOS P.808 ↑",
}
#: Decimals shown per metric.
DIGITS = {m: 2 for m in METRICS} | {
    "stoi": 3,
    "si_snr": 1,
    "mel_distance": 3,
    "lsd_0_4k": 1,
    "lsd_4_8k": 1,
    "lsd_8_12k": 1,
    "lsd_12_20k": 1,
    "side_lsd": 1,
    "ild_error": 2,
}
#: Rows of the plot: metric, y label. Rows with no values at all are left out.
PLOT_METRICS = (
    ("pesq", "PESQ-wb ↑ (speech)"),
    ("lsd_0_4k", "LSD 0–4 kHz dB ↓"),
    ("lsd_12_20k", "LSD 12–20 kHz dB ↓"),
    ("side_lsd", "side LSD dB ↓ (stereo)"),
    ("visqol_audio", "ViSQOL audio ↑"),
    ("dnsmos_ovrl", "DNSMOS OVRL ↑ (speech)"),
)


@dataclass
class Row:
    """One file decoded by one codec at one setting, with its metrics (None = not measured).

    The "reference" codec's rows hold the uncoded file's own non-intrusive scores
    (DNSMOS); its setting is 0 and its reference-based metrics are None.
    """

    file: str
    category: str
    codec: str  # "reference", "neucomp", "neucomp+lm", "opus", "mp3"
    setting: float  # nominal kbps: neucomp bandwidth or the baseline encoder's bitrate
    seconds: float
    kbps: float | None
    si_snr: float | None
    mel_distance: float | None
    visqol_audio: float | None = None
    visqol_speech: float | None = None
    pesq: float | None = None  # PESQ-wb at 16 kHz, speech files only
    stoi: float | None = None  # at 16 kHz, speech files only
    lsd_0_4k: float | None = None  # log-spectral distance in dB, every file
    lsd_4_8k: float | None = None
    lsd_8_12k: float | None = None
    lsd_12_20k: float | None = None  # only at a 48 kHz scoring rate
    side_lsd: float | None = None  # stereo scoring only: the side channel (L − R) / 2
    ild_error: float | None = None  # stereo scoring only: inter-channel level difference
    dnsmos_sig: float | None = None  # DNSMOS at 16 kHz, peak-normalised, speech files only
    dnsmos_bak: float | None = None
    dnsmos_ovrl: float | None = None
    dnsmos_p808: float | None = None


@dataclass
class Summary:
    """Means of one (codec, setting) over the files of a category (None: no values)."""

    category: str
    codec: str
    setting: float
    files: int
    kbps: float | None = None
    pesq: float | None = None
    stoi: float | None = None
    lsd_0_4k: float | None = None
    lsd_4_8k: float | None = None
    lsd_8_12k: float | None = None
    lsd_12_20k: float | None = None
    side_lsd: float | None = None
    ild_error: float | None = None
    visqol_audio: float | None = None
    visqol_speech: float | None = None
    si_snr: float | None = None
    mel_distance: float | None = None
    dnsmos_sig: float | None = None
    dnsmos_bak: float | None = None
    dnsmos_ovrl: float | None = None
    dnsmos_p808: float | None = None


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
    for category, summaries in summarise(rows).items():
        shown = [m for m in METRICS if any(getattr(s, m) is not None for s in summaries)]
        files = max(s.files for s in summaries)
        parts.append(f"**{category}** ({files} file{'s' if files != 1 else ''})")
        parts.append("")
        parts.append("| codec | nominal kbps | " + " | ".join(COLUMNS[m] for m in shown) + " |")
        parts.append("|---|---:|" + "---:|" * len(shown))
        for s in summaries:
            cells = [_fmt(getattr(s, m), DIGITS[m]) for m in shown]
            setting = "–" if s.codec == REFERENCE else f"{s.setting:g}"
            parts.append(f"| {s.codec} | {setting} | " + " | ".join(cells) + " |")
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
    """Rate–quality PNG: mean actual kbps on x (log scale) against each PLOT_METRICS.

    One column per category (plus "all"), one row per metric that has values, one curve
    per codec; the reference's own DNSMOS is a dashed line. Raises
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
    shown = [
        (m, label)
        for m, label in PLOT_METRICS
        if any(getattr(s, m) is not None for ss in panels.values() for s in ss)
    ] or [next(m for m in PLOT_METRICS if m[0] == "visqol_audio")]
    fig, axes = plt.subplots(
        len(shown),
        len(panels),
        figsize=(4.2 * len(panels), 3.3 * len(shown)),
        squeeze=False,
        sharey="row",
    )
    for r, (metric, label) in enumerate(shown):
        for ax, (category, summaries) in zip(axes[r], panels.items(), strict=True):
            _plot_panel(ax, summaries, metric)
            if r == 0:
                ax.set_title(category)
            if r == len(shown) - 1:
                ax.set_xlabel("actual bitrate (kbps)")
        axes[r][0].set_ylabel(label)
    if title:
        fig.suptitle(title, fontsize=10)
    fig.tight_layout()
    fig.savefig(str(path), dpi=110)
    plt.close(fig)


def _plot_panel(ax, summaries: Sequence[Summary], metric: str) -> None:
    by_codec: dict[str, list[Summary]] = defaultdict(list)
    for s in summaries:
        value = getattr(s, metric)
        if value is None:
            continue
        if s.codec == REFERENCE:
            ax.axhline(value, color="0.4", linestyle="--", linewidth=1, label="reference")
        elif s.kbps is not None:
            by_codec[s.codec].append(s)
    for codec, points in by_codec.items():
        points.sort(key=lambda s: s.kbps)
        ax.plot([p.kbps for p in points], [getattr(p, metric) for p in points], "o-", label=codec)
    ax.set_xscale("log")
    ax.set_xticks(XTICKS, [f"{t:g}" for t in XTICKS])
    ax.minorticks_off()
    ax.grid(True, which="both", alpha=0.3)
    if by_codec:
        ax.legend(fontsize=8)
    else:
        ax.text(0.5, 0.5, "not measured", ha="center", va="center", transform=ax.transAxes)
