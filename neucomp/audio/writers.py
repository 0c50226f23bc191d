"""Audio out: the formats we write, the block writer, output checks, and the one atomic
write (files and stdout).

A failed or interrupted run never leaves a partial output: :func:`atomic_output` writes
to a temp file that only becomes the target when everything succeeded.
"""

from __future__ import annotations

import contextlib
import glob
import io
import os
import shutil
import stat
import sys
import tempfile
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import BinaryIO

import numpy as np

from neucomp.audio.base import AUDIO_EXTENSIONS, STDIO, GuardedFile
from neucomp.errors import OutputError, UsageError
from neucomp.signals import deferred_termination, writing

# Output extension → (soundfile format, default subtype).
OUTPUT_FORMATS = {".wav": ("WAV", "PCM_16"), ".flac": ("FLAC", "PCM_16")}


def output_format(target: str | os.PathLike, float_wav: bool = False) -> tuple[str, str]:
    """(soundfile format, subtype) for an output name; stdout gets WAV."""
    suffix = ".wav" if str(target) == STDIO else Path(target).suffix.lower()
    if suffix not in OUTPUT_FORMATS:
        raise UsageError(
            f"cannot write '{Path(target).name}': unsupported output format "
            f"'{suffix or '(none)'}' (use .wav or .flac)"
        )
    fmt, subtype = OUTPUT_FORMATS[suffix]
    if float_wav:
        if fmt != "WAV":
            raise UsageError("--float needs a .wav output")
        subtype = "FLOAT"
    return fmt, subtype


class AudioWriter:
    """Write ``[C, n]`` blocks to a seekable binary file in one of :data:`OUTPUT_FORMATS`."""

    def __init__(
        self, fp: BinaryIO, sample_rate: int, channels: int, fmt: str, subtype: str
    ) -> None:
        import soundfile as sf

        self._fp = GuardedFile(fp)
        self._sf = sf.SoundFile(
            self._fp, "w", samplerate=sample_rate, channels=channels, format=fmt, subtype=subtype
        )
        self._clip = subtype != "FLOAT"
        self.frames = 0

    def write(self, block: np.ndarray) -> None:
        if block.shape[1] == 0:
            return
        if self._clip:  # integer formats: out-of-range samples would wrap, not saturate
            block = np.clip(block, -1.0, 1.0)
        with deferred_termination():  # not inside libsndfile's callbacks (see readers)
            self._sf.write(np.ascontiguousarray(block.T))
        self._fp.raise_error()
        self.frames += block.shape[1]

    def close(self) -> None:
        with deferred_termination():
            self._sf.close()
        self._fp.raise_error()


# WAV size fields that say "unknown: read to the end of the stream", as ffmpeg writes
# them to a pipe (neucomp.audio.wavstream reads them back).
UNKNOWN_SIZE = 0xFFFFFFFF
_WAVE_PCM, _WAVE_FLOAT = 0x0001, 0x0003


def wav_header(sample_rate: int, channels: int, subtype: str, frames: int | None) -> bytes:
    """A RIFF/WAVE header for ``frames`` frames (None: a length not known yet, written
    as 0xFFFFFFFF like ffmpeg on a pipe; so is one too long for 32-bit sizes). PCM_16 is
    the canonical 44-byte header; FLOAT adds the fact chunk the spec asks of non-PCM."""
    import struct

    width = 4 if subtype == "FLOAT" else 2
    tag = _WAVE_FLOAT if subtype == "FLOAT" else _WAVE_PCM
    align = channels * width
    fmt = struct.pack("<HHIIHH", tag, channels, sample_rate, sample_rate * align, align, width * 8)
    fact_frames = UNKNOWN_SIZE if frames is None or frames > UNKNOWN_SIZE else frames
    fact = b"fact" + struct.pack("<II", 4, fact_frames) if tag == _WAVE_FLOAT else b""
    head_bytes = 4 + 8 + len(fmt) + len(fact) + 8
    data = None if frames is None else frames * align
    if data is None or head_bytes + data > UNKNOWN_SIZE:
        riff, data = UNKNOWN_SIZE, UNKNOWN_SIZE
    else:
        riff = head_bytes + data
    return (
        b"RIFF"
        + struct.pack("<I", riff)
        + b"WAVE"
        + b"fmt "
        + struct.pack("<I", len(fmt))
        + fmt
        + fact
        + b"data"
        + struct.pack("<I", data)
    )


