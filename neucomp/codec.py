"""Audio ⇄ `.ecdc` bytes, chunk by chunk, with bounded memory (the Python API lives here).

Compress: input blocks → model channels → model rate (streaming soxr) → streaming
encoder → every 750 frames (10 s at 24 kHz) one container chunk, coded plainly (10-bit
packing) or with the LM range coder → totals in the end record.

Decompress: container chunks → codes → streaming decoder → trimmed to the model-rate
length → original rate (streaming soxr) → original channel count → exactly the original
number of samples. The totals are only known at the end of the stream, so the last few
samples at each stage are held back until then (:class:`_HeldTail`).
"""

from __future__ import annotations

import io
import itertools
import os
import sys
import warnings
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, BinaryIO, Protocol

import numpy as np

from neucomp import audio as A
from neucomp.errors import FormatError, InputError, ModelError, UsageError

if TYPE_CHECKING:
    from neucomp.container import Header
    from neucomp.model import Codec

CHUNK_FRAMES = 750  # frames per container chunk: 10 s at 24 kHz / hop 320
DEFAULT_BANDWIDTH = 6.0
# Frames per decoder call: the decoder's full-rate activations for a whole 10 s chunk
# would take hundreds of MB with the full-width model; 2 s pieces keep memory small
# (streaming makes the result independent of the split).
DECODE_FRAMES = 150


# ----------------------------------------------------------------------------- models

_MODELS: dict[str, Codec] = {}  # loaded models by resolved path, one load per process
_LMS: dict[str, object] = {}  # LM coders likewise
_threads: int | None = None  # torch threads asked for by the CLI, applied when torch loads


def set_threads(threads: int) -> None:
    """Run inference on ``threads`` CPU threads (the CLI's --threads, default 1).

    torch is only imported once there is work to do, so that errors about bad inputs
    come back instantly; the setting is applied then.
    """
    global _threads
    _threads = threads
    if "torch" in sys.modules:
        sys.modules["torch"].set_num_threads(threads)


def load_model(name: str | os.PathLike | None = None) -> Codec:
    """The codec model called ``name`` (or at that path; None = the default 24 kHz model).

    Loaded once per process and cached, so batch workers and repeated API calls pay the
    load cost only once.
    """
    from neucomp.model import resolve_model_path

    path = resolve_model_path(name)
    key = str(path.resolve())
    if key not in _MODELS:
        from neucomp.model import load_model as _load

        if _threads is not None:
            set_threads(_threads)

        _MODELS[key] = _load(path)
    return _MODELS[key]


def _model_for(header: Header, model: Codec | str | os.PathLike | None) -> Codec:
    """The model that made this stream (installed, or the one given by name or path),
    or a ModelError saying what is missing."""
    from neucomp.model import resolve_model_path

    want = header.model_hash.hex()
    if isinstance(model, (str, os.PathLike)):
        model = load_model(model)
    if model is None:
        try:
            resolve_model_path(header.model_name)
        except ModelError:
            raise ModelError(
                f"this file needs model '{header.model_name}' with weights {want[:12]}…, "
                "which is not installed"
            ) from None
        model = load_model(header.model_name)
    if model.weights_hash != want:
        raise ModelError(
            f"this file was made by different weights of model '{header.model_name}' "
            f"(hash {want[:12]}…; installed: {model.weights_hash[:12]}…)"
        )
    cfg = model.config
    mismatch = [
        label
        for label, ours, theirs in (
            ("sample rate", cfg.sample_rate, header.model_sample_rate),
            ("channels", cfg.channels, header.model_channels),
            ("hop length", cfg.hop_length, header.hop_length),
            ("codebook size", cfg.codebook_size, header.codebook_size),
        )
        if ours != theirs
    ]
    if mismatch or header.num_codebooks > cfg.n_codebooks:
        raise FormatError(
            f"the header does not fit model '{cfg.name}' "
            f"({', '.join(mismatch) or 'number of codebooks'} differ)"
        )
    return model


def _lm_coder(model: Codec, want_hash: bytes | None = None):
    """The LM range coder of ``model`` (``<models>/<name>.lm``), checked against the codec
    weights and, when decoding, against the LM hash the stream records."""
    try:
        from neucomp.coding.range import LMCoder, default_lm_path
    except ImportError:
        raise UsageError("the LM coder is not available in this installation") from None
    name = model.config.name
    path = default_lm_path(name)
    if not path.is_file():
        hint = f" with hash {want_hash.hex()[:12]}…" if want_hash else ""
        raise ModelError(f"the LM for model '{name}'{hint} is not installed ({path} is missing)")
    key = str(path.resolve())
    if key not in _LMS:
        _LMS[key] = LMCoder.load(path)
    coder = _LMS[key]
    coder.check_codec(model.weights_hash)
    if want_hash is not None and _hash_bytes(coder.hash) != want_hash:
        raise ModelError(
            f"this file was coded with a different LM for model '{name}' "
            f"(hash {want_hash.hex()[:12]}…; installed: {_hash_bytes(coder.hash).hex()[:12]}…)"
        )
    return coder


