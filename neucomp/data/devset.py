"""The fixed dev-eval clip set (`make eval-data`): what every quality number is measured on.

Clips come only from the DEV-EVAL packages of docs/DATA.md, which the training corpus
never touches. A seeded plan picks 5–10 s clips per category: long recordings are
cropped, short ones (single words, sound events) are concatenated per speaker or group
with 0.2 s gaps. Clips keep the source's sample rate and channel count and are only
peak-normalised, so the codec sees real-world input. The same seed always gives the same
file names and the same audio.
"""

from __future__ import annotations

import re
import shutil
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from neucomp.data import sources as ds
from neucomp.data.packages import DEV_PACKAGES, QUOTAS

MIN_S, MAX_S, GAP_S = 5.0, 10.0, 0.2
PEAK = 0.9  # −0.9 dBFS: room for inter-sample peaks and codec overshoot
MIN_RATE = 16000

FILLETS_NOT_VOICES = {"x", "klavir", "room"}


@dataclass(frozen=True)
class Source:
    """One original file: where it is, which group (speaker, track, sound set) it is in."""

    package: str
    path: str
    category: str
    group: str
    rate: int
    channels: int
    frames: int

    @property
    def duration_s(self) -> float:
        return self.frames / self.rate


@dataclass(frozen=True)
class Piece:
    """A span of a source that goes into a clip."""

    source: Source
    start: int
    frames: int


@dataclass(frozen=True)
class ClipPlan:
    name: str
    category: str
    pieces: tuple[Piece, ...]

    @property
    def duration_s(self) -> float:
        rate = self.pieces[0].source.rate
        return sum(p.frames for p in self.pieces) / rate + GAP_S * (len(self.pieces) - 1)


# --------------------------------------------------------------------------- which files


def classify(package: str, rel: str) -> tuple[str, str] | None:
    """(category, group) of a file in a dev-eval package, or None when it is not used.

    Groups are what may be concatenated into one clip: one speaker (fillets: level and
    the speaker letter in the file name; qabcs: the language's narrator), one music
    track, or one package's sound set."""
    name = Path(rel).stem
    if package == "fillets-ng-data":
        # Voice lines are named LEVEL-SPEAKER-LINE; speaker "x" marks effects (growls,
        # clicks, motors), "klavir"/"room" and the "music" level are music, and the
        # unnamed files of the linux level are keyboard clicks.
        m = re.search(r"/sound/([^/]+)/en/[^/-]+-([^/-]+)-[^/]+$", rel)
        if not m or m.group(1) == "music" or m.group(2) in FILLETS_NOT_VOICES:
            return None
        return "speech", f"speaker-{m.group(2)}"
    if package == "qabcs-data":
        if "/abcs/all/noises/" in rel:
            return "sfx", "noises"
        m = re.search(r"/abcs/([^/]+)/sounds/", rel)
        return ("speech", m.group(1)) if m and m.group(1) != "all" else None
    if package == "hyperrogue-music":
        if "/music/" in rel:
            return "music", name
        return ("sfx", "sounds") if "/sounds/" in rel else None
    if package in ("oxygen-sounds", "sound-theme-freedesktop"):
        return "sfx", "sounds"
    return None


def scan_package(package: str, root: Path) -> list[Source]:
    """Sources of an unpacked package, with their format (read from the headers);
    byte-identical copies are listed once."""
    import soundfile as sf

    out = []
    seen: set[str] = set()
    for rel_path in ds.audio_files(root):
        rel = rel_path.as_posix()
        hit = classify(package, rel)
        if hit is None:
            continue
        digest = ds.file_hash(root / rel_path)
        if digest in seen:
            continue  # the same file under two names (fillets repeats lines per level)
        seen.add(digest)
        try:
            info = sf.info(str(root / rel_path))
        except (sf.LibsndfileError, RuntimeError):
            continue
        if info.samplerate < MIN_RATE or info.frames <= 0:
            continue
        category, group = hit
        # Only files of one format may be concatenated: the format joins the group.
        group = f"{group}@{info.samplerate}x{info.channels}"
        out.append(
            Source(package, rel, category, group, info.samplerate, info.channels, info.frames)
        )
    return out


# --------------------------------------------------------------------------- planning


