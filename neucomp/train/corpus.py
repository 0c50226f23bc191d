"""The real-audio training corpus (`make data`), its manifest, sampling weights and shards.

`build` turns the TRAIN packages of docs/DATA.md into 24 kHz mono FLAC under
`<out>/corpus24/<package>/…` (plus 48 kHz stereo FLAC of stereo music under
`<out>/music48/`) and a manifest that the training dataset reads with `load_manifest`
and samples with `sampling_weights`. `shard` packs a small weighted random subset for a
lent GPU machine.

The build is incremental: accepted and rejected files are appended to per-package state
files as they finish, the manifest is rewritten from them every few hundred files, and a
package with a done marker is skipped entirely on the next run.
"""

from __future__ import annotations

import argparse
import csv
import os
import re
import shutil
import sys
import time
from collections.abc import Callable, Iterable
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass, field, fields
from pathlib import Path

import numpy as np

from neucomp import datasets as ds
from neucomp.audio.signal import resample, to_model_channels

CORPUS_RATE = 24000
MUSIC_RATE = 48000
MIN_RATE = 16000
MIN_DURATION_S = 0.3
HIGH_BAND_HZ = 10500.0
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

# --------------------------------------------------------------------------- package rules

#: A rule maps a path inside the unpacked package to (category, language), or None to skip.
Rule = Callable[[str], "tuple[str, str] | None"]


def _match(pattern: str, category: str, language: str | int = "") -> Rule:
    """Rule: paths matching `pattern` get `category`; `language` is a constant or the
    number of the regex group that holds it."""
    rx = re.compile(pattern)

    def rule(rel: str) -> tuple[str, str] | None:
        m = rx.search(rel)
        if not m:
            return None
        lang = m.group(language) if isinstance(language, int) else language
        return category, lang or ""

    return rule


def _skip(pattern: str) -> Rule:
    """Rule: paths matching `pattern` are left out (the first matching rule wins)."""
    rx = re.compile(pattern)
    return lambda rel: ("", "") if rx.search(rel) else None


@dataclass(frozen=True)
class PackageSpec:
    """Which files of one Debian package go into the corpus, and as what."""

    name: str
    rules: tuple[Rule, ...]

    def classify(self, rel: str) -> tuple[str, str] | None:
        """(category, language) for a path inside the package, or None to leave it out."""
        for rule in self.rules:
            hit = rule(rel)
            if hit is not None:
                return hit if hit[0] else None
        return None


def _all(category: str, language: str = "") -> tuple[Rule, ...]:
    return (_match(r".", category, language),)


def _asterisk(lang: str) -> PackageSpec:
    return PackageSpec(f"asterisk-core-sounds-{lang}-g722", _all("speech", lang))


#: Dev-eval packages: never part of the corpus (checked when the corpus is built).
DEV_EVAL_PACKAGES = frozenset(
    {"qabcs-data", "hyperrogue-music", "oxygen-sounds", "sound-theme-freedesktop"}
)

