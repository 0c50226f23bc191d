"""Front-ends to the stream engine: files and stdio (the CLI, batch workers) and
in-memory arrays and bytes (the public Python API, re-exported by ``neucomp``).

This is where options are checked, once (:func:`prepare`: model, bandwidth → number of
codebooks, coder name → coder), and where the model and coder a stream needs are looked up in the
registry; the engine is then handed them."""

from __future__ import annotations

import io
import math
import os
import sys
import warnings
from pathlib import Path
from typing import TYPE_CHECKING, BinaryIO

import numpy as np

from neucomp import DEFAULT_BANDWIDTH, registry
from neucomp import audio as A
from neucomp.audio.writers import (
    AudioWriter,
    WavStreamWriter,
    atomic_output,
    check_distinct,
    check_ecdc_name,
    check_output,
    output_format,
)
from neucomp.coding.base import CODER_BY_NAME
from neucomp.engine import AudioSink, Result, compress_stream, decompress_stream
from neucomp.errors import InputError, UsageError
from neucomp.progress import Progress

if TYPE_CHECKING:
    from collections.abc import Callable

    from neucomp.coding.base import ChunkCoder
    from neucomp.container import Header, Trailer
    from neucomp.model import Codec


def coder_name(coder: str | None = None, lm: bool | None = None) -> str | None:
    """The coder asked for: ``coder`` ("plain", "fast", "lm"), or the older ``lm`` flag
    (True: "lm"; False: "plain", what it always meant), or None for the default."""
    if coder is not None and coder not in CODER_BY_NAME:
        raise UsageError(f"unknown coder '{coder}' (choose {', '.join(CODER_BY_NAME)})")
    if lm is None:
        return coder
    asked = "lm" if lm else "plain"
    if coder is not None and coder != asked:
        raise UsageError(f"lm={lm} contradicts coder='{coder}': give one of them")
    return asked


def prepare(
    model: str | os.PathLike | None, bandwidth: float, coder: str | None = None
) -> tuple[Codec, int, ChunkCoder, str | None]:
    """The model, number of codebooks and coder a compression with these options uses,
    and a warning if the default coder had to fall back to plain packing: the one place
    they are checked (UsageError / ModelError), before any audio or output. ``coder``
    is "plain", "fast", "lm" or None (the default: fast where the model's tables are
    installed, else plain)."""
    coder = coder_name(coder)
    codec = registry.load_model(model)
    n_q = codec.config.n_codebooks_for(bandwidth)
    if coder is None:
        chosen, warning = registry.default_coder(codec)
        return codec, n_q, chosen, warning
    return codec, n_q, registry.coder(codec, coder), None


def _decompress(
    fp: BinaryIO,
    open_sink: Callable[[Header, Trailer | None], AudioSink],
    salvage: bool,
    model: Codec | str | os.PathLike | None,
    progress: Progress | None = None,
    postfilter: bool | None = None,
    speech_decoder: bool | None = None,
) -> Result:
    """Read the header, find the model and coder it needs, and let the engine decode.

    ``model`` overrides the installed model named in the header (its hash must match).
    ``postfilter``: the formant postfilter on or off (None: on the chunks flagged speech);
    ``speech_decoder`` likewise for a model's speech decoder. ``open_sink`` also gets
    the totals when a seekable input gives them up front (the end record, read first),
    else None.
    """
    from neucomp.container import EcdcReader

    reader = EcdcReader(fp)  # a bad header fails here, before torch is even imported
    codec = registry.model_for(reader.header, model)
    coder = registry.coder_for(reader.header, codec)
    known = reader.peek_trailer()
    return decompress_stream(
        reader,
        codec,
        coder,
        lambda header: open_sink(header, known),
        salvage=salvage,
        progress=progress,
        total_samples=None if known is None else known.original_samples,
        postfilter=postfilter,
        speech_decoder=speech_decoder,
    )


# ------------------------------------------------------------------- file front-ends


def _file_size(path: str | os.PathLike) -> int | None:
    return None if str(path) == A.STDIO else os.path.getsize(path)