def check_options(model: str | os.PathLike | None, bandwidth: float, lm: bool) -> None:
    """Raise the error a compression with these options would give, without any audio."""
    codec = load_model(model)
    codec.config.n_codebooks_for(bandwidth)
    if lm:
        _lm_coder(codec)


def _hash_bytes(h: str | bytes) -> bytes:
    return bytes.fromhex(h) if isinstance(h, str) else bytes(h)


# ------------------------------------------------------------------------- compress


@dataclass
class Result:
    """What one compress / decompress did, for summaries and batch totals."""

    source: str
    target: str
    seconds: float  # duration of the audio
    sample_rate: int  # of the original audio
    channels: int
    samples: int  # per channel, at sample_rate
    ecdc_bytes: int  # size of the compressed stream
    input_bytes: int | None = None  # size of the input file (None for pipes)
    output_bytes: int | None = None
    chunks: int = 0
    warnings: list[str] = field(default_factory=list)

    @property
    def kbps(self) -> float:
        """Actual bitrate of the .ecdc stream, overhead included."""
        return self.ecdc_bytes * 8 / self.seconds / 1000 if self.seconds > 0 else 0.0


class _ChunkWriter:
    """Collects code frames and writes them as container chunks of CHUNK_FRAMES frames
    (the last one shorter), each coded by ``code`` (plain packing or the LM coder)."""

    def __init__(self, writer, code: Callable[[np.ndarray], bytes]) -> None:
        self.writer = writer
        self.code = code
        self.pending: list[np.ndarray] = []  # codes [K, f] not yet written
        self.frames = 0

    def add(self, codes) -> None:
        """Queue codes [1, K, f] (a torch tensor from the streaming encoder)."""
        self.pending.append(codes[0].numpy())
        self.frames += codes.shape[-1]
        if self.frames >= CHUNK_FRAMES:
            self._write(final=False)

    def close(self) -> None:
        """Write what is left as a last, shorter chunk."""
        self._write(final=True)

    def _write(self, final: bool) -> None:
        codes = np.concatenate(self.pending, axis=1)
        start = 0
        while codes.shape[1] - start >= CHUNK_FRAMES or (final and start < codes.shape[1]):
            part = codes[:, start : start + CHUNK_FRAMES]
            self.writer.write_chunk(part.shape[1], self.code(part))
            start += part.shape[1]
        self.pending = [codes[:, start:]]
        self.frames = codes.shape[1] - start


def compress_stream(
    reader: A.AudioReader,
    out: BinaryIO,
    model: Codec,
    bandwidth: float = DEFAULT_BANDWIDTH,
    lm: bool = False,
) -> Result:
    """Encode everything ``reader`` yields into ``out`` (which need not be seekable)."""
    import torch

    from neucomp.coding.packing import pack_codes
    from neucomp.container import Coder, EcdcWriter, Header, Trailer

    cfg = model.config
    n_q = cfg.n_codebooks_for(bandwidth)
    coder = _lm_coder(model) if lm else None
    header = Header(
        model_name=cfg.name,
        model_hash=bytes.fromhex(model.weights_hash),
        coder=Coder.LM if coder else Coder.PLAIN,
        lm_hash=_hash_bytes(coder.hash) if coder else bytes(32),
        model_sample_rate=cfg.sample_rate,
        model_channels=cfg.channels,
        hop_length=cfg.hop_length,
        num_codebooks=n_q,
        original_sample_rate=reader.info.sample_rate,
        original_channels=reader.info.channels,
        codebook_size=cfg.codebook_size,
    )
    resampler = A.Resampler(reader.info.sample_rate, cfg.sample_rate, cfg.channels)
    encoder = model.stream_encoder(n_q)
    model_samples = original_samples = 0

    def encode(x: np.ndarray) -> torch.Tensor:
        nonlocal model_samples
        model_samples += x.shape[1]
        return encoder.push(torch.from_numpy(np.ascontiguousarray(x))[None])

    with torch.inference_mode():
        blocks = (b for b in reader.blocks() if b.shape[1])
        first = next(blocks, None)
        if first is None:  # checked before the header goes out: empty input writes nothing
            raise InputError(f"'{reader.name}' contains no audio samples")
        writer = EcdcWriter(out, header)
        chunks = _ChunkWriter(writer, coder.encode_chunk if coder else pack_codes)
        for block in itertools.chain([first], blocks):
            original_samples += block.shape[1]
            chunks.add(encode(resampler.push(A.to_model_channels(block, cfg.channels))))
        tail = resampler.flush()
        if model_samples + tail.shape[1] == 0:  # e.g. 1 sample at 96 kHz: keep one frame
            tail = np.zeros((cfg.channels, 1), np.float32)
        chunks.add(encode(tail))
        chunks.add(encoder.flush())
        chunks.close()
        writer.finish(Trailer(model_samples, original_samples))
    rate = reader.info.sample_rate
    return Result(
        source=reader.name,
        target="",
        seconds=original_samples / rate,
        sample_rate=rate,
        channels=reader.info.channels,
        samples=original_samples,
        ecdc_bytes=writer.bytes_written,
        chunks=writer.num_chunks,
    )


