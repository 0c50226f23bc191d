"""Audio ⇄ `.ecdc` streams, chunk by chunk, with bounded memory (the stream engine).

Compress: input blocks → model channels → model rate (streaming soxr) → every 750
frames' worth (10 s at 24 kHz) levelled to one loudness (neucomp.level) and judged
speech or not (neucomp.audio.speech) → streaming encoder → one container chunk with its
gain and speech flag, its codes turned into a payload by the coder it is handed → totals
in the end record.

The engine is handed everything it works with (the model, the number of codebooks, a
:class:`~neucomp.coding.base.ChunkCoder`, an open container reader): it never looks a
model or a coder up, and never validates options (that is done once, in neucomp.api).

Decompress: container chunks → codes → streaming decoder → each chunk's gain divided out
→ the formant postfilter on the chunks flagged speech → trimmed to the model-rate length
→ original rate (streaming soxr) → original channel count → exactly the original number
of samples. The totals are only known at the end
of the stream, so the last few samples at each stage are held back until then
(:class:`_HeldTail`).
"""

from __future__ import annotations

import itertools
import math
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, BinaryIO, Protocol

import numpy as np

from neucomp import audio as A
from neucomp.errors import CorruptDataError, FormatError, InputError
from neucomp.level import Leveller, Unleveller
from neucomp.progress import Progress

if TYPE_CHECKING:
    from neucomp.coding.base import ChunkCoder
    from neucomp.container import EcdcReader, Header
    from neucomp.model import Codec

CHUNK_FRAMES = 750  # frames per container chunk: 10 s at 24 kHz / hop 320
# Frames per decoder call: the decoder's full-rate activations for a whole 10 s chunk
# would take hundreds of MB with the full-width model; 2 s pieces keep memory small
# (streaming makes the result independent of the split, up to float rounding).
DECODE_FRAMES = 150
# The first piece of every chunk is shorter: with the LM coder a piece's codes cost
# ~7 ms a frame to decode, and the first audio of a file (or of a live chunk) waits for
# its whole first piece. 30 frames (0.4 s at 75 frames/s) bring that to ~0.2 s.
FIRST_DECODE_FRAMES = 30
# Where a model's speech and general decoders take over from each other (chunk flags),
# the output crossfades over this long: the postfilter's switch fade.
SWITCH_FADE_S = 0.01


