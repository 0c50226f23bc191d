"""What every audio input is: its format (:class:`AudioInfo`) and the reader protocol
(:class:`AudioReader`, ``[C, n]`` float32 blocks), the limits an input must fit, and
the names the rest of the package shares (stdin/stdout, the audio file extensions)."""

from __future__ import annotations

import os
from collections.abc import Iterator
from dataclasses import dataclass
from typing import BinaryIO

import numpy as np

from neucomp.errors import InputError, Terminated

BLOCK_FRAMES = 1 << 16  # frames per block read from an input (~1.4 s at 48 kHz)
STDIO = "-"  # the command-line name for stdin / stdout

# Extensions treated as audio (batch inputs, eval folders, refusing an audio-named .ecdc).
AUDIO_EXTENSIONS = (".wav", ".flac", ".ogg", ".opus", ".mp3", ".aif", ".aiff")


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


def check_format(name: str, sample_rate: int, channels: int) -> None:
    """InputError unless the rate and channel count are ones a .ecdc header can hold."""
    from neucomp.container import MAX_CHANNELS, MAX_SAMPLE_RATE, MIN_SAMPLE_RATE

    if not MIN_SAMPLE_RATE <= sample_rate <= MAX_SAMPLE_RATE:
        raise InputError(
            f"'{name}' has a sample rate of {sample_rate} Hz (supported: "
            f"{MIN_SAMPLE_RATE} to {MAX_SAMPLE_RATE} Hz)"
        )
    if not 1 <= channels <= MAX_CHANNELS:
        raise InputError(f"'{name}' has {channels} channels (supported: 1 to {MAX_CHANNELS})")


class GuardedFile:
    """A file for libsndfile's callbacks that never raises into them.

    An exception inside a cffi callback is only printed ("Exception ignored from cffi
    callback" and a traceback) and libsndfile carries on calling: a full disk gave a
    screenful before the real error, and a SIGTERM that landed in a read callback was
    lost. The first error (an OSError, or the Terminated / KeyboardInterrupt a signal
    raised) is kept instead, later calls do nothing, and the reader or writer raises
    it once libsndfile returns (:meth:`raise_error`).
    """

    def __init__(self, fp: BinaryIO) -> None:
        self._fp = fp
        self.error: BaseException | None = None
        self._pos = 0

    def _call(self, fn, *args, fallback):
        if self.error is None:
            try:
                return fn(*args)
            except (OSError, ValueError, Terminated, KeyboardInterrupt) as err:
                self.error = err  # ValueError: the file was closed
        return fallback

    def write(self, data: bytes) -> int:
        return self._call(self._fp.write, data, fallback=len(data))

    def read(self, size: int = -1) -> bytes:
        return self._call(self._fp.read, size, fallback=b"")

    def seek(self, offset: int, whence: int = 0) -> int:
        self._pos = self._call(self._fp.seek, offset, whence, fallback=self._pos)
        return self._pos

    def tell(self) -> int:
        self._pos = self._call(self._fp.tell, fallback=self._pos)
        return self._pos

    def raise_error(self) -> None:
        if self.error is not None:
            raise self.error