def plan_clip(sources: list[Source], rng: np.random.Generator) -> tuple[Piece, ...] | None:
    """Pieces for one 5–10 s clip from one group: a crop of a long source, or short sources
    in random order (with gaps) until a random target length is reached; None when the
    group has too little audio left."""
    target = float(rng.uniform(MIN_S, MAX_S))
    pieces: list[Piece] = []
    total = 0.0
    for i in rng.permutation(len(sources)):
        s = sources[int(i)]
        if not pieces and s.duration_s >= MIN_S:
            n = int(round(min(s.duration_s, target) * s.rate))
            start = int(rng.integers(0, s.frames - n + 1))
            return (Piece(s, start, n),)
        add = s.duration_s + (GAP_S if pieces else 0.0)
        if s.duration_s >= MIN_S or total + add > MAX_S:
            continue
        pieces.append(Piece(s, 0, s.frames))
        total += add
        if total >= target:
            break
    return tuple(pieces) if total >= MIN_S else None


def plan_category(
    sources: list[Source], n_clips: int, rng: np.random.Generator, prefix: str
) -> list[ClipPlan]:
    """Up to `n_clips` clips, visiting the groups round-robin in a seeded order so that
    clips spread over speakers/tracks; a source is used in at most one clip."""
    groups: dict[str, list[Source]] = {}
    for s in sorted(sources, key=lambda s: s.path):
        groups.setdefault(s.group, []).append(s)
    order = [sorted(groups)[int(i)] for i in rng.permutation(len(groups))]
    plans: list[ClipPlan] = []
    while order and len(plans) < n_clips:
        for key in list(order):
            if len(plans) >= n_clips:
                break
            pieces = plan_clip(groups[key], rng)
            if pieces is None:
                order.remove(key)
                continue
            used = {p.source.path for p in pieces}
            groups[key] = [s for s in groups[key] if s.path not in used]
            category = pieces[0].source.category
            slug = re.sub(r"[^a-z0-9]+", "-", key.split("@")[0].lower()).strip("-")
            plans.append(
                ClipPlan(f"{category}/{prefix}{len(plans):02d}_{slug}.flac", category, pieces)
            )
    return plans


def plan_devset(sources: list[Source], seed: int = 0) -> list[ClipPlan]:
    """The whole clip plan: QUOTAS clips per category and package, from one seed."""
    rng = np.random.default_rng(seed)
    plans = []
    for category, quota in QUOTAS.items():
        for package, n in quota.items():
            pool = [s for s in sources if s.package == package and s.category == category]
            prefix = f"{package.split('-')[0]}_"
            plans += plan_category(pool, n, rng, prefix)
    return plans


# --------------------------------------------------------------------------- rendering


def render(plan: ClipPlan, load: Callable[[Source], np.ndarray]) -> np.ndarray:
    """The clip's audio `[C, T]`: pieces joined with GAP_S of silence, peak-normalised."""
    first = plan.pieces[0].source
    gap = np.zeros((first.channels, int(round(GAP_S * first.rate))), dtype=np.float32)
    parts = []
    for i, piece in enumerate(plan.pieces):
        audio = load(piece.source)[:, piece.start : piece.start + piece.frames]
        parts += [gap, audio] if i else [audio]
    clip = np.concatenate(parts, axis=1).astype(np.float32)
    peak = float(np.max(np.abs(clip)))
    return clip * (PEAK / peak) if peak > 0 else clip


def build(out: Path, seed: int = 0, cache: Path | None = None) -> list[dict]:
    """Fetch the dev-eval packages, plan and write the clips and manifest under `out`."""
    cache = cache or out.parent / "debs"
    scratch = out / ".scratch"
    roots, sources = {}, []
    for package in DEV_PACKAGES:
        deb = ds.download_deb(package, cache)
        roots[package] = ds.unpack_deb(deb, scratch / package)
        ds.copy_license(roots[package], package, out / "licenses")
        sources += scan_package(package, roots[package])
    plans = plan_devset(sources, seed)
    for sub in ("speech", "music", "sfx"):
        if (out / sub).exists():
            shutil.rmtree(out / sub)  # a rebuild must not keep clips of an older plan

    def load(s: Source) -> np.ndarray:
        return ds.decode(roots[s.package] / s.path)[0]

    rows = []
    for plan in plans:
        clip = render(plan, load)
        rate = plan.pieces[0].source.rate
        ds.write_flac(out / plan.name, clip, rate)
        rows.append(
            {
                "file": plan.name,
                "package": plan.pieces[0].source.package,
                "original_paths": ";".join(
                    f"{p.source.path}@{p.start / rate:.3f}+{p.frames / rate:.3f}"
                    for p in plan.pieces
                ),
                "category": plan.category,
                "duration_s": f"{clip.shape[1] / rate:.3f}",
                "rate": rate,
                "channels": clip.shape[0],
            }
        )
    ds.write_tsv(out / "manifest.tsv", rows, list(rows[0]))
    shutil.rmtree(scratch, ignore_errors=True)
    return rows
