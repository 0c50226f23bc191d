"""Shared plumbing for building audio sets from Debian packages.

Both the training corpus (`neucomp.data.corpus`) and the dev-eval clip set
(`neucomp.data.devset`) fetch `.deb` files with apt, unpack them, decode whatever audio
format the package ships and measure it. This module holds those steps so that the two
builders only differ in *which* files they pick and what they write.

Nothing here is imported by the inference path.
"""

from __future__ import annotations

import csv
import hashlib
import os
import shutil
import subprocess
import tempfile
import zipfile
from pathlib import Path

import numpy as np

from neucomp.audio.base import AUDIO_EXTENSIONS
from neucomp.audio.writers import atomic_write, write_audio
from neucomp.errors import NeucompError

# What counts as audio inside a package: neucomp's audio extensions plus two that only
# package contents use (.oga Ogg, .g722 Asterisk prompts, decoded with ffmpeg).
SOURCE_EXTENSIONS = frozenset({*AUDIO_EXTENSIONS, ".oga", ".g722"})
ARCHIVE_EXTENSIONS = {".pk3", ".zip"}

#: A file whose peak stays below this (−60 dBFS) counts as silent.
SILENCE_PEAK = 1e-3


class DataBuildError(NeucompError):
    """A package could not be fetched or unpacked, or a needed tool is missing."""


# --------------------------------------------------------------------------- packages


def download_deb(package: str, cache: Path) -> Path:
    """Return the cached `.deb` of `package`, fetching it with `apt-get download` if needed."""
    cache.mkdir(parents=True, exist_ok=True)
    found = sorted(cache.glob(f"{package}_*.deb"))
    if found:
        return found[-1]
    proc = subprocess.run(
        ["apt-get", "download", "-q", package], cwd=cache, capture_output=True, text=True
    )
    found = sorted(cache.glob(f"{package}_*.deb"))
    if proc.returncode != 0 or not found:
        raise DataBuildError(
            f"apt-get download {package} failed: {proc.stderr.strip().splitlines()[-1:]}"
        )
    return found[-1]


def unpack_deb(deb: Path, dest: Path) -> Path:
    """Extract `deb` into a fresh `dest` (`dpkg-deb -x`) and expand audio archives inside it."""
    if dest.exists():
        shutil.rmtree(dest)
    dest.mkdir(parents=True)
    proc = subprocess.run(["dpkg-deb", "-x", str(deb), str(dest)], capture_output=True, text=True)
    if proc.returncode != 0:
        raise DataBuildError(f"dpkg-deb -x {deb.name} failed: {proc.stderr.strip()}")
    expand_archives(dest)
    return dest


def expand_archives(root: Path) -> None:
    """Unzip the audio members of every `.pk3`/`.zip` under `root` into `<archive>.d/`.

    Some games (nexuiz, ufoai) keep their music inside zip archives; expanding them next
    to the archive lets the path rules see the members as ordinary files.
    """
    for archive in sorted(p for p in root.rglob("*") if p.suffix.lower() in ARCHIVE_EXTENSIONS):
        out = archive.with_name(archive.name + ".d")
        with zipfile.ZipFile(archive) as zf:
            for info in zf.infolist():
                member = Path(info.filename)
                if info.is_dir() or member.suffix.lower() not in SOURCE_EXTENSIONS:
                    continue
                if member.is_absolute() or ".." in member.parts:
                    continue  # never write outside the scratch folder
                target = out / member
                target.parent.mkdir(parents=True, exist_ok=True)
                with zf.open(info) as src, open(target, "wb") as dst:
                    shutil.copyfileobj(src, dst)


def audio_files(root: Path) -> list[Path]:
    """All audio files under `root` (archives already expanded), as sorted relative paths."""
    return sorted(
        p.relative_to(root)
        for p in root.rglob("*")
        if p.is_file() and p.suffix.lower() in SOURCE_EXTENSIONS
    )


