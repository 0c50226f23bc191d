"""What every audio input is: its format (:class:`AudioInfo`) and the reader protocol
(:class:`AudioReader`, ``[C, n]`` float32 blocks), the limits an input must fit, and
the names the rest of the package shares (stdin/stdout, the audio file extensions)."""

from __future__ import annotations

import os
from collections.abc import Iterator
from dataclasses import dataclass
from typing import BinaryIO

import numpy as np

from neucomp.errors import InputError

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
