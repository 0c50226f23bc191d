"""Shards: a small weighted random subset of the corpus (Opus or FLAC crops) that fits
through a lent GPU machine's transfer limit (docs/TRAINING.md)."""

from __future__ import annotations

import functools
from pathlib import Path

import numpy as np

from neucomp.data import sources as ds
from neucomp.data.corpus import CORPUS_RATE
from neucomp.data.manifest import entry_row, load_manifest, sampling_weights, write_manifest

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
    opus_level: float = 0.75,
) -> list[dict]:
    """Write weighted random `crop_s` crops (mono, at the corpus's 24 kHz) under `out`
    until the next one would pass `max_mib`; returns its manifest rows.

    `fmt` "opus" (~70 kbps Ogg/Opus) holds about 2.7× more audio per MiB than "flac":
    what matters when the shard shares the device's 64 MiB per call with the repo.
    `opus_level` is libsndfile's compression level (0.83: ~48 kbps, 1.4× the audio).

    A file shorter than a crop (a spoken word) is followed by more files of the same
    package and language, drawn with the same weights and 0.1 s apart, so that a shard's
    time per category follows the sampling weights instead of favouring long tracks."""
    import soundfile as sf

    write = SHARD_WRITERS.get(fmt)
    if write is None:
        raise ds.DataBuildError(f"unknown shard format {fmt!r} (choose {', '.join(SHARD_FORMATS)})")
    if fmt == "opus":
        write = functools.partial(ds.write_opus, level=opus_level)
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