# Ordered so that the first packages already give a usable mix of speech, music and sfx.
TRAIN_PACKAGES: tuple[PackageSpec, ...] = (
    PackageSpec(
        "tuxpaint-stamps-default",
        (
            _match(r"_desc_([A-Za-z@]+(?:_[A-Z]{2})?)(?:\.ogg)?\.(?:ogg|wav)$", "speech", 1),
            _match(r"_desc\.(?:ogg|wav)$", "speech", "en"),
            _match(r".", "sfx"),
        ),
    ),
    PackageSpec("warzone2100-music", _all("music")),
    PackageSpec(
        "fillets-ng-data-cs",
        (_match(r"/sound/.*/cs/", "speech", "cs"), _match(r"/sound/", "sfx")),
    ),
    PackageSpec("planetblupi-music-ogg", _all("music")),
    PackageSpec("klettres-data", (_match(r"/klettres/([^/]+)/", "speech", 1),)),
    PackageSpec(
        "hedgewars-data",
        (_match(r"/Data/Music/", "music"), _match(r"/Data/Sounds/", "sfx")),
    ),
    PackageSpec(
        "ktuberling-data",
        (_match(r"/ktuberling/sounds/([^/]+)/", "speech", 1), _match(r".", "sfx")),
    ),
    PackageSpec("ufoai-music", _all("music")),
    PackageSpec("hydrogen-drumkits", _all("sfx")),
    PackageSpec(
        "fillets-ng-data",
        (
            _skip(r"/sound/(?:.*/)?en/"),  # the English dialogue is dev-eval
            _match(r"/music/", "music"),
            _match(r"/sound/", "sfx"),
        ),
    ),
    PackageSpec("festvox-ru", (_match(r"/wav/", "speech", "ru"),)),
    PackageSpec("gcin-voice", _all("speech", "zh")),
    PackageSpec("fillets-ng-data-nl", (_match(r"/sound/", "speech", "nl"),)),
    *(_asterisk(lang) for lang in ("en", "es", "fr", "it", "ru")),
    PackageSpec("wesnoth-1.16-music", _all("music")),
    PackageSpec("nexuiz-music", _all("music")),
    PackageSpec(
        "colobot-common-sounds",
        (_match(r"/music/", "music"), _match(r"/sounds/", "sfx")),
    ),
    PackageSpec("drascula-music", _all("music")),
    PackageSpec("megaglest-data", (_match(r"/music/", "music"), _match(r".", "sfx"))),
    PackageSpec("fretsonfire-songs-sectoid", _all("music")),
    PackageSpec(
        "lmms-common",
        (_skip(r"/samples/(?:.*/)?(?:waveforms|shapes)/"), _match(r"/samples/", "sfx")),
    ),
    PackageSpec("sonic-pi-samples", _all("sfx")),
    PackageSpec("bucklespring-data", _all("sfx")),
)


def corpus_relpath(package: str, rel: str) -> str:
    """Where a source file lands inside the corpus: `<package>/<path>.flac`, without the
    `usr/share/(games/)` prefix that every package repeats."""
    short = re.sub(r"^usr/share/(?:games/)?", "", rel)
    return f"{package}/{Path(short).with_suffix('.flac').as_posix()}"


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


# --------------------------------------------------------------------------- building


@dataclass(frozen=True)
class Job:
    """One source file to convert (picklable, runs in a worker process)."""

    src: Path
    rel: str
    out24: Path
    out48: Path | None
    category: str
    language: str


def _nice_worker() -> None:
    """Run conversions at niceness 10 (not 10 more than the parent: `nice make data`
    would otherwise starve them completely next to a training run)."""
    os.nice(max(0, 10 - os.nice(0)))


def convert(job: Job) -> dict:
    """Decode, check, measure and write one file; returns a state row (with `status`)."""
    base = {"source": job.rel, "path": "", "status": "ok"}
    try:
        audio, rate = ds.decode(job.src)
    except ds.DataBuildError as err:
        return base | {"status": f"undecodable: {err}"[:200]}
    channels, n = audio.shape
    duration = n / rate if rate else 0.0
    if rate < MIN_RATE:
        return base | {"status": f"rate {rate} < {MIN_RATE}"}
    if duration < MIN_DURATION_S:
        return base | {"status": f"short {duration:.2f}s"}
    if ds.is_silent(audio):
        return base | {"status": "silent"}
    digest = ds.audio_hash(audio)  # of the decoded audio as it is, before any gain
    peak = float(np.max(np.abs(audio)))
    if peak > 1.0:
        audio = audio * (0.999 / peak)  # lossy decodes overshoot: scale rather than clip
    mono = to_model_channels(audio, 1)
    row = base | {
        "audio_hash": digest,
        "duration_s": round(duration, 3),
        "bandwidth_hz": round(ds.bandwidth_hz(mono[0], rate), 1),
        "orig_rate": rate,
        "orig_channels": channels,
        "category": job.category,
        "language": job.language,
    }
    ds.write_flac(job.out24, resample(mono, rate, CORPUS_RATE), CORPUS_RATE)
    if job.out48 is not None and channels >= 2:
        stereo = to_model_channels(audio, 2)
        ds.write_flac(job.out48, resample(stereo, rate, MUSIC_RATE), MUSIC_RATE)
        row["music48"] = "1"
    return row


STATE_COLUMNS = (
    "source",
    "status",
    "path",
    "category",
    "language",
    "duration_s",
    "bandwidth_hz",
    "orig_rate",
    "orig_channels",
    "file_hash",
    "audio_hash",
    "music48",
)


