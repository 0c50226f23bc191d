"""Opus and MP3 round trips through the Debian command-line tools, for rate–quality baselines.

Opus: `opusenc --bitrate N --padding 0` / `opusdec` (opus-tools); opusdec honours the stream's
pre-skip and end trimming, so its output is already sample-aligned. MP3: `lame -b N` /
`lame --decode`; lame's decoder removes the encoder delay only when the file carries a
LAME/Info tag, which lame leaves out when a frame is too small to hold it (e.g. 32 kbps
at 22.05 kHz), so we drop those 576 samples ourselves in that case. Both decoded signals
are resampled back to the reference rate and cut or padded to the reference length.
The actual bitrate is always the compressed file's size over the audio's duration.
Stereo references are coded as stereo: Opus codes both channels within its one bitrate
(libopus picks its own stereo tools at low rates), MP3 as joint stereo (`-m j`).
"""

from __future__ import annotations

import shutil
import subprocess
import tempfile
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from neucomp.audio.signal import fit_length, resample
from neucomp.eval.metrics import MissingDependencyError

#: Nominal bitrates (kbps) evaluated for each baseline codec.
DEFAULT_BITRATES: dict[str, tuple[int, ...]] = {"opus": (6, 12, 24), "mp3": (32, 64)}
#: The programs each codec needs, and the Debian package that has them.
TOOLS: dict[str, tuple[tuple[str, ...], str]] = {
    "opus": (("opusenc", "opusdec"), "opus-tools"),
    "mp3": (("lame",), "lame"),
}
#: lame's fixed encoder delay in samples at the MP3's own rate (ENCDELAY in lame).
LAME_ENCODER_DELAY = 576


@dataclass(frozen=True)
class Baseline:
    """One codec at one nominal bitrate, e.g. Baseline("opus", 12)."""

    codec: str
    bitrate: int  # nominal kbps given to the encoder

    @property
    def label(self) -> str:
        return f"{self.codec} {self.bitrate} kbps"


@dataclass
class RoundTrip:
    """Decoded audio at the reference rate and length, and the compressed size."""

    audio: np.ndarray  # [T] float32 (or [C, T], as the reference was)
    n_bytes: int


def missing_tools(codec: str) -> list[str]:
    """The programs `codec` needs that are not on PATH (empty when it can run)."""
    if codec not in TOOLS:
        raise ValueError(f"unknown baseline codec {codec!r}; choose from {sorted(TOOLS)}")
    return [tool for tool in TOOLS[codec][0] if shutil.which(tool) is None]


def plan_baselines(codecs: list[str]) -> tuple[list[Baseline], list[str]]:
    """The baselines that can run for `codecs`, and one message per codec that cannot."""
    runnable: list[Baseline] = []
    notes: list[str] = []
    for codec in codecs:
        missing = missing_tools(codec)
        if missing:
            package = TOOLS[codec][1]
            notes.append(
                f"{codec} baseline skipped: {', '.join(missing)} not found "
                f"(apt-get install {package}, or `make eval-tools`)"
            )
            continue
        runnable.extend(Baseline(codec, b) for b in DEFAULT_BITRATES[codec])
    return runnable, notes


def round_trip(audio: np.ndarray, sample_rate: int, baseline: Baseline) -> RoundTrip:
    """Encode and decode float `audio` with a baseline codec: mono [T], or stereo
    [2, T] (then coded as stereo, decoded [2, T]).

    Raises MissingDependencyError if its tools are absent.
    """
    missing = missing_tools(baseline.codec)
    if missing:
        raise MissingDependencyError(f"{baseline.codec} baseline needs {', '.join(missing)}")
    a = np.asarray(audio, dtype=np.float32)
    channels = a.shape[0] if a.ndim == 2 else 1
    x = np.clip(a.reshape(channels, -1), -1.0, 1.0)
    with tempfile.TemporaryDirectory(prefix="neucomp-baseline-") as tmp:
        src = Path(tmp) / "ref.wav"
        _write_wav(src, x.T if channels > 1 else x[0], sample_rate)
        if baseline.codec == "opus":
            decoded, rate, n_bytes = _opus(src, Path(tmp), baseline.bitrate)
        else:
            decoded, rate, n_bytes = _mp3(src, Path(tmp), baseline.bitrate, stereo=channels > 1)
    if channels == 1:
        return RoundTrip(_fit(decoded.mean(axis=0), rate, sample_rate, x.shape[1]), n_bytes)
    out = np.stack([_fit(c, rate, sample_rate, x.shape[1]) for c in decoded])
    return RoundTrip(out, n_bytes)


def _opus(src: Path, tmp: Path, bitrate: int) -> tuple[np.ndarray, int, int]:
    coded, out = tmp / "coded.opus", tmp / "decoded.wav"
    # --padding 0: no room reserved for later tag edits (512 bytes by default), so the
    # size is the codec's own plus the unavoidable Ogg/OpusHead/OpusTags overhead.
    _run(["opusenc", "--quiet", "--padding", "0", "--bitrate", str(bitrate), str(src), str(coded)])
    _run(["opusdec", "--quiet", str(coded), str(out)])  # decodes at the input's rate
    decoded, rate = _read_wav(out)
    return decoded, rate, coded.stat().st_size


def _mp3(src: Path, tmp: Path, bitrate: int, stereo: bool = False) -> tuple[np.ndarray, int, int]:
    coded, out = tmp / "coded.mp3", tmp / "decoded.wav"
    mode = "j" if stereo else "m"
    _run(["lame", "--quiet", "--cbr", "-b", str(bitrate), "-m", mode, str(src), str(coded)])
    _run(["lame", "--quiet", "--decode", str(coded), str(out)])
    decoded, rate = _read_wav(out)
    if not has_lame_tag(coded.read_bytes()[:2048]):
        decoded = decoded[:, LAME_ENCODER_DELAY:]
    return decoded, rate, coded.stat().st_size


def has_lame_tag(head: bytes) -> bool:
    """True if the first MP3 frame holds a Xing/Info header (which carries the delays)."""
    return b"Info" in head[:200] or b"Xing" in head[:200]


def _fit(x: np.ndarray, rate: int, target_rate: int, length: int) -> np.ndarray:
    """Resample to `target_rate` and cut or zero-pad to `length` samples."""
    x = fit_length(resample(x, rate, target_rate)[None], length)[0]
    return x.astype(np.float32)


def _write_wav(path: Path, x: np.ndarray, rate: int) -> None:
    import soundfile as sf

    sf.write(str(path), x, rate, subtype="PCM_16")


def _read_wav(path: Path) -> tuple[np.ndarray, int]:
    """The decoded file as [C, T] float32 and its rate."""
    import soundfile as sf

    data, rate = sf.read(str(path), dtype="float32", always_2d=True)
    return np.ascontiguousarray(data.T), rate


def _run(cmd: list[str]) -> None:
    proc = subprocess.run(cmd, capture_output=True, text=True)
    if proc.returncode != 0:
        detail = (proc.stderr or proc.stdout).strip().splitlines()
        raise RuntimeError(f"{cmd[0]} failed ({proc.returncode}): {detail[-1] if detail else ''}")
