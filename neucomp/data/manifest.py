"""The corpus manifest (one TSV row per file) and its sampling weights: what the
builders write and training reads."""

from __future__ import annotations

import csv
from collections.abc import Iterable
from dataclasses import dataclass, field, fields
from pathlib import Path

import numpy as np

from neucomp.data import sources as ds

CATEGORIES = ("speech", "music", "sfx")
MANIFEST_COLUMNS = (
    "path",
    "package",
    "category",
    "duration_s",
    "bandwidth_hz",
    "orig_rate",
    "orig_channels",
    "language",
)

# --------------------------------------------------------------------------- manifest


@dataclass
class Entry:
    """One corpus file, as listed in manifest.tsv (`path` is relative to the manifest)."""

    path: str
    package: str
    category: str
    duration_s: float
    bandwidth_hz: float
    orig_rate: int
    orig_channels: int
    language: str = ""
    full_path: Path = field(default=Path(), compare=False, repr=False)


def write_manifest(path: Path, rows: Iterable[dict]) -> None:
    """Write manifest rows (dicts with at least MANIFEST_COLUMNS) atomically, sorted by path.

    Extra keys (e.g. a shard's `source` and `offset_s`) become extra columns."""
    rows = sorted(rows, key=lambda r: r["path"])
    extra = sorted({k for r in rows for k in r} - set(MANIFEST_COLUMNS))
    ds.write_tsv(path, rows, list(MANIFEST_COLUMNS) + extra)


def load_manifest(path: str | Path) -> list[Entry]:
    """Read a manifest.tsv into Entry objects; `full_path` is resolved against its folder."""
    path = Path(path)
    root = path.parent
    with open(path, newline="", encoding="utf-8") as fp:
        reader = csv.DictReader(fp, delimiter="\t")
        return [
            Entry(
                path=row["path"],
                package=row["package"],
                category=row["category"],
                duration_s=float(row["duration_s"]),
                bandwidth_hz=float(row["bandwidth_hz"]),
                orig_rate=int(row["orig_rate"]),
                orig_channels=int(row["orig_channels"]),
                language=row.get("language") or "",
                full_path=root / row["path"],
            )
            for row in reader
        ]


def entry_row(entry: Entry) -> dict:
    """An Entry back as a manifest row (the inverse of load_manifest)."""
    return {f.name: getattr(entry, f.name) for f in fields(Entry) if f.name in MANIFEST_COLUMNS}


# --------------------------------------------------------------------------- sampling weights

DEFAULT_SHARES = {"speech": 0.4, "music": 0.4, "sfx": 0.2}


def sampling_weights(
    entries: list[Entry],
    shares: dict[str, float] | None = None,
    band_limit_hz: float = 10000.0,
    band_limited_factor: float = 0.25,
    package_power: float = 0.5,
) -> list[float]:
    """Probability of drawing each entry (they sum to 1) for crop-based training.

    * Each category gets its share of draws (default speech 0.4, music 0.4, sfx 0.2);
      a category with no entries gives its share to the others.
    * Inside a category an entry's weight grows with its duration (a uniformly random
      crop over all audio) times `band_limited_factor` when its measured bandwidth is
      below `band_limit_hz`: telephone-band speech still teaches voices, but must not
      teach the model that speech has no highs.
    * Packages are tempered: a package's total share inside its category is proportional
      to its (bandwidth-weighted) hours to the power `package_power` (0.5: square root),
      so one huge package does not drown the others (and their languages).
    """
    shares = dict(DEFAULT_SHARES if shares is None else shares)
    raw = np.array(
        [
            e.duration_s * (band_limited_factor if e.bandwidth_hz < band_limit_hz else 1.0)
            for e in entries
        ],
        dtype=np.float64,
    )
    present = {e.category for e in entries if e.category in shares}
    total_share = sum(shares[c] for c in present)
    weights = np.zeros(len(entries))
    for cat in present:
        idx = [i for i, e in enumerate(entries) if e.category == cat]
        packages: dict[str, list[int]] = {}
        for i in idx:
            packages.setdefault(entries[i].package, []).append(i)
        mass = {p: raw[ix].sum() for p, ix in packages.items()}
        tempered = {p: m**package_power if m > 0 else 0.0 for p, m in mass.items()}
        norm = sum(tempered.values())
        if norm <= 0:
            continue
        for p, ix in packages.items():
            if mass[p] > 0:
                weights[ix] = shares[cat] / total_share * tempered[p] / norm * raw[ix] / mass[p]
    s = weights.sum()
    return (weights / s).tolist() if s > 0 else weights.tolist()
