"""Audio in: open any input blockwise (a path, stdin, a stream, an array).

Everything here yields float32 blocks shaped ``[channels, frames]`` so that long inputs
never have to sit in memory whole. Files are read with soundfile (libsndfile: WAV,
FLAC, OGG/Vorbis/Opus, MP3, AIFF, ...). A WAV arriving on a pipe is parsed by
:mod:`neucomp.audio.wavstream` instead, because ffmpeg and other tools write placeholder
sizes (0 or 0xFFFFFFFF) when they cannot seek back, and libsndfile cannot read a pipe
at all.
"""

from __future__ import annotations

import operator
import os
import shutil
import sys
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import BinaryIO

import numpy as np

from neucomp.audio.base import (
    BLOCK_FRAMES,
    STDIO,
    AudioInfo,
    AudioReader,
    GuardedFile,
    check_format,
    display_name,
)
from neucomp.audio.signal import resample, to_model_channels, to_mono
from neucomp.audio.wavstream import Prefixed, WavStreamReader, read_exact
from neucomp.errors import InputError
from neucomp.signals import deferred_termination


def _integer_rate(sample_rate: object) -> int:
    """A sample rate given to the Python API as an exact integer (44100.0 is fine)."""
    if isinstance(sample_rate, (bool, np.bool_)):
        raise InputError(f"sample rate must be an integer number of Hz, got {sample_rate!r}")
    if isinstance(sample_rate, (float, np.floating)) and float(sample_rate).is_integer():
        return int(sample_rate)
    try:
        return operator.index(sample_rate)
    except TypeError:
        raise InputError(
            f"sample rate must be an integer number of Hz, got {sample_rate!r}"
        ) from None


class ArrayReader(AudioReader):
    """An in-memory signal presented as a reader (Python API).

    ``[T]`` is mono; a 2-D array is ``[C, T]``, channels first. An array whose first axis
    is longer than MAX_CHANNELS is refused rather than guessed at: it is almost surely
    soundfile's ``[T, C]`` layout, which needs ``audio.T``.
    """

    def __init__(self, audio: np.ndarray, sample_rate: int, name: str = "<array>") -> None:
        from neucomp.container import MAX_CHANNELS

        audio = np.asarray(audio)
        if audio.ndim == 1:
            audio = audio[None, :]
        if audio.ndim != 2 or audio.shape[0] < 1:
            raise InputError(f"audio must be shaped [T] or [C, T], got {list(audio.shape)}")
        if audio.shape[0] > MAX_CHANNELS:
            raise InputError(
                f"audio shaped {list(audio.shape)} would be {audio.shape[0]} channels: "
                f"neucomp takes [C, T] (channels first, at most {MAX_CHANNELS}); "
                "for soundfile's [T, C] layout pass audio.T"
            )
        if not np.issubdtype(audio.dtype, np.floating):
            raise InputError(f"audio must be floating point in [-1, 1], got {audio.dtype}")
        rate = _integer_rate(sample_rate)
        check_format(name, rate, audio.shape[0])
        self.name = name
        self._audio = audio.astype(np.float32, copy=False)
        self.info = AudioInfo(rate, audio.shape[0], audio.shape[1])

    def blocks(self, block_frames: int = BLOCK_FRAMES) -> Iterator[np.ndarray]:
        for start in range(0, self._audio.shape[1], block_frames):
            yield np.ascontiguousarray(self._audio[:, start : start + block_frames])


class _SoundFileReader(AudioReader):
    def __init__(
        self, sf_file, name: str, owned: BinaryIO | None = None, guard: GuardedFile | None = None
    ) -> None:
        self.name = name
        self._sf = sf_file
        self._owned = owned  # a temporary spool file to close with us
        self._guard = guard  # the file libsndfile reads through, holding what it raised
        self.info = AudioInfo(sf_file.samplerate, sf_file.channels, sf_file.frames)

    def blocks(self, block_frames: int = BLOCK_FRAMES) -> Iterator[np.ndarray]:
        import soundfile as sf

        while True:
            try:
                # a signal's Terminated must not be raised inside libsndfile's callbacks
                # (cffi prints and drops it): it is acted on when the read returns
                with deferred_termination():
                    data = self._sf.read(block_frames, dtype="float32", always_2d=True)
            except (sf.LibsndfileError, RuntimeError) as err:
                self._raise_held()
                raise InputError(f"cannot read '{self.name}': {_sf_reason(err)}") from err
            self._raise_held()  # a signal (or I/O error) during libsndfile's callbacks
            if data.shape[0] == 0:
                return
            yield np.ascontiguousarray(data.T)

    def _raise_held(self) -> None:
        if self._guard is not None:
            self._guard.raise_error()

    def close(self) -> None:
        self._sf.close()
        if self._owned is not None:
            self._owned.close()


def _sf_reason(err: Exception) -> str:
    text = str(err).lower()
    if "format not recognised" in text or "unknown format" in text or "not recognised" in text:
        return "not an audio file"
    return str(err).split("\n")[0].strip() or "not an audio file"


