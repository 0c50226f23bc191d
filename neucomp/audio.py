"""Audio in and out: read any format blockwise, resample, map channels, write WAV/FLAC.

Everything here works on float32 blocks shaped ``[channels, frames]`` so that long
inputs never have to sit in memory whole. Files are read with soundfile (libsndfile:
WAV, FLAC, OGG/Vorbis/Opus, MP3, AIFF, ...). A WAV arriving on a pipe is parsed here
instead, because ffmpeg and other tools write placeholder sizes (0 or 0xFFFFFFFF)
when they cannot seek back, and libsndfile cannot read a pipe at all.

Channel rule (see :func:`to_model_channels` / :func:`from_model_channels`):

* mono model: every input is mixed down to the mean of its channels; on the way out the
  mono signal is copied to every original channel;
* stereo model: mono is duplicated to both sides, stereo passes through, more than two
  channels are folded onto two (even-numbered channels → left, odd-numbered → right,
  each side the mean of its channels); on the way out channel ``i`` gets side ``i % 2``
  and a mono original gets the mean of both sides.
"""

from __future__ import annotations

import contextlib
import io
import os
import shutil
import struct
import sys
import tempfile
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import BinaryIO

import numpy as np

from neucomp.errors import InputError, OutputError, UsageError

BLOCK_FRAMES = 1 << 16  # frames per block read from an input (~1.4 s at 48 kHz)
STDIO = "-"  # the command-line name for stdin / stdout

# Extensions the batch mode treats as audio inputs.
AUDIO_EXTENSIONS = (".wav", ".flac", ".ogg", ".opus", ".mp3", ".aif", ".aiff")
# Output extension → (soundfile format, default subtype).
OUTPUT_FORMATS = {".wav": ("WAV", "PCM_16"), ".flac": ("FLAC", "PCM_16")}


@dataclass(frozen=True)
class AudioInfo:
    """What is known about an input before reading it."""

    sample_rate: int
    channels: int
    frames: int | None  # None when the stream does not say (a WAV from a pipe)

    @property
    def duration(self) -> float | None:
        return None if self.frames is None else self.frames / self.sample_rate


def display_name(source: str | os.PathLike | BinaryIO, output: bool = False) -> str:
    """How an input or output is named in messages."""
    if isinstance(source, (str, os.PathLike)):
        if str(source) == STDIO:
            return "<stdout>" if output else "<stdin>"
        return str(source)
    name = getattr(source, "name", None)
    return name if isinstance(name, str) else "<stream>"


# --------------------------------------------------------------------------- reading


class AudioReader:
    """An open audio input; iterate :meth:`blocks` once to get ``[C, n]`` float32 blocks."""

    name: str
    info: AudioInfo

    def blocks(self, block_frames: int = BLOCK_FRAMES) -> Iterator[np.ndarray]:
        raise NotImplementedError

    def close(self) -> None:
        """Release the underlying file."""

    def __enter__(self) -> AudioReader:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


class ArrayReader(AudioReader):
    """An in-memory signal (``[T]`` or ``[C, T]``) presented as a reader (Python API)."""

    def __init__(self, audio: np.ndarray, sample_rate: int, name: str = "<array>") -> None:
        audio = np.asarray(audio)
        if audio.ndim == 1:
            audio = audio[None, :]
        if audio.ndim != 2 or audio.shape[0] < 1:
            raise InputError(f"audio must be shaped [T] or [C, T], got {list(audio.shape)}")
        if not np.issubdtype(audio.dtype, np.floating):
            raise InputError(f"audio must be floating point in [-1, 1], got {audio.dtype}")
        if int(sample_rate) <= 0:
            raise InputError(f"sample rate must be positive, got {sample_rate}")
        self.name = name
        self._audio = audio.astype(np.float32, copy=False)
        self.info = AudioInfo(int(sample_rate), audio.shape[0], audio.shape[1])

    def blocks(self, block_frames: int = BLOCK_FRAMES) -> Iterator[np.ndarray]:
        for start in range(0, self._audio.shape[1], block_frames):
            yield np.ascontiguousarray(self._audio[:, start : start + block_frames])