class WavStreamWriter:
    """Writes ``[C, n]`` blocks as WAV to a pipe (stdout), front to back, never seeking,
    each block flushed at once so that a player downstream starts while we decode.

    ``frames`` is the length when it is known up front (it goes into the header; the
    writer checks it is kept), else None: the header then says "unknown" (0xFFFFFFFF).
    The header goes out with the first samples (or at close, for an empty stream), so
    an error before any audio writes nothing. Samples are converted by libsndfile
    itself, block by block, so they are exactly those a .wav file of the same audio gets.
    """

    def __init__(
        self, fp: BinaryIO, sample_rate: int, channels: int, subtype: str, frames: int | None
    ) -> None:
        if subtype not in ("PCM_16", "FLOAT"):
            raise ValueError(f"streamed WAV is PCM_16 or FLOAT, not {subtype}")
        self._fp = fp
        self.sample_rate, self.channels, self.subtype = sample_rate, channels, subtype
        self.declared = frames
        self.frames = 0
        self.bytes_written = 0
        self._header_out = False

    def _put(self, data: bytes) -> None:
        if not self._header_out:  # one write with the first samples
            self._header_out = True
            head = wav_header(self.sample_rate, self.channels, self.subtype, self.declared)
            data = head + data
        self._fp.write(data)
        self._fp.flush()
        self.bytes_written += len(data)

    def write(self, block: np.ndarray) -> None:
        if block.shape[1] == 0:
            return
        if self.declared is not None and self.frames + block.shape[1] > self.declared:
            raise OutputError("the decoded audio is longer than the length its header promised")
        if self.subtype == "FLOAT":
            raw = np.ascontiguousarray(block.T, dtype="<f4").tobytes()
        else:
            import soundfile as sf

            buf = io.BytesIO()  # headerless: libsndfile's float→int16, as in a .wav file
            with deferred_termination():  # not inside libsndfile's callbacks (see readers)
                sf.write(buf, np.clip(block, -1, 1).T, self.sample_rate, "PCM_16", format="RAW")
            raw = buf.getvalue()
        self._put(raw)
        self.frames += block.shape[1]

    def close(self) -> None:
        if self.declared is not None and self.frames != self.declared:
            raise OutputError(
                f"the stream gave {self.frames} frames, not the {self.declared} its end "
                "record announced"
            )
        if not self._header_out:
            self._put(b"")


def check_distinct(source: str | os.PathLike, target: str | os.PathLike) -> None:
    """OutputError if OUT is IN itself (the same path, or a link to the same file)."""
    if STDIO in (str(source), str(target)):
        return
    try:
        same = os.path.samefile(source, target)
    except OSError:  # OUT does not exist yet
        return
    if same:
        raise OutputError(f"OUT '{target}' is the input file itself")


def check_ecdc_name(target: str | os.PathLike) -> None:
    """Refuse to write .ecdc bytes under an audio file's name (e.g. ``out.mp3``)."""
    suffix = Path(target).suffix.lower()
    if str(target) != STDIO and suffix in AUDIO_EXTENSIONS:
        raise UsageError(
            f"cannot write '{Path(target).name}': compress writes .ecdc files, not "
            f"'{suffix}' audio (name OUT .ecdc)"
        )


def check_output(target: str | os.PathLike, force: bool) -> None:
    """Fail early (before any work) if an output path cannot or must not be written."""
    if str(target) == STDIO:
        if sys.stdout.isatty():
            raise OutputError("OUT is - but stdout is a terminal: pipe it on or redirect it")
        return
    path = Path(target)
    if path.is_dir():
        raise OutputError(f"'{target}' is a folder")
    if path.exists() and not force:
        raise OutputError(f"'{target}' already exists (use -f to overwrite)")
    parent = path.parent
    if not parent.is_dir():
        raise OutputError(f"output folder '{parent}' does not exist")
    if not os.access(parent, os.W_OK):
        reason = "permission denied"
        with contextlib.suppress(OSError):
            if os.statvfs(parent).f_flag & os.ST_RDONLY:
                reason = "read-only file system"
        raise OutputError(f"cannot write to folder '{parent}': {reason}")