def compress_file(
    src: str | os.PathLike,
    dst: str | os.PathLike,
    *,
    bandwidth: float = DEFAULT_BANDWIDTH,
    coder: str | None = None,
    lm: bool | None = None,
    model: str | os.PathLike | None = None,
    force: bool = False,
    chunk_seconds: float | None = None,
    progress: Progress | None = None,
    content: str = "auto",
    effort: str = "default",
) -> Result:
    """Compress the audio file ``src`` (or ``"-"``) into ``dst`` (or ``"-"``), atomically.
    ``coder``: "plain", "fast", "lm" or None (the default); ``lm`` is the older flag.
    ``content``: "auto" judges each chunk speech or not (the flag that turns the
    decoder's postfilter on), "speech" or "other" says so of all of them. ``effort``:
    how hard the encoder searches for its codes ("fast", "default", "best").

    ``chunk_seconds`` sets the container's chunk length (default 10 s): short chunks are
    the live mode, where each chunk leaves as soon as its audio has come in (and a pipe
    on stdin is read as it arrives), at the cost of a few bytes per chunk."""
    check_distinct(src, dst)
    check_ecdc_name(dst)
    coder = coder_name(coder, lm)
    check_content(content)
    check_effort(effort)
    live = chunk_seconds is not None
    with A.open_audio(src, eager=live) as reader:
        check_output(dst, force)
        codec, n_q, chunk_coder, warning = prepare(model, bandwidth, coder)  # before any output
        frames = chunk_frames_for(codec, chunk_seconds)
        with atomic_output(dst, force, stream_stdout=True) as out:
            result = compress_stream(
                reader,
                out,
                codec,
                n_q,
                chunk_coder,
                chunk_frames=frames,
                progress=progress,
                content=content,
                effort=effort,
            )
    if warning:
        result.warnings.insert(0, warning)
    result.source, result.target = A.display_name(src), A.display_name(dst, output=True)
    result.input_bytes = _file_size(src)
    result.output_bytes = result.ecdc_bytes
    return result


def check_effort(effort: str) -> None:
    """A UsageError naming the efforts offered, unless ``effort`` is one of them."""
    from neucomp.model import SEARCH_EFFORTS

    if effort not in SEARCH_EFFORTS:
        raise UsageError(f"unknown effort '{effort}' (offered: {', '.join(SEARCH_EFFORTS)})")


def check_content(content: str) -> None:
    from neucomp.engine import CONTENT_CHOICES

    if content not in CONTENT_CHOICES:
        raise UsageError(f"unknown content '{content}' (offered: {', '.join(CONTENT_CHOICES)})")


def chunk_frames_for(codec: Codec, chunk_seconds: float | None) -> int:
    """Frames per container chunk for ``chunk_seconds`` (None: the default, 10 s), whole
    frames, at least one; UsageError past what a chunk may hold."""
    from neucomp.container import MAX_CHUNK_FRAMES
    from neucomp.engine import CHUNK_FRAMES

    if chunk_seconds is None:
        return CHUNK_FRAMES
    rate = codec.config.frame_rate
    finite = math.isfinite(chunk_seconds) and chunk_seconds > 0
    frames = round(chunk_seconds * rate) if finite else 0
    if not (finite and max(frames, 1) <= MAX_CHUNK_FRAMES):
        raise UsageError(
            f"--chunk-seconds must be from {1 / rate:.4f} (one frame) to "
            f"{MAX_CHUNK_FRAMES / rate:g} s, got {chunk_seconds:g}"
        )
    return max(frames, 1)


class _LazyWriter:
    """The output writer on ``fp``, opened once the header gives rate and channel count:
    an AudioWriter for files, a WavStreamWriter (no seeking; each block flushed as it
    comes) for stdout."""

    def __init__(self, fp: BinaryIO, fmt: str, subtype: str, stream: bool = False) -> None:
        self.fp, self.fmt, self.subtype, self.stream = fp, fmt, subtype, stream
        self.writer: AudioWriter | WavStreamWriter | None = None

    def open(self, header: Header, known: Trailer | None) -> AudioWriter | WavStreamWriter:
        rate, channels = header.original_sample_rate, header.original_channels
        if self.stream:
            frames = None if known is None else known.original_samples
            self.writer = WavStreamWriter(self.fp, rate, channels, self.subtype, frames)
        else:
            self.writer = AudioWriter(self.fp, rate, channels, self.fmt, self.subtype)
        return self.writer


def decompress_file(
    src: str | os.PathLike,
    dst: str | os.PathLike,
    *,
    float_wav: bool = False,
    salvage: bool = False,
    force: bool = False,
    model: str | os.PathLike | None = None,
    progress: Progress | None = None,
    postfilter: bool | None = None,
    speech_decoder: bool | None = None,
) -> Result:
    """Decompress the .ecdc file ``src`` (or ``"-"``) into ``dst`` (.wav/.flac or ``"-"``).

    A file is written atomically (a temp file, renamed at the end). Stdout gets a WAV
    stream as the audio is decoded, a frame group at a time: its header gives the length
    when the input can seek (read from the end record first), else says "unknown" as
    ffmpeg does on a pipe. What went out before an error cannot be taken back there."""
    fmt, subtype = output_format(dst, float_wav)
    with open_input(src) as fp:
        check_distinct(src, dst)
        check_output(dst, force)
        if str(dst) == A.STDIO:
            lazy = _LazyWriter(sys.stdout.buffer, fmt, subtype, stream=True)
            result = _decompress(
                fp, lazy.open, salvage, model, progress, postfilter, speech_decoder
            )
            if lazy.writer is not None:
                lazy.writer.close()
            result.output_bytes = lazy.writer.bytes_written if lazy.writer else 0
        else:
            with atomic_output(dst, force) as out:
                lazy = _LazyWriter(out, fmt, subtype)
                try:
                    result = _decompress(
                        fp, lazy.open, salvage, model, progress, postfilter, speech_decoder
                    )
                finally:
                    if lazy.writer is not None:
                        lazy.writer.close()
                out.flush()
                result.output_bytes = out.tell()
    result.source, result.target = A.display_name(src), A.display_name(dst, output=True)
    result.input_bytes = result.ecdc_bytes
    return result