class _SoundFileReader(AudioReader):
    def __init__(self, sf_file, name: str, owned: BinaryIO | None = None) -> None:
        self.name = name
        self._sf = sf_file
        self._owned = owned  # a temporary spool file to close with us
        self.info = AudioInfo(sf_file.samplerate, sf_file.channels, sf_file.frames)

    def blocks(self, block_frames: int = BLOCK_FRAMES) -> Iterator[np.ndarray]:
        import soundfile as sf

        while True:
            try:
                data = self._sf.read(block_frames, dtype="float32", always_2d=True)
            except (sf.LibsndfileError, RuntimeError) as err:
                raise InputError(f"cannot read '{self.name}': {_sf_reason(err)}") from err
            if data.shape[0] == 0:
                return
            yield np.ascontiguousarray(data.T)

    def close(self) -> None:
        self._sf.close()
        if self._owned is not None:
            self._owned.close()


# WAVE_FORMAT_* tags we decode ourselves; EXTENSIBLE carries the real tag in its GUID.
_WAVE_PCM, _WAVE_FLOAT, _WAVE_EXTENSIBLE = 0x0001, 0x0003, 0xFFFE
_UNKNOWN_SIZES = (0, 0xFFFFFFFF)


class _WavStreamReader(AudioReader):
    """A RIFF/WAVE (or RF64) stream read front to back without seeking.

    A data chunk size of 0 or 0xFFFFFFFF means "until end of stream", which is what
    writers that cannot seek back (ffmpeg to a pipe, RF64) leave in the header.
    """

    def __init__(self, fp: BinaryIO, name: str) -> None:
        self.name = name
        self._fp = fp
        riff = _read_exact(fp, 12)
        if len(riff) < 12 or riff[:4] not in (b"RIFF", b"RF64", b"BW64") or riff[8:] != b"WAVE":
            raise InputError(f"cannot read '{name}': not an audio file")
        fmt = None
        while True:
            head = _read_exact(fp, 8)
            if len(head) < 8:
                raise InputError(f"cannot read '{name}': WAV stream has no data chunk")
            chunk_id, size = head[:4], struct.unpack("<I", head[4:])[0]
            if chunk_id == b"data":
                break
            if size == 0xFFFFFFFF:
                raise InputError(f"cannot read '{name}': WAV chunk {chunk_id!r} has no length")
            if chunk_id == b"fmt ":
                if size > 1024:  # 16 to 40 bytes in practice
                    raise InputError(f"cannot read '{name}': WAV fmt chunk is {size} bytes")
                fmt = _read_exact(fp, size + (size & 1))[:size]
                if len(fmt) < size:
                    raise InputError(f"cannot read '{name}': WAV header is truncated")
            elif not _skip(fp, size + (size & 1)):  # LIST, fact, ...: read past, in pieces
                raise InputError(f"cannot read '{name}': WAV header is truncated")
        if fmt is None or len(fmt) < 16:
            raise InputError(f"cannot read '{name}': WAV stream has no valid fmt chunk")
        tag, channels, rate, _, align, bits = struct.unpack("<HHIIHH", fmt[:16])
        if tag == _WAVE_EXTENSIBLE and len(fmt) >= 26:
            tag = struct.unpack("<H", fmt[24:26])[0]  # first two bytes of the sub-format GUID
        self._dtype = _wav_sample_type(tag, bits)
        if self._dtype is None or channels < 1 or rate < 1 or align != channels * bits // 8:
            raise InputError(
                f"cannot read '{name}': unsupported WAV encoding (format {tag:#06x}, {bits} bit)"
            )
        self._bits = bits
        self._align = align
        self._remaining = None if size in _UNKNOWN_SIZES else size
        frames = None if self._remaining is None else self._remaining // align
        self.info = AudioInfo(rate, channels, frames)

    def blocks(self, block_frames: int = BLOCK_FRAMES) -> Iterator[np.ndarray]:
        want = block_frames * self._align
        while self._remaining is None or self._remaining > 0:
            n = want if self._remaining is None else min(want, self._remaining)
            raw = _read_exact(self._fp, n)
            if self._remaining is not None:
                self._remaining -= len(raw)
            usable = len(raw) - len(raw) % self._align  # a torn last frame is dropped
            if usable:
                yield _decode_pcm(raw[:usable], self._dtype, self._bits, self.info.channels)
            if len(raw) < n:
                return  # end of stream (possibly earlier than the header promised)

    def close(self) -> None:
        self._fp.close()


def _wav_sample_type(tag: int, bits: int) -> str | None:
    if tag == _WAVE_PCM:
        return {8: "u1", 16: "<i2", 24: "i24", 32: "<i4"}.get(bits)
    if tag == _WAVE_FLOAT:
        return {32: "<f4", 64: "<f8"}.get(bits)
    return None