def _output_mode(path: Path) -> int:
    """The mode a plain ``open(path, "w")`` would leave: an existing file keeps its own,
    a new one gets 0666 less the umask (mkstemp's 0600 would hide outputs from others)."""
    with contextlib.suppress(OSError):
        return stat.S_IMODE(os.stat(path).st_mode)
    umask = os.umask(0o022)  # the only portable way to read it is to set it
    os.umask(umask)
    return 0o666 & ~umask


def remove_stale_parts(target: Path) -> None:
    """Delete temp files of ``target`` (``.NAME.PID.XXXXXXXX.part``) whose writer process
    is gone: what a SIGKILL or a power cut leaves. Another live run's files stay."""
    prefix = f".{target.name}."
    with contextlib.suppress(OSError):
        for part in target.parent.glob(f"{glob.escape(prefix)}*.part"):
            pid = part.name[len(prefix) :].split(".")[0]
            if pid.isdigit() and not _alive(int(pid)):
                with contextlib.suppress(OSError):
                    part.unlink()


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except OSError:  # e.g. another user's process: it exists
        return True
    return True


@contextlib.contextmanager
def atomic_output(
    target: str | os.PathLike, force: bool = False, stream_stdout: bool = False
) -> Iterator[BinaryIO]:
    """A binary file that becomes ``target`` only if the block succeeds.

    The data goes to a hidden temp file in the same folder, which is renamed into place
    at the end (an atomic replace) or deleted on any error or Ctrl-C, so a failed run
    never leaves a partial output. For ``"-"`` the bytes are spooled to an anonymous
    temp file and copied to stdout at the end, so that a failure writes nothing, unless
    ``stream_stdout`` asks for stdout itself (not seekable; for formats that never seek).
    """
    check_output(target, force)
    if str(target) == STDIO and stream_stdout:
        yield sys.stdout.buffer
        sys.stdout.buffer.flush()
        return
    if str(target) == STDIO:
        with tempfile.TemporaryFile() as spool:
            yield spool
            spool.seek(0)
            out = sys.stdout.buffer
            shutil.copyfileobj(spool, out, 1 << 20)
            out.flush()
        return

    def refuse_if_appeared() -> None:  # another job wrote it while we worked
        if Path(target).exists() and not force:
            raise OutputError(f"'{target}' already exists (use -f to overwrite)")

    with atomic_write(target, before_replace=refuse_if_appeared) as fp:
        yield fp


@contextlib.contextmanager
def atomic_write(
    target: str | os.PathLike,
    before_replace: Callable[[], None] | None = None,
    *,
    text: bool = False,
) -> Iterator[BinaryIO]:
    """A binary file that becomes ``target`` only if the block succeeds: the one
    temp-file-then-rename of neucomp (outputs, model and LM files, checkpoints, tables).

    The temp file (``.NAME.PID.XXXXXXXX.part``) sits beside ``target``, so the final
    ``os.replace`` is atomic; it gets the mode a plain write would give and is deleted
    on any error, Ctrl-C or SIGTERM. ``before_replace`` runs just before the rename.
    With ``text``, the block gets a UTF-8 text file (newlines as written, for csv).
    """
    path = Path(target)
    remove_stale_parts(path)
    fd, tmp = tempfile.mkstemp(
        prefix=f".{path.name}.{os.getpid()}.", suffix=".part", dir=path.parent
    )
    with writing(tmp):
        try:
            os.fchmod(fd, _output_mode(path))
            with os.fdopen(fd, "w+b") as fp:
                if text:
                    wrapper = io.TextIOWrapper(fp, encoding="utf-8", newline="")
                    yield wrapper
                    wrapper.flush()
                    wrapper.detach()
                else:
                    yield fp
                fp.flush()
            if before_replace is not None:
                before_replace()
            os.replace(tmp, path)
        except BaseException:
            with contextlib.suppress(OSError):
                os.unlink(tmp)
            raise


def write_audio(path: str | os.PathLike, audio: np.ndarray, rate: int, **sf_args) -> None:
    """Write ``[C, T]`` float audio (clipped to [-1, 1]) to ``path`` with soundfile
    (``format=…, subtype=…``), atomically: encoded in memory, then one atomic write."""
    import soundfile as sf

    buf = io.BytesIO()
    sf.write(buf, np.clip(audio.T, -1.0, 1.0), rate, **sf_args)
    with atomic_write(path) as fp:
        fp.write(buf.getvalue())