def copy_license(root: Path, package: str, licenses: Path) -> Path | None:
    """Copy `usr/share/doc/PKG/copyright` to `licenses/PKG.copyright`; None if absent."""
    src = root / "usr" / "share" / "doc" / package / "copyright"
    if not src.is_file():
        return None
    licenses.mkdir(parents=True, exist_ok=True)
    dst = licenses / f"{package}.copyright"
    shutil.copyfile(src, dst)
    return dst


def ensure_ffmpeg() -> str:
    """Path of ffmpeg; installs the Debian package when running as root and it is missing."""
    exe = shutil.which("ffmpeg")
    if exe:
        return exe
    if hasattr(os, "geteuid") and os.geteuid() == 0:
        subprocess.run(["apt-get", "install", "-y", "-qq", "ffmpeg"], capture_output=True)
        exe = shutil.which("ffmpeg")
        if exe:
            return exe
    raise DataBuildError("ffmpeg is needed to decode this audio: run `apt-get install -y ffmpeg`")


# --------------------------------------------------------------------------- decoding


def decode(path: Path) -> tuple[np.ndarray, int]:
    """Decode any audio file to float32 `[C, T]` at its own rate and channel count.

    libsndfile handles Vorbis, Opus, FLAC, WAV and AIFF directly; anything it refuses
    (raw G.722, odd WAV codecs, MP3 on old builds) goes through ffmpeg.
    """
    import soundfile as sf

    if path.suffix.lower() != ".g722":
        try:
            data, rate = sf.read(str(path), dtype="float32", always_2d=True)
            return np.ascontiguousarray(data.T), int(rate)
        except (sf.LibsndfileError, RuntimeError, TypeError, ValueError):
            pass
    return _decode_ffmpeg(path)


def _decode_ffmpeg(path: Path) -> tuple[np.ndarray, int]:
    import soundfile as sf

    exe = ensure_ffmpeg()
    with tempfile.TemporaryDirectory() as tmp:
        out = Path(tmp) / "decoded.wav"
        cmd = [exe, "-nostdin", "-v", "error", "-i", str(path), "-map", "0:a:0"]
        cmd += ["-c:a", "pcm_f32le", str(out)]
        proc = subprocess.run(cmd, capture_output=True, text=True)
        if proc.returncode != 0 or not out.exists():
            raise DataBuildError(f"ffmpeg could not decode {path.name}: {proc.stderr.strip()}")
        data, rate = sf.read(str(out), dtype="float32", always_2d=True)
    return np.ascontiguousarray(data.T), int(rate)


# --------------------------------------------------------------------------- measuring