def _decode_pcm(raw: bytes, dtype: str, bits: int, channels: int) -> np.ndarray:
    """Interleaved WAV sample bytes → ``[C, n]`` float32 in [-1, 1]."""
    if dtype == "i24":
        b = np.frombuffer(raw, np.uint8).reshape(-1, 3).astype(np.int32)
        ints = b[:, 0] | (b[:, 1] << 8) | (b[:, 2] << 16)
        ints = np.where(ints >= 1 << 23, ints - (1 << 24), ints)
        x = ints.astype(np.float32) / float(1 << 23)
    else:
        x = np.frombuffer(raw, dtype)
        if dtype == "u1":
            x = (x.astype(np.float32) - 128.0) / 128.0
        elif dtype[1] == "i":
            x = x.astype(np.float32) / float(1 << (bits - 1))
        else:
            x = x.astype(np.float32)
    return np.ascontiguousarray(x.reshape(-1, channels).T)


def _skip(fp: BinaryIO, n: int) -> bool:
    """Read and drop n bytes without holding them; False if the stream ends first."""
    while n > 0:
        got = len(_read_exact(fp, min(n, 1 << 16)))
        if got == 0:
            return False
        n -= got
    return True


def _read_exact(fp: BinaryIO, n: int) -> bytes:
    """Read n bytes, fewer only at end of stream (pipes may return short reads)."""
    parts, got = [], 0
    while got < n:
        part = fp.read(n - got)
        if not part:
            break
        parts.append(part)
        got += len(part)
    return b"".join(parts)


def _sf_reason(err: Exception) -> str:
    text = str(err).lower()
    if "format not recognised" in text or "unknown format" in text or "not recognised" in text:
        return "not an audio file"
    return str(err).split("\n")[0].strip() or "not an audio file"


def open_audio(source: str | os.PathLike | BinaryIO, name: str | None = None) -> AudioReader:
    """Open an audio input: a path, ``"-"`` for stdin, or a binary stream.

    Raises InputError with a one-line message for anything that is not readable audio.
    """
    if isinstance(source, (str, os.PathLike)) and str(source) == STDIO:
        if sys.stdin.isatty():
            raise InputError("IN is - but stdin is a terminal: pipe audio in, e.g. `< song.wav`")
        return _open_stream(sys.stdin.buffer, name or "<stdin>")
    if not isinstance(source, (str, os.PathLike)):
        return _open_stream(source, name or display_name(source))
    path = Path(source)
    name = name or str(source)
    if not path.exists():
        raise InputError(f"no such file: {name}")
    if path.is_dir():
        raise InputError(f"'{name}' is a folder, not an audio file")
    try:
        fp = open(path, "rb")  # noqa: SIM115 - owned by the reader we return
    except OSError as err:
        raise InputError(f"cannot read '{name}': {err.strerror or err}") from err
    head = fp.read(12)
    fp.seek(0)
    if not head:
        fp.close()
        raise InputError(f"'{name}' contains no audio samples")
    import soundfile as sf

    try:
        sf_file = sf.SoundFile(fp)
    except (sf.LibsndfileError, RuntimeError, TypeError) as err:
        if not _is_riff(head):
            fp.close()
            raise InputError(f"cannot read '{name}': {_sf_reason(err)}") from err
        sf_file = None
    if sf_file is not None and not (sf_file.frames == 0 and _is_riff(head)):
        return _SoundFileReader(sf_file, name, owned=fp)
    # A WAV whose header says "0 frames" may still hold samples (a pipe dump): parse it.
    if sf_file is not None:
        sf_file.close()
    fp.seek(0)
    try:
        return _WavStreamReader(fp, name)
    except BaseException:
        fp.close()
        raise


def _is_riff(head: bytes) -> bool:
    return head[:4] in (b"RIFF", b"RF64", b"BW64") and head[8:12] == b"WAVE"


def _open_stream(fp: BinaryIO, name: str) -> AudioReader:
    """A non-seekable input: WAV is streamed; anything else is spooled to a temp file."""
    head = _read_exact(fp, 12)
    if not head:
        raise InputError(f"'{name}' contains no audio samples (empty input)")
    stream = _Prefixed(head, fp)
    if _is_riff(head):
        return _WavStreamReader(stream, name)
    # FLAC/OGG/MP3 readers need to seek: spool to disk (not memory) so size stays bounded.
    import soundfile as sf

    spool = tempfile.TemporaryFile()  # noqa: SIM115 - owned by the reader we return
    try:
        shutil.copyfileobj(stream, spool, 1 << 20)
        spool.seek(0)
        return _SoundFileReader(sf.SoundFile(spool), name, owned=spool)
    except (sf.LibsndfileError, RuntimeError, TypeError) as err:
        spool.close()
        raise InputError(f"cannot read '{name}': {_sf_reason(err)}") from err
    except BaseException:
        spool.close()
        raise