def decode_pieces(num_frames: int) -> list[int]:
    """How a chunk of ``num_frames`` is split into decoder calls: the same split for
    every coder, so a file's audio does not depend on how its codes were packed."""
    sizes = [min(FIRST_DECODE_FRAMES, num_frames)] if num_frames else []
    rest = num_frames - sum(sizes)
    sizes += [DECODE_FRAMES] * (rest // DECODE_FRAMES)
    if rest % DECODE_FRAMES:
        sizes.append(rest % DECODE_FRAMES)
    return sizes


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


class _FiniteGuard:
    """Replaces NaN and ±inf input samples by 0 before they reach the encoder, whose
    recurrent state would otherwise stay poisoned for the rest of the stream; counts
    them for one warning at the end."""

    def __init__(self) -> None:
        self.count = 0
        self.first: int | None = None  # frame index of the first bad sample

    def clean(self, block: np.ndarray, offset: int) -> np.ndarray:
        bad = ~np.isfinite(block)
        if not bad.any():
            return block
        if self.first is None:
            self.first = offset + int(np.flatnonzero(bad.any(axis=0))[0])
        self.count += int(bad.sum())
        return np.where(bad, np.float32(0), block)

    def warning(self, rate: int) -> str | None:
        if not self.count:
            return None
        s = "" if self.count == 1 else "s"
        return (
            f"input has {self.count} non-finite sample{s} (NaN or inf), the first at "
            f"{self.first / rate:.3f} s: replaced with silence"
        )


# Frames' worth of audio per encoder call: bounds the encoder's activations likewise.
ENCODE_FRAMES = 150

#: What `content` may say of the input: judge each chunk, or every chunk is speech, or none.
CONTENT_CHOICES = ("auto", "speech", "other")


class _ChunkJudge:
    """The speech flag of each chunk, from its audio as it was before levelling."""

    def __init__(self, content: str, sample_rate: int) -> None:
        from neucomp.audio.speech import SpeechDetector

        if content not in CONTENT_CHOICES:
            raise ValueError(f"content must be one of {CONTENT_CHOICES}, got {content!r}")
        self.content = content
        self.detector = SpeechDetector(sample_rate) if content == "auto" else None
        self.unleveller = Unleveller(sample_rate)

    def judge(self, levelled: np.ndarray, gain_db: int) -> bool:
        if self.detector is None:
            return self.content == "speech"
        self.unleveller.add_chunk(levelled.shape[1], gain_db)
        return self.detector.push_chunk(self.unleveller.apply(levelled))


def compress_stream(
    reader: A.AudioReader,
    out: BinaryIO,
    model: Codec,
    n_q: int,
    coder: ChunkCoder,
    *,
    chunk_frames: int = CHUNK_FRAMES,
    progress: Progress | None = None,
    content: str = "auto",
    effort: str = "default",
) -> Result:
    """Encode everything ``reader`` yields into ``out`` (which need not be seekable) with
    ``n_q`` codebooks, each chunk's codes made a payload by ``coder``. ``content``
    (CONTENT_CHOICES) sets the chunks' speech flags: judged per chunk, or all alike.
    ``effort`` (model.SEARCH_EFFORTS) is how hard the encoder searches for the codes.

    Chunks hold ``chunk_frames`` frames (the last may be shorter); each is flushed to
    ``out`` as soon as it is written, so a pipe downstream gets it at once (the live
    mode's short chunks). ``progress`` hears the seconds of audio coded."""
    import torch

    from neucomp.container import EcdcWriter, Header, Trailer

    cfg = model.config
    A.check_format(reader.name, reader.info.sample_rate, reader.info.channels)
    header = Header(
        model_name=cfg.name,
        model_hash=bytes.fromhex(model.weights_hash),
        coder=coder.coder_id,
        lm_hash=coder.hash,
        model_sample_rate=cfg.sample_rate,
        model_channels=cfg.channels,
        hop_length=cfg.hop_length,
        num_codebooks=n_q,
        original_sample_rate=reader.info.sample_rate,
        original_channels=reader.info.channels,
        codebook_size=cfg.codebook_size,
    )
    resampler = A.Resampler(reader.info.sample_rate, cfg.sample_rate, cfg.channels)
    encoder = model.stream_encoder(n_q, effort)
    guard = _FiniteGuard()
    leveller = Leveller(cfg.channels, chunk_frames * cfg.hop_length, cfg.sample_rate)
    judge = _ChunkJudge(content, cfg.sample_rate)
    model_samples = original_samples = 0
    progress = progress or Progress()
    progress.start(reader.info.duration)

    def encode(x: np.ndarray) -> list[np.ndarray]:
        """Levelled audio [C, n] → its codes [K, f] (in pieces, to bound memory)."""
        nonlocal model_samples
        model_samples += x.shape[1]
        step = ENCODE_FRAMES * cfg.hop_length
        pieces = (x[:, i : i + step] for i in range(0, x.shape[1], step))
        return [
            encoder.push(torch.from_numpy(np.ascontiguousarray(p))[None])[0].numpy() for p in pieces
        ]

    def write(parts: list[np.ndarray], gain_db: int, speech: bool) -> None:
        codes = np.concatenate(parts, axis=1) if parts else np.zeros((n_q, 0), np.int64)
        if codes.shape[1]:
            writer.write_chunk(codes.shape[1], coder.encode(codes), gain_db, speech)
            out.flush()
            progress.update(
                min(writer.num_frames * cfg.hop_length, model_samples) / cfg.sample_rate
            )

    with torch.inference_mode():
        blocks = (b for b in reader.blocks() if b.shape[1])
        first = next(blocks, None)
        if first is None:  # checked before the header goes out: empty input writes nothing
            raise InputError(f"'{reader.name}' contains no audio samples")
        writer = EcdcWriter(out, header)
        for block in itertools.chain([first], blocks):
            block = guard.clean(block, original_samples)
            original_samples += block.shape[1]
            x = resampler.push(A.to_model_channels(block, cfg.channels))
            for levelled, gain_db in leveller.push(x):
                write(encode(levelled), gain_db, judge.judge(levelled, gain_db))
        tail = resampler.flush()
        if model_samples + leveller.pending + tail.shape[1] == 0:
            tail = np.zeros((cfg.channels, 1), np.float32)  # e.g. 1 sample at 96 kHz
        for levelled, gain_db in leveller.push(tail):
            write(encode(levelled), gain_db, judge.judge(levelled, gain_db))
        levelled, gain_db = leveller.flush()
        speech = judge.judge(levelled, gain_db)
        write([*encode(levelled), encoder.flush()[0].numpy()], gain_db, speech)
        writer.finish(Trailer(model_samples, original_samples))
    rate = reader.info.sample_rate
    warning = guard.warning(rate)
    return Result(
        source=reader.name,
        target="",
        seconds=original_samples / rate,
        sample_rate=rate,
        channels=reader.info.channels,
        samples=original_samples,
        ecdc_bytes=writer.bytes_written,
        chunks=writer.num_chunks,
        warnings=[warning] if warning else [],
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


def follows_speech_flags(header: Header) -> bool:
    """Whether, unless asked otherwise, the postfilter runs on the chunks the encoder
    flagged as speech. On the 45 dev-eval clips at 6 kbps it raises speech PESQ-wb by
    0.12 (20 of 20 clips) but lowers music's ViSQOL by 0.25 (docs/EXPERIMENTS.md E14),
    hence the flag. Only for mono models: it was measured on the 24 kHz one, and the
    48 kHz stereo model codes music first. Files before format version 4 have no flags."""
    return header.model_channels == 1 and header.version >= 4


def decompress_stream(
    reader: EcdcReader,
    model: Codec,
    coder: ChunkCoder,
    open_sink: Callable[[Header], AudioSink],
    *,
    salvage: bool = False,
    progress: Progress | None = None,
    total_samples: int | None = None,
    postfilter: bool | None = None,
    speech_decoder: bool | None = None,
) -> Result:
    """Decode the chunks of an open .ecdc stream (its header read and matched to
    ``model`` and ``coder`` already); ``open_sink(header)`` gives where the audio goes.
    ``postfilter`` runs the decoded audio through the formant postfilter
    (neucomp.audio.postfilter): True on every chunk, False on none, None on the chunks
    flagged speech where :func:`follows_speech_flags`, unless a speech decoder takes
    those chunks. ``speech_decoder`` chooses, for a model that has one, between its
    speech and its general decoder the same way: None follows the flags
    (:class:`neucomp.model.SwitchedDecoder`), True or False uses one decoder
    throughout; a ModelError when True and the model has none. A speech decoder is
    trained to take the haze out itself, and the postfilter on top of it lowers STOI
    and raises LSD (docs/EXPERIMENTS.md E17), so by default it is not postfiltered.

    Audio reaches the sink a frame group at a time (:func:`decode_pieces`: a short
    first group, then DECODE_FRAMES) as soon as it is decoded, not a chunk or a file at
    a time: with the LM coder the codes themselves are handed over as they are decoded.
    ``progress`` hears the seconds decoded; ``total_samples`` (original rate), when
    known, is its total.
    """
    import torch

    from neucomp.model import SwitchedDecoder

    h = reader.header
    hop, k = h.hop_length, h.num_codebooks
    resampler = A.Resampler(h.model_sample_rate, h.original_sample_rate, h.model_channels)
    model_tail = _HeldTail(hop, h.model_channels)
    # Past the model-rate tail, the resampled stream can only overshoot the true length by
    # what resampling moves a length by (the end record's tolerance) and a sample or two
    # of the filter's flush: that is all the output side must hold back.
    ratio = h.original_sample_rate / h.model_sample_rate
    out_tail = _HeldTail(2 * math.ceil(ratio) + 8, h.original_channels)
    sink = open_sink(h)
    flags = follows_speech_flags(h)

    def new_decoder():
        if speech_decoder is None and flags and model.speech_decoder is not None:
            return SwitchedDecoder(model, fade=round(SWITCH_FADE_S * h.model_sample_rate))
        return model.stream_decoder(speech=bool(speech_decoder))

    decoder = new_decoder()
    unleveller = Unleveller(h.model_sample_rate, h.version)
    by_speech_decoder = model.speech_decoder is not None and speech_decoder is not False
    if postfilter is None and (not flags or by_speech_decoder):
        postfilter = False
    shaper = None
    if postfilter is not False:
        from neucomp.audio.postfilter import SwitchedPostfilter

        shaper = SwitchedPostfilter(h.model_sample_rate, h.model_channels)
    progress = progress or Progress()
    progress.start(None if total_samples is None else total_samples / h.original_sample_rate)
    decoded_samples = 0

    def decoded(y) -> np.ndarray:
        """Decoder output [1, C, n] → model-rate audio with its chunks' gains divided out."""
        nonlocal decoded_samples
        decoded_samples += y.shape[-1]
        x = unleveller.apply(y[0].numpy())
        return model_tail.push(shaper.process(x) if shaper is not None else x)

    def emit(x: np.ndarray, last: bool = False) -> None:
        y = resampler.push(x, last=last)
        sink.write(out_tail.push(A.from_model_channels(y, h.original_channels)))
        progress.update(decoded_samples / h.model_sample_rate)

    coder_warnings: list[str] = []
    with torch.inference_mode():
        # the end-of-stream check waits for the writer to exit: after the last audio
        for chunk in reader.iter_chunks(salvage=salvage, check_end=False):
            pieces = None
            if chunk.payload is not None:
                try:
                    pieces = _payload_pieces(chunk, coder, k, whole=salvage)
                except CorruptDataError as err:
                    if not salvage:
                        raise
                    # Its CRC held, but the coder cannot have written it: damaged too.
                    coder_warnings.append(f"{err}; replaced by silence")
            if pieces is None:  # damaged (salvage mode): silence, fresh decoder state
                emit(decoded(decoder.flush()))
                if shaper is not None:  # off: its filter must not ring into the silence
                    shaper.add_chunk(chunk.num_frames * hop, False, fade=False)
                unleveller.add_chunk(chunk.num_frames * hop, None)
                emit(decoded(torch.zeros(1, h.model_channels, chunk.num_frames * hop)))
                decoder = new_decoder()
                continue
            unleveller.add_chunk(chunk.num_frames * hop, chunk.gain_db)
            if shaper is not None:
                shaper.add_chunk(chunk.num_frames * hop, chunk.speech or postfilter is True)
            if isinstance(decoder, SwitchedDecoder):
                decoder.start_chunk(chunk.speech)
            for part in pieces:
                emit(decoded(decoder.push(torch.from_numpy(part)[None])))
        emit(decoded(decoder.flush()))  # a look-ahead decoder's last samples
        trailer = reader.trailer
        emit(model_tail.finish(trailer.model_samples, "model-rate"), last=True)
        sink.write(out_tail.finish(trailer.original_samples, "original"))
        reader.check_end()
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
        warnings=list(reader.warnings) + coder_warnings,
    )


def _payload_pieces(chunk, coder: ChunkCoder, k: int, whole: bool) -> Iterator[np.ndarray]:
    """The chunk's codes as int64 ``[K, n]`` pieces, split by :func:`decode_pieces` (the
    same split whichever the coder, so the audio is too). A coder that can decode
    incrementally (the LM) hands each piece over as soon as it has it, unless ``whole``
    asks for the whole payload decoded (and so checked) first: salvage mode, where a
    payload the coder refuses must turn into silence before any of it is played."""
    sizes = decode_pieces(chunk.num_frames)
    if whole or not hasattr(coder, "decode_iter"):
        codes = _decode_payload(chunk, coder, k)
        bounds = np.cumsum([0, *sizes])
        return iter([codes[:, a:b] for a, b in zip(bounds[:-1], bounds[1:], strict=True)])
    return _checked(coder.decode_iter(chunk.payload, k, chunk.num_frames, sizes), chunk)


def _checked(pieces: Iterator[np.ndarray], chunk) -> Iterator[np.ndarray]:
    try:
        for piece in pieces:
            yield piece.astype(np.int64, copy=False)
    except CorruptDataError as err:
        raise CorruptDataError(f"chunk {chunk.index}: {err}: the file is damaged") from None


def _decode_payload(chunk, coder: ChunkCoder, k: int) -> np.ndarray:
    try:
        codes = np.asarray(coder.decode(chunk.payload, k, chunk.num_frames))
    except CorruptDataError as err:
        raise CorruptDataError(f"chunk {chunk.index}: {err}: the file is damaged") from None
    return codes.astype(np.int64, copy=False)