class Corpus:
    """The output folder layout and its per-package state files."""

    def __init__(self, out: Path):
        self.out = out
        self.root = out / "corpus24"
        self.music = out / "music48"
        self.state = self.root / ".state"
        self.debs = out / "debs"
        self.scratch = out / "scratch"
        self.licenses = out / "licenses"

    def done_marker(self, package: str) -> Path:
        return self.state / f"{package}.done"

    def state_file(self, package: str) -> Path:
        return self.state / f"{package}.tsv"

    def read_state(self, package: str) -> list[dict]:
        path = self.state_file(package)
        if not path.exists():
            return []
        return ds.read_tsv(path)

    def append_state(self, package: str, rows: list[dict]) -> None:
        path = self.state_file(package)
        new = not path.exists()
        path.parent.mkdir(parents=True, exist_ok=True)
        with open(path, "a", newline="", encoding="utf-8") as fp:
            w = csv.DictWriter(fp, STATE_COLUMNS, delimiter="\t", lineterminator="\n")
            if new:
                w.writeheader()
            for row in rows:
                w.writerow({k: row.get(k, "") for k in STATE_COLUMNS})

    def all_state(self) -> dict[str, list[dict]]:
        return {p.stem: self.read_state(p.stem) for p in sorted(self.state.glob("*.tsv"))}

    def rewrite_manifests(self) -> tuple[list[dict], list[dict]]:
        """Regenerate manifest.tsv (and music48/manifest.tsv) from all state files."""
        rows, music = [], []
        for package, state in self.all_state().items():
            for r in state:
                if r["status"] != "ok":
                    continue
                row = {k: r[k] for k in MANIFEST_COLUMNS if k in r} | {"package": package}
                rows.append(row)
                if r.get("music48"):
                    music.append(row)
        write_manifest(self.root / "manifest.tsv", rows)
        if music:
            write_manifest(self.music / "manifest.tsv", music)
        return rows, music


def build_package(corpus: Corpus, spec: PackageSpec, seen: set[str], workers: int = 2) -> None:
    """Fetch, unpack and convert one package, resuming from its state file."""
    if spec.name in DEV_EVAL_PACKAGES:
        raise ds.DataBuildError(f"{spec.name} is a dev-eval package and must not be trained on")
    t0 = time.time()
    deb = ds.download_deb(spec.name, corpus.debs)
    scratch = ds.unpack_deb(deb, corpus.scratch / spec.name)
    ds.copy_license(scratch, spec.name, corpus.licenses)
    done = {r["source"] for r in corpus.read_state(spec.name)}
    jobs: list[Job] = []
    file_hashes: list[str] = []
    dup_rows: list[dict] = []
    taken = {r["path"] for r in corpus.read_state(spec.name) if r["path"]}
    for rel_path in ds.audio_files(scratch):
        rel = rel_path.as_posix()
        hit = spec.classify(rel)
        if hit is None or rel in done:
            continue
        category, language = hit
        fhash = ds.file_hash(scratch / rel_path)
        if fhash in seen:
            dup_rows.append({"source": rel, "status": "duplicate bytes", "file_hash": fhash})
            continue
        seen.add(fhash)
        out_rel = corpus_relpath(spec.name, rel)
        if out_rel in taken:  # x.ogg next to x.wav: keep the source suffix in the name
            out_rel = out_rel.removesuffix(".flac") + rel_path.suffix + ".flac"
        taken.add(out_rel)
        out48 = corpus.music / out_rel if category == "music" else None
        jobs.append(Job(scratch / rel_path, rel, corpus.root / out_rel, out48, category, language))
        file_hashes.append(fhash)
    corpus.append_state(spec.name, dup_rows)
    print(f"[{spec.name}] {len(jobs)} files to convert", flush=True)

    batch: list[dict] = []
    n_ok, last_flush = 0, time.time()
    with ProcessPoolExecutor(max_workers=workers, initializer=_nice_worker) as pool:
        for i, row in enumerate(pool.map(convert, jobs, chunksize=4)):
            row["file_hash"] = file_hashes[i]
            if row["status"] == "ok":
                if row["audio_hash"] in seen:
                    _remove(jobs[i])
                    row = {"source": row["source"], "status": "duplicate audio"}
                    row["file_hash"] = file_hashes[i]
                else:
                    seen.add(row["audio_hash"])
                    row["path"] = jobs[i].out24.relative_to(corpus.root).as_posix()
                    n_ok += 1
            batch.append(row)
            # Flush often enough that a partial corpus is usable while long packages run.
            if len(batch) >= 200 or time.time() - last_flush > 120:
                corpus.append_state(spec.name, batch)
                corpus.rewrite_manifests()
                batch, last_flush = [], time.time()
    corpus.append_state(spec.name, batch)
    corpus.done_marker(spec.name).touch()
    shutil.rmtree(scratch, ignore_errors=True)
    corpus.rewrite_manifests()
    print(f"[{spec.name}] {n_ok} files kept in {time.time() - t0:.0f} s", flush=True)