def file_hash(path: Path) -> str:
    """sha1 of the file's bytes (exact-duplicate check before decoding)."""
    h = hashlib.sha1()
    with open(path, "rb") as fp:
        for block in iter(lambda: fp.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def audio_hash(audio: np.ndarray) -> str:
    """sha1 of the decoded audio quantised to 16 bits, so that the same recording stored
    in two containers (or re-encoded losslessly) counts as one."""
    audio = np.asarray(audio)
    h = hashlib.sha1(str(audio.shape).encode())
    flat = audio.reshape(-1)
    for i in range(0, flat.size, 1 << 20):  # chunked: long tracks would need GBs at once
        q = np.clip(np.round(flat[i : i + (1 << 20)].astype(np.float64) * 32767.0), -32768, 32767)
        h.update(q.astype("<i2").tobytes())
    return h.hexdigest()


def is_silent(audio: np.ndarray, peak: float = SILENCE_PEAK) -> bool:
    """True when nothing in the file rises above `peak` (default −60 dBFS)."""
    return audio.size == 0 or float(np.max(np.abs(audio))) < peak


def long_term_spectrum(
    mono: np.ndarray, rate: int, n_fft: int = 4096
) -> tuple[np.ndarray, np.ndarray]:
    """Welch average power spectrum (Hann, 50 % overlap); returns (freqs_hz, power)."""
    x = np.asarray(mono, dtype=np.float64)
    if x.size < n_fft:
        x = np.pad(x, (0, n_fft - x.size))
    hop = n_fft // 2
    n_frames = 1 + (x.size - n_fft) // hop
    # Long files: a few thousand evenly spread frames estimate the average just as well.
    step = max(1, n_frames // 4000)
    starts = np.arange(0, n_frames, step) * hop
    window = np.hanning(n_fft)
    power = np.zeros(n_fft // 2 + 1)
    for i in range(0, starts.size, 256):
        idx = starts[i : i + 256, None] + np.arange(n_fft)[None, :]
        spec = np.fft.rfft(x[idx] * window, axis=1)
        power += np.sum(spec.real**2 + spec.imag**2, axis=0)
    power /= starts.size
    return np.fft.rfftfreq(n_fft, 1.0 / rate), power


def bandwidth_hz(mono: np.ndarray, rate: int, floor_db: float = 60.0) -> float:
    """Audio bandwidth: the highest frequency whose long-term level is within `floor_db`
    of the spectral peak.

    The spectrum is a Welch average; a running median over ≈ 300 Hz keeps band edges in
    place but removes isolated tones (mains hum harmonics, a 15.7 kHz whistle) that would otherwise
    claim a bandwidth the recording does not have, and the peak ignores everything below
    40 Hz so that DC offsets or rumble do not set the reference.
    """
    if mono.size == 0 or not np.any(mono):
        return 0.0
    freqs, power = long_term_spectrum(mono, rate)
    width = 2 * int(round(150.0 / freqs[1])) + 1  # ≈ 300 Hz, odd
    padded = np.pad(power, width // 2, mode="edge")
    smooth = np.median(np.lib.stride_tricks.sliding_window_view(padded, width), axis=1)
    usable = freqs >= 40.0
    peak = float(np.max(smooth[usable]))
    if peak <= 0.0:
        return 0.0
    above = np.nonzero(usable & (smooth >= peak * 10.0 ** (-floor_db / 10.0)))[0]
    return float(freqs[above[-1]]) if above.size else 0.0


# --------------------------------------------------------------------------- writing


def _write_audio_atomic(path: Path, audio: np.ndarray, rate: int, **sf_args) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    write_audio(path, audio, rate, **sf_args)


def write_flac(path: Path, audio: np.ndarray, rate: int) -> None:
    """Write `[C, T]` float audio as 16-bit FLAC, atomically."""
    _write_audio_atomic(path, audio, rate, format="FLAC", subtype="PCM_16")


def write_opus(path: Path, audio: np.ndarray, rate: int, level: float = 0.75) -> None:
    """Write `[C, T]` float audio as Ogg/Opus, atomically. `level` is libsndfile's
    compression level (0 best … 1 smallest); 0.75 gives about 70 kbps VBR for a mono
    24 kHz signal, transparent enough for training crops at a third of FLAC's size."""
    _write_audio_atomic(path, audio, rate, format="OGG", subtype="OPUS", compression_level=level)


def read_tsv(path: Path) -> list[dict]:
    """Rows of a tab-separated table with a header (as `write_tsv` writes), as dicts."""
    with open(path, newline="", encoding="utf-8") as fp:
        return list(csv.DictReader(fp, delimiter="\t"))


def write_tsv(path: Path, rows: list[dict], columns: list[str]) -> None:
    """Write `rows` as a tab-separated table with a header, atomically (temp file, then
    rename), so an interrupted build never leaves a half-written manifest behind.

    Floats are written with three decimals; missing keys become empty cells."""
    path.parent.mkdir(parents=True, exist_ok=True)
    with atomic_write(path, text=True) as fp:
        writer = csv.DictWriter(fp, columns, delimiter="\t", lineterminator="\n", restval="")
        writer.writeheader()
        for row in rows:
            writer.writerow({k: _cell(row.get(k, "")) for k in columns})


def _cell(value: object) -> str:
    return f"{value:.3f}" if isinstance(value, float) else str(value)