def open_input(src: str | os.PathLike) -> BinaryIO:
    if str(src) == A.STDIO:
        if sys.stdin.isatty():
            raise InputError("IN is - but stdin is a terminal: pipe a .ecdc stream in")
        return _NoClose(sys.stdin.buffer)
    path = Path(src)
    if not path.exists():
        raise InputError(f"no such file: {src}")
    if path.is_dir():
        raise InputError(f"'{src}' is a folder, not a .ecdc file")
    try:
        return open(path, "rb")  # noqa: SIM115 - the caller closes it
    except OSError as err:
        raise InputError(f"cannot read '{src}': {err.strerror or err}") from err


class _NoClose(io.BufferedIOBase):
    """stdin as a context manager that does not close it."""

    def __init__(self, fp: BinaryIO) -> None:
        self._fp = fp

    def read(self, size: int = -1) -> bytes:
        return self._fp.read(size)

    def readable(self) -> bool:
        return True

    # stdin redirected from a file can seek: then the length is read up front too
    def seekable(self) -> bool:
        try:
            return self._fp.seekable()
        except (AttributeError, OSError, ValueError):
            return False

    def seek(self, offset: int, whence: int = 0) -> int:
        return self._fp.seek(offset, whence)

    def tell(self) -> int:
        return self._fp.tell()


# ------------------------------------------------------------------------ Python API


def compress(
    audio: np.ndarray,
    sample_rate: int,
    bandwidth: float = DEFAULT_BANDWIDTH,
    *,
    coder: str | None = None,
    lm: bool | None = None,
    model: str | None = None,
    content: str = "auto",
    effort: str = "default",
) -> bytes:
    """Compress float audio ``[T]`` or ``[C, T]`` (values in [-1, 1]) to .ecdc bytes.
    ``coder``: "plain", "fast", "lm" or None (the default: fast where the model's
    tables are installed, else plain); ``lm=True`` / ``lm=False`` are the older way to
    say "lm" / "plain". ``content``: "auto" (judge each chunk speech or not), "speech"
    or "other"; the decoder postfilters the speech chunks. ``effort``: the encoder's
    search ("fast", "default", "best")."""
    check_content(content)
    check_effort(effort)
    reader = A.ArrayReader(audio, sample_rate)
    codec, n_q, chunk_coder, warning = prepare(model, bandwidth, coder_name(coder, lm))
    out = io.BytesIO()
    result = compress_stream(reader, out, codec, n_q, chunk_coder, content=content, effort=effort)
    if warning:
        result.warnings.insert(0, warning)
    for message in result.warnings:
        warnings.warn(message, stacklevel=2)
    return out.getvalue()


class _Collect:
    def __init__(self) -> None:
        self.blocks: list[np.ndarray] = []

    def write(self, block: np.ndarray) -> None:
        if block.shape[1]:
            self.blocks.append(block)


def decompress(
    data: bytes,
    *,
    salvage: bool = False,
    model: str | None = None,
    postfilter: bool | None = None,
    speech_decoder: bool | None = None,
) -> tuple[np.ndarray, int]:
    """Decompress .ecdc bytes to ``(audio [C, T] float32, sample_rate)`` at the original
    rate, channel count and length. With ``salvage``, damaged chunks become silence (and
    a warning) instead of an error. ``model`` (a name or path) overrides the installed
    model the stream names; its weights must still be the ones that made the stream.
    ``postfilter`` turns the decoder's formant postfilter on or off for every chunk
    (None: the default, on the chunks the encoder flagged speech; it helps speech and
    harms music: neucomp.audio.postfilter). ``speech_decoder``, for a model that has a
    second decoder for speech, uses it on every chunk (True), on none (False), or on the
    chunks flagged speech (None, the default)."""
    collect = _Collect()
    result = _decompress(
        io.BytesIO(data),
        lambda h, known: collect,
        salvage,
        model,
        postfilter=postfilter,
        speech_decoder=speech_decoder,
    )
    for message in result.warnings:
        warnings.warn(message, stacklevel=2)
    audio = np.concatenate(collect.blocks, axis=1) if collect.blocks else None
    if audio is None:
        audio = np.zeros((result.channels, 0), np.float32)
    return audio, result.sample_rate