# ----------------------------------------------------------------------- decompress


class AudioSink(Protocol):
    def write(self, block: np.ndarray) -> None: ...


class _HeldTail:
    """Passes ``[C, n]`` blocks on but keeps the last ``keep`` frames back, so that the
    stream can be cut or padded to its exact length once the end record tells it."""

    def __init__(self, keep: int, channels: int) -> None:
        self.keep = keep
        self.emitted = 0
        self._held = np.zeros((channels, 0), np.float32)

    def push(self, block: np.ndarray) -> np.ndarray:
        held = np.concatenate([self._held, block], axis=1) if self._held.size else block
        cut = max(0, held.shape[1] - self.keep)
        self._held = held[:, cut:]
        self.emitted += cut
        return held[:, :cut]

    def finish(self, total: int, what: str) -> np.ndarray:
        if self.emitted > total:
            raise FormatError(f"bad .ecdc end record: its {what} length disagrees with the chunks")
        rest, self._held = A.fit_length(self._held, total - self.emitted), self._held[:, :0]
        self.emitted = total
        return rest


def decompress_stream(
    fp: BinaryIO,
    open_sink: Callable[[Header], AudioSink],
    *,
    salvage: bool = False,
    model: Codec | str | os.PathLike | None = None,
) -> Result:
    """Decode a .ecdc stream; ``open_sink(header)`` gives where the audio blocks go.

    ``model`` overrides the installed model named in the header (its hash must match).
    """
    from neucomp.coding.packing import unpack_codes
    from neucomp.container import Coder, EcdcReader

    reader = EcdcReader(fp)  # a bad header fails here, before torch is even imported
    h = reader.header
    model = _model_for(h, model)
    import torch

    coder = _lm_coder(model, h.lm_hash) if h.coder == Coder.LM else None
    hop, k = h.hop_length, h.num_codebooks
    resampler = A.Resampler(h.model_sample_rate, h.original_sample_rate, h.model_channels)
    model_tail = _HeldTail(hop, h.model_channels)
    # The resampled stream may run a sample or so past the true length: hold that back too.
    ratio = h.original_sample_rate / h.model_sample_rate
    out_tail = _HeldTail(int(hop * ratio) + 64, h.original_channels)
    sink = open_sink(h)
    decoder = model.stream_decoder()

    def emit(x: np.ndarray, last: bool = False) -> None:
        y = resampler.push(x, last=last)
        sink.write(out_tail.push(A.from_model_channels(y, h.original_channels)))

    with torch.inference_mode():
        for chunk in reader.iter_chunks(salvage=salvage):
            if chunk.payload is None:  # damaged (salvage mode): silence, fresh decoder state
                emit(
                    model_tail.push(
                        np.zeros((h.model_channels, chunk.num_frames * hop), np.float32)
                    )
                )
                decoder = model.stream_decoder()
                continue
            codes = torch.from_numpy(_decode_payload(chunk, coder, k, unpack_codes))
            for start in range(0, codes.shape[1], DECODE_FRAMES):
                part = codes[None, :, start : start + DECODE_FRAMES]
                emit(model_tail.push(decoder.push(part)[0].numpy()))
        trailer = reader.trailer
        emit(model_tail.finish(trailer.model_samples, "model-rate"), last=True)
        sink.write(out_tail.finish(trailer.original_samples, "original"))
    rate = h.original_sample_rate
    return Result(
        source="",
        target="",
        seconds=trailer.original_samples / rate,
        sample_rate=rate,
        channels=h.original_channels,
        samples=trailer.original_samples,
        ecdc_bytes=reader.bytes_read,
        chunks=0,
        warnings=list(reader.warnings),
    )