def open_audio(
    source: str | os.PathLike | BinaryIO, name: str | None = None, eager: bool = False
) -> AudioReader:
    """Open an audio input: a path, ``"-"`` for stdin, or a binary stream.

    With ``eager``, a WAV on a pipe yields what has arrived at each read instead of
    full blocks (live mode). Raises InputError with a one-line message for anything
    that is not readable audio.
    """
    if isinstance(source, (str, os.PathLike)) and str(source) == STDIO:
        if sys.stdin.isatty():
            raise InputError("IN is - but stdin is a terminal: pipe audio in, e.g. `< song.wav`")
        return _open_stream(sys.stdin.buffer, name or "<stdin>", eager)
    if not isinstance(source, (str, os.PathLike)):
        return _open_stream(source, name or display_name(source), eager)
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

    guard = GuardedFile(fp)  # a signal in libsndfile's read callbacks is held, not lost
    try:
        with deferred_termination():
            sf_file = sf.SoundFile(guard)
        guard.raise_error()
    except (sf.LibsndfileError, RuntimeError, TypeError) as err:
        guard.raise_error()
        if not _is_riff(head):
            fp.close()
            raise InputError(f"cannot read '{name}': {_sf_reason(err)}") from err
        sf_file = None
    if sf_file is not None and not (sf_file.frames == 0 and _is_riff(head)):
        if _is_riff(head):
            try:
                _check_wav_complete(fp, name, sf_file)
            except BaseException:
                sf_file.close()
                fp.close()
                raise
        return _SoundFileReader(sf_file, name, owned=fp, guard=guard)
    # A WAV whose header says "0 frames" may still hold samples (a pipe dump): parse it.
    if sf_file is not None:
        sf_file.close()
    fp.seek(0)
    try:
        return WavStreamReader(fp, name)
    except BaseException:
        fp.close()
        raise


def _check_wav_complete(fp: BinaryIO, name: str, sf_file) -> None:
    """InputError if a WAV holds fewer frames than its header says (a cut-off file):
    libsndfile quietly reports only the frames that are there."""
    position = fp.tell()
    fp.seek(0)
    try:
        declared = WavStreamReader(fp, name).info.frames
    except InputError:  # an encoding only libsndfile knows: nothing to compare with
        declared = None
    finally:
        fp.seek(position)
    if declared is not None and declared > sf_file.frames:
        rate = sf_file.samplerate
        raise InputError(
            f"'{name}' is truncated: its header says {declared / rate:.1f} s "
            f"({declared} frames), but it holds {sf_file.frames / rate:.1f} s"
        )


def _is_riff(head: bytes) -> bool:
    return head[:4] in (b"RIFF", b"RF64", b"BW64") and head[8:12] == b"WAVE"


def _open_stream(fp: BinaryIO, name: str, eager: bool = False) -> AudioReader:
    """A non-seekable input: WAV is streamed; anything else is spooled to a temp file."""
    head = read_exact(fp, 12)
    if not head:
        raise InputError(f"'{name}' contains no audio samples (empty input)")
    stream = Prefixed(head, fp)
    if _is_riff(head):
        return WavStreamReader(stream, name, eager)
    # FLAC/OGG/MP3 readers need to seek: spool to disk (not memory) so size stays bounded.
    import soundfile as sf

    spool = tempfile.TemporaryFile()  # noqa: SIM115 - owned by the reader we return
    try:
        shutil.copyfileobj(stream, spool, 1 << 20)
        spool.seek(0)
        guard = GuardedFile(spool)
        with deferred_termination():
            sf_file = sf.SoundFile(guard)
        guard.raise_error()
        return _SoundFileReader(sf_file, name, owned=spool, guard=guard)
    except (sf.LibsndfileError, RuntimeError, TypeError) as err:
        spool.close()
        raise InputError(f"cannot read '{name}': {_sf_reason(err)}") from err
    except BaseException:
        spool.close()
        raise


def read_audio(source: str | os.PathLike | BinaryIO) -> tuple[np.ndarray, int]:
    """Read a whole input into memory: ``(audio [C, T] float32, sample_rate)``."""
    with open_audio(source) as reader:
        blocks = list(reader.blocks())
        info = reader.info
    if not blocks:
        raise InputError(f"'{reader.name}' contains no audio samples")
    return np.concatenate(blocks, axis=1), info.sample_rate


def load_reference(path: str | os.PathLike, rate: int, channels: int = 1) -> np.ndarray:
    """The file as float32 at ``rate``: mono ``[T]`` (the default), or ``[channels, T]``
    by the channel rule (a stereo model's references): how eval, training and the data
    builders all read a reference signal."""
    audio, file_rate = read_audio(path)
    if channels == 1:
        return np.ascontiguousarray(resample(to_mono(audio), file_rate, rate), dtype=np.float32)
    mapped = to_model_channels(audio, channels)
    return np.ascontiguousarray(resample(mapped, file_rate, rate), dtype=np.float32)
