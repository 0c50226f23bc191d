"""The real-audio training corpus builder (`make data`).

`build` turns the TRAIN packages of docs/DATA.md (neucomp.data.packages) into 24 kHz
mono FLAC under `<out>/corpus24/<package>/…` (plus 48 kHz stereo FLAC of stereo music
under `<out>/music48/`) and a manifest (neucomp.data.manifest) that the training dataset
reads with `load_manifest` and samples with `sampling_weights`.

The build is incremental: accepted and rejected files are appended to per-package state
files as they finish, the manifest is rewritten from them every few hundred files, and a
package with a done marker is skipped entirely on the next run.
"""

from __future__ import annotations

import csv
import os
import shutil
import time
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from neucomp.audio.signal import resample, to_model_channels
from neucomp.data import sources as ds
from neucomp.data.manifest import (
    CATEGORIES,
    MANIFEST_COLUMNS,
    Entry,
    load_manifest,
    write_manifest,
)
from neucomp.data.packages import DEV_EVAL_PACKAGES, TRAIN_PACKAGES, PackageSpec, corpus_relpath

CORPUS_RATE = 24000
MUSIC_RATE = 48000
MIN_RATE = 16000
MIN_DURATION_S = 0.3
HIGH_BAND_HZ = 10500.0

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