class _Prefixed(io.RawIOBase):
    """A stream with some already-consumed bytes put back in front."""

    def __init__(self, prefix: bytes, fp: BinaryIO) -> None:
        self._prefix = prefix
        self._fp = fp

    def readable(self) -> bool:
        return True

    def readinto(self, buf) -> int:
        if self._prefix:
            n = min(len(buf), len(self._prefix))
            buf[:n] = self._prefix[:n]
            self._prefix = self._prefix[n:]
            return n
        data = self._fp.read(len(buf))
        buf[: len(data)] = data
        return len(data)


def read_audio(source: str | os.PathLike | BinaryIO) -> tuple[np.ndarray, int]:
    """Read a whole input into memory: ``(audio [C, T] float32, sample_rate)``."""
    with open_audio(source) as reader:
        blocks = list(reader.blocks())
        info = reader.info
    if not blocks:
        raise InputError(f"'{reader.name}' contains no audio samples")
    return np.concatenate(blocks, axis=1), info.sample_rate


# ---------------------------------------------------------------- resampling, channels


class Resampler:
    """Streaming soxr resampler over ``[C, n]`` blocks; a no-op when the rates match."""

    def __init__(self, in_rate: int, out_rate: int, channels: int) -> None:
        self.channels = channels
        self._stream = None
        if in_rate != out_rate:
            import soxr

            self._stream = soxr.ResampleStream(
                in_rate, out_rate, channels, dtype="float32", quality="HQ"
            )

    def push(self, block: np.ndarray, last: bool = False) -> np.ndarray:
        if self._stream is None:
            return block
        out = self._stream.resample_chunk(np.ascontiguousarray(block.T), last=last)
        return np.ascontiguousarray(out.T)

    def flush(self) -> np.ndarray:
        """The samples still held back by the filter; call once at the end."""
        return self.push(np.zeros((self.channels, 0), np.float32), last=True)


def to_model_channels(block: np.ndarray, model_channels: int) -> np.ndarray:
    """Map ``[C, n]`` to the model's 1 or 2 channels (rule in the module docstring)."""
    c = block.shape[0]
    if c == model_channels:
        return block
    if model_channels == 1:
        return block.mean(axis=0, keepdims=True)
    if model_channels == 2:
        if c == 1:
            return np.concatenate([block, block], axis=0)
        return np.stack([block[0::2].mean(axis=0), block[1::2].mean(axis=0)])
    raise ValueError(f"models have 1 or 2 channels, not {model_channels}")


def from_model_channels(block: np.ndarray, channels: int) -> np.ndarray:
    """Map the model's ``[M, n]`` back to the original channel count."""
    m = block.shape[0]
    if m == channels:
        return block
    if channels == 1:
        return block.mean(axis=0, keepdims=True)
    return np.ascontiguousarray(block[[i % m for i in range(channels)]])


def fit_length(block: np.ndarray, length: int) -> np.ndarray:
    """Trim or zero-pad ``[C, n]`` to exactly ``length`` frames."""
    n = block.shape[1]
    if n >= length:
        return block[:, :length]
    return np.pad(block, ((0, 0), (0, length - n)))


# --------------------------------------------------------------------------- writing


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

        self._sf = sf.SoundFile(
            fp, "w", samplerate=sample_rate, channels=channels, format=fmt, subtype=subtype
        )
        self._clip = subtype != "FLOAT"
        self.frames = 0

    def write(self, block: np.ndarray) -> None:
        if block.shape[1] == 0:
            return
        if self._clip:  # integer formats: out-of-range samples would wrap, not saturate
            block = np.clip(block, -1.0, 1.0)
        self._sf.write(np.ascontiguousarray(block.T))
        self.frames += block.shape[1]

    def close(self) -> None:
        self._sf.close()


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
        raise OutputError(f"cannot write to folder '{parent}': permission denied")


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
    path = Path(target)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".part", dir=path.parent)
    try:
        with os.fdopen(fd, "w+b") as fp:
            yield fp
            fp.flush()
        if path.exists() and not force:  # appeared while we worked (another job)
            raise OutputError(f"'{target}' already exists (use -f to overwrite)")
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(OSError):
            os.unlink(tmp)
        raise