def _decode_payload(chunk, coder, k: int, unpack_codes) -> np.ndarray:
    if coder is not None:
        codes = np.asarray(coder.decode_chunk(chunk.payload, k, chunk.num_frames))
    else:
        codes = unpack_codes(chunk.payload, k, chunk.num_frames)
    return codes.astype(np.int64, copy=False)


# ------------------------------------------------------------------- file front-ends


def _file_size(path: str | os.PathLike) -> int | None:
    return None if str(path) == A.STDIO else os.path.getsize(path)


def compress_file(
    src: str | os.PathLike,
    dst: str | os.PathLike,
    *,
    bandwidth: float = DEFAULT_BANDWIDTH,
    lm: bool = False,
    model: str | os.PathLike | None = None,
    force: bool = False,
) -> Result:
    """Compress the audio file ``src`` (or ``"-"``) into ``dst`` (or ``"-"``), atomically."""
    with A.open_audio(src) as reader:
        A.check_output(dst, force)
        codec = load_model(model)
        codec.config.n_codebooks_for(bandwidth)  # a bad bandwidth fails before any output
        with A.atomic_output(dst, force, stream_stdout=True) as out:
            result = compress_stream(reader, out, codec, bandwidth, lm)
    result.source, result.target = A.display_name(src), A.display_name(dst, output=True)
    result.input_bytes = _file_size(src)
    result.output_bytes = result.ecdc_bytes
    return result


class _LazyWriter:
    """An AudioWriter on ``fp``, opened once the header gives rate and channel count."""

    def __init__(self, fp: BinaryIO, fmt: str, subtype: str) -> None:
        self.fp, self.fmt, self.subtype = fp, fmt, subtype
        self.writer: A.AudioWriter | None = None

    def open(self, header: Header) -> A.AudioWriter:
        self.writer = A.AudioWriter(
            self.fp, header.original_sample_rate, header.original_channels, self.fmt, self.subtype
        )
        return self.writer


def decompress_file(
    src: str | os.PathLike,
    dst: str | os.PathLike,
    *,
    float_wav: bool = False,
    salvage: bool = False,
    force: bool = False,
    model: str | os.PathLike | None = None,
) -> Result:
    """Decompress the .ecdc file ``src`` (or ``"-"``) into ``dst`` (.wav/.flac or ``"-"``)."""
    fmt, subtype = A.output_format(dst, float_wav)
    with open_input(src) as fp:
        A.check_output(dst, force)
        with A.atomic_output(dst, force) as out:
            lazy = _LazyWriter(out, fmt, subtype)
            try:
                result = decompress_stream(fp, lazy.open, salvage=salvage, model=model)
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


# ------------------------------------------------------------------------ Python API


def compress(
    audio: np.ndarray,
    sample_rate: int,
    bandwidth: float = DEFAULT_BANDWIDTH,
    *,
    lm: bool = False,
    model: str | None = None,
) -> bytes:
    """Compress float audio ``[T]`` or ``[C, T]`` (values in [-1, 1]) to .ecdc bytes."""
    codec = load_model(model)
    out = io.BytesIO()
    compress_stream(A.ArrayReader(audio, sample_rate), out, codec, bandwidth, lm)
    return out.getvalue()


class _Collect:
    def __init__(self) -> None:
        self.blocks: list[np.ndarray] = []

    def write(self, block: np.ndarray) -> None:
        if block.shape[1]:
            self.blocks.append(block)


def decompress(
    data: bytes, *, salvage: bool = False, model: str | None = None
) -> tuple[np.ndarray, int]:
    """Decompress .ecdc bytes to ``(audio [C, T] float32, sample_rate)`` at the original
    rate, channel count and length. With ``salvage``, damaged chunks become silence (and
    a warning) instead of an error. ``model`` (a name or path) overrides the installed
    model the stream names; its weights must still be the ones that made the stream."""
    collect = _Collect()
    result = decompress_stream(io.BytesIO(data), lambda h: collect, salvage=salvage, model=model)
    for message in result.warnings:
        warnings.warn(message, stacklevel=2)
    audio = np.concatenate(collect.blocks, axis=1) if collect.blocks else None
    if audio is None:
        audio = np.zeros((result.channels, 0), np.float32)
    return audio, result.sample_rate