def _remove(job: Job) -> None:
    job.out24.unlink(missing_ok=True)
    if job.out48 is not None:
        job.out48.unlink(missing_ok=True)


def summarize(entries: list[Entry]) -> str:
    """Hours per category, and how much of each reaches 10.5 kHz of bandwidth."""
    lines = [f"{'category':8s} {'files':>7s} {'hours':>7s} {'h >=10.5k':>9s}"]
    for cat in CATEGORIES:
        sel = [e for e in entries if e.category == cat]
        hours = sum(e.duration_s for e in sel) / 3600
        wide = sum(e.duration_s for e in sel if e.bandwidth_hz >= HIGH_BAND_HZ) / 3600
        lines.append(f"{cat:8s} {len(sel):7d} {hours:7.2f} {wide:9.2f}")
    total = sum(e.duration_s for e in entries) / 3600
    wide = sum(e.duration_s for e in entries if e.bandwidth_hz >= HIGH_BAND_HZ) / 3600
    lines.append(f"{'total':8s} {len(entries):7d} {total:7.2f} {wide:9.2f}")
    return "\n".join(lines)


def build(out: Path, packages: list[str] | None = None, workers: int = 2) -> list[Entry]:
    """Build (or resume) the corpus under `out`; returns the manifest entries."""
    corpus = Corpus(out)
    specs = [s for s in TRAIN_PACKAGES if packages is None or s.name in packages]
    unknown = set(packages or ()) - {s.name for s in specs}
    if unknown:
        raise ds.DataBuildError(f"not a train package: {', '.join(sorted(unknown))}")
    seen: set[str] = set()
    for state in corpus.all_state().values():
        for r in state:
            seen.update(h for h in (r.get("file_hash"), r.get("audio_hash")) if h)
    for spec in specs:
        if corpus.done_marker(spec.name).exists():
            print(f"[{spec.name}] done already", flush=True)
            continue
        build_package(corpus, spec, seen, workers)
    corpus.rewrite_manifests()
    entries = load_manifest(corpus.root / "manifest.tsv")
    print(summarize(entries), flush=True)
    return entries


# --------------------------------------------------------------------------- shards


# Shard formats and their writers; the first is the default.
SHARD_WRITERS = {"opus": ds.write_opus, "flac": ds.write_flac}
SHARD_FORMATS = tuple(SHARD_WRITERS)


def make_shard(
    manifest: Path,
    out: Path,
    max_mib: float = 24.0,
    seed: int = 0,
    crop_s: float = 8.0,
    fmt: str = "opus",
) -> list[dict]:
    """Write weighted random `crop_s` crops (mono, at the corpus's 24 kHz) under `out`
    until the next one would pass `max_mib`; returns its manifest rows.

    `fmt` "opus" (~70 kbps Ogg/Opus) holds about 2.7× more audio per MiB than "flac":
    what matters when the shard shares the device's 64 MiB per call with the repo.

    A file shorter than a crop (a spoken word) is followed by more files of the same
    package and language, drawn with the same weights and 0.1 s apart, so that a shard's
    time per category follows the sampling weights instead of favouring long tracks."""
    import soundfile as sf

    write = SHARD_WRITERS.get(fmt)
    if write is None:
        raise ds.DataBuildError(f"unknown shard format {fmt!r} (choose {', '.join(SHARD_FORMATS)})")
    entries = load_manifest(manifest)
    if not entries:
        raise ds.DataBuildError(f"{manifest} lists no files")
    weights = np.asarray(sampling_weights(entries))
    members: dict[tuple[str, str], list[int]] = {}
    for i, e in enumerate(entries):
        members.setdefault((e.package, e.language), []).append(i)
    groups = {k: np.asarray(v) for k, v in members.items()}
    rng = np.random.default_rng(seed)
    budget = int(max_mib * 2**20) - 64 * 1024  # leave room for the manifest
    used, rows, misses, silent = 0, [], 0, 0
    while misses < 20 and silent < 1000:
        first = entries[int(rng.choice(len(entries), p=weights))]
        pool = groups[(first.package, first.language)]
        pool_p = weights[pool] / weights[pool].sum()
        parts, picked, e = [], [], first
        rate = CORPUS_RATE
        for _ in range(64):  # bounded: a group of tiny files cannot loop forever
            info = sf.info(str(e.full_path))
            rate = info.samplerate
            have = sum(p.size for p in parts)
            n = int(crop_s * rate) - have
            start = int(rng.integers(0, max(1, info.frames - n + 1)))
            audio, _ = sf.read(str(e.full_path), start=start, frames=n, dtype="float32")
            audio = audio.mean(axis=1) if audio.ndim > 1 else audio
            if parts:
                parts.append(np.zeros(int(0.1 * rate), dtype=np.float32))
            parts.append(audio)
            picked.append((e, start))
            if sum(p.size for p in parts) >= int(crop_s * rate) - int(0.1 * rate):
                break
            e = entries[int(pool[rng.choice(pool.size, p=pool_p)])]
        clip = np.concatenate(parts)[: int(crop_s * rate)]
        if ds.is_silent(clip):
            silent += 1
            continue
        name = f"{len(rows):05d}.{fmt}"
        write(out / first.category / name, clip[None, :], rate)
        size = (out / first.category / name).stat().st_size
        if used + size > budget:
            (out / first.category / name).unlink()
            misses += 1
            continue
        used += size
        rows.append(
            entry_row(first)
            | {
                "path": f"{first.category}/{name}",
                "duration_s": round(clip.size / rate, 3),
                "bandwidth_hz": min(p.bandwidth_hz for p, _ in picked),
                "source": ";".join(p.path for p, _ in picked),
                "offset_s": round(picked[0][1] / rate, 3),
            }
        )
    write_manifest(out / "manifest.tsv", rows)
    return rows


# --------------------------------------------------------------------------- CLI


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m neucomp.train.corpus", description=__doc__)
    sub = parser.add_subparsers(dest="cmd", required=True)
    b = sub.add_parser("build", help="fetch and convert the train packages")
    b.add_argument("--out", type=Path, default=Path("data"))
    b.add_argument("--packages", nargs="*", help="only these packages (default: all)")
    b.add_argument("--workers", type=int, default=2, help="conversion processes (max 2)")
    s = sub.add_parser("shard", help="a small weighted random subset for a GPU machine")
    s.add_argument("--corpus", type=Path, default=Path("data/corpus24"))
    s.add_argument("--out", type=Path, required=True)
    s.add_argument("--max-mib", type=float, default=24.0)
    s.add_argument("--format", choices=SHARD_FORMATS, default="opus", dest="fmt")
    s.add_argument("--seed", type=int, default=0)
    s.add_argument("--crop-s", type=float, default=8.0)
    sub.add_parser("summary", help="hours per category of an existing corpus").add_argument(
        "--corpus", type=Path, default=Path("data/corpus24")
    )
    args = parser.parse_args(argv)
    try:
        if args.cmd == "build":
            build(args.out, args.packages, workers=max(1, min(2, args.workers)))
        elif args.cmd == "shard":
            if args.out.exists():
                shutil.rmtree(args.out)
            rows = make_shard(
                args.corpus / "manifest.tsv",
                args.out,
                args.max_mib,
                args.seed,
                args.crop_s,
                args.fmt,
            )
            minutes = sum(float(r["duration_s"]) for r in rows) / 60
            print(f"{len(rows)} crops, {minutes:.1f} min of audio in {args.out}")
        else:
            print(summarize(load_manifest(args.corpus / "manifest.tsv")))
    except ds.DataBuildError as err:
        print(f"error: {err}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
