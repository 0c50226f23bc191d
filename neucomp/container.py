"""The `.ecdc` container, version 4 (and reading versions 1 to 3), as docs/FORMAT.md describes it.

A file is a header, then independent chunks of coded frames, then an end record that
carries the totals. The totals come last so that audio of unknown length (stdin) can
be written in one pass with bounded memory. Every part carries a CRC-32, and the
reader only ever calls `read()` (never `seek`), so it works on pipes. From version 2 the
CRCs form a chain (each starts from the previous part's stored CRC), so chunks cannot be
reordered or spliced in from another file, and each chunk carries the gain that levelled
its audio before encoding. From version 4 that byte also carries the encoder's speech
flag, which turns the decoder's formant postfilter on for the chunk.

The reader checks sizes against fixed limits before reading a payload, so a hostile or
damaged file can never make it allocate more than one chunk's worth of memory.
"""

from __future__ import annotations

import binascii
import operator
import re
import struct
import zlib
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any, BinaryIO

from neucomp.coding.base import CODER_NAMES, HASH_BYTES, CoderId, payload_problem
from neucomp.errors import CorruptDataError, FormatError, TruncatedError

MAGIC = b"NCDC"
VERSION = 4  # what the writer writes
READ_VERSIONS = (1, 2, 3, 4)
# Version 2 chunk gains (dB, i8): the levelled audio is the input times 10^(gain/20).
MIN_GAIN_DB, MAX_GAIN_DB = -60, 60

# The codec writes 750 frames per chunk. The bound keeps what one chunk head can make a
# reader do (decode frames, with the LM coder at some ms each) near what real files need.
MAX_CHUNK_FRAMES = 1024
MAX_PAYLOAD_BYTES = 16 << 20
MAX_CODEBOOKS = 32
MAX_CODEBOOK_SIZE = 1024  # codes must fit the 10 bits of plain packing
MAX_MODEL_NAME = 64
# Supported audio: beyond these the resampler and the output writer would need absurd
# amounts of memory, so a header outside them is refused before anything is allocated.
MIN_SAMPLE_RATE = 1000
MAX_SAMPLE_RATE = 384_000
MAX_CHANNELS = 64

# Header: fixed part up to and including the name length byte, then name, then CRC.
_HEADER_FIXED = struct.Struct("<4sBBHIHBBHIH32s32sB")  # 89 bytes
_HEADER_MIN = _HEADER_FIXED.size + 1 + 4  # name of 1 character
_HEADER_MAX = _HEADER_FIXED.size + MAX_MODEL_NAME + 4
_PREFIX = struct.Struct("<4sBBH")  # magic, version, coder, header_size: first 8 bytes
_CHUNK_HEAD_V1 = struct.Struct("<II")  # num_frames, payload_size
_CHUNK_HEAD = struct.Struct("<IIb")  # num_frames, payload_size, gain_db (version 2)
_END_BODY = struct.Struct("<IQQ")  # 0 marker, model_samples, original_samples
_CRC = struct.Struct("<I")
CHUNK_OVERHEAD_V2 = _CHUNK_HEAD.size + _CRC.size  # 13
CHUNK_OVERHEAD_V1 = _CHUNK_HEAD_V1.size + _CRC.size  # 12
# Version 3 chunk heads: LEB128 numbers, so that live chunks of a few frames cost a few
# bytes; payloads under SMALL_PAYLOAD bytes carry a CRC-16 (still every burst of up to
# 16 bits found, every 1- to 3-bit error in them), larger ones a CRC-32.
SMALL_PAYLOAD = 256
_VARINT_MAX_BYTES = 5  # 35 bits: any u32 a version 2 head could hold, and then some
END_RECORD_SIZE = _END_BODY.size + _CRC.size  # 24
# How many chunk heads EcdcReader.peek_trailer walks at most (10-s chunks: 11 days; a
# tenth of a second's live chunks: 3 hours) before it leaves the length unknown.
PEEK_MAX_CHUNKS = 100_000

_NAME_RE = re.compile(r"[A-Za-z0-9_.\-]+")
_ZERO_HASH = bytes(HASH_BYTES)


Coder = CoderId  # the header's coder field (defined with the coders, neucomp.coding.base)


def _check_range(label: str, value: Any, low: int, high: int) -> int:
    """`value` as a plain int if it is an integer in [low, high], else ValueError."""
    try:
        number = operator.index(value)  # accepts numpy integers, rejects floats
    except TypeError:
        raise ValueError(f"{label} must be an integer, got {type(value).__name__}") from None
    if isinstance(value, bool) or not low <= number <= high:
        raise ValueError(f"{label} must be in [{low}, {high}], got {number}")
    return number


def _set_int(obj: object, attr: str, label: str, low: int, high: int) -> None:
    """Validate an integer field of a frozen dataclass and store it as a plain int."""
    object.__setattr__(obj, attr, _check_range(label, getattr(obj, attr), low, high))


@dataclass(frozen=True)
class Header:
    """Everything a decoder needs before the first chunk: model identity and shapes."""

    model_name: str
    model_hash: bytes
    coder: Coder
    lm_hash: bytes  # the coder hash: LM file (coder 1), table file (coder 2), zeros (plain)
    model_sample_rate: int
    model_channels: int
    hop_length: int
    num_codebooks: int
    original_sample_rate: int
    original_channels: int
    codebook_size: int = 1024
    version: int = VERSION  # of the file; the writer only writes VERSION

    def __post_init__(self) -> None:
        name = self.model_name
        if not isinstance(name, str) or not 1 <= len(name) <= MAX_MODEL_NAME:
            raise ValueError(f"model name must be 1 to {MAX_MODEL_NAME} characters")
        if not _NAME_RE.fullmatch(name):
            raise ValueError("model name may only use the characters A-Z a-z 0-9 _ . -")
        for label, value in (("model hash", self.model_hash), ("LM hash", self.lm_hash)):
            if not isinstance(value, bytes) or len(value) != HASH_BYTES:
                raise ValueError(f"{label} must be {HASH_BYTES} raw bytes (a sha256 digest)")
        if self.coder not in tuple(Coder):
            raise ValueError(f"unknown coder {self.coder}")
        object.__setattr__(self, "coder", Coder(self.coder))
        if self.coder == Coder.PLAIN and self.lm_hash != _ZERO_HASH:
            raise ValueError("coder hash must be all zero bytes when the coder is plain")
        if self.coder == Coder.LM and self.lm_hash == _ZERO_HASH:
            raise ValueError("LM hash must be set when the coder is the LM range coder")
        if self.coder == Coder.FAST and self.lm_hash == _ZERO_HASH:
            raise ValueError("table hash must be set when the coder is the fast coder")
        rates = MIN_SAMPLE_RATE, MAX_SAMPLE_RATE
        _set_int(self, "model_sample_rate", "model sample rate", *rates)
        _set_int(self, "model_channels", "model channels", 1, 2**8 - 1)
        _set_int(self, "hop_length", "hop length", 1, 2**16 - 1)
        _set_int(self, "num_codebooks", "number of codebooks", 1, MAX_CODEBOOKS)
        _set_int(self, "original_sample_rate", "original sample rate", *rates)
        _set_int(self, "original_channels", "original channels", 1, MAX_CHANNELS)
        _set_int(self, "codebook_size", "codebook size", 2, MAX_CODEBOOK_SIZE)
        _set_int(self, "version", "version", min(READ_VERSIONS), max(READ_VERSIONS))

    @property
    def coder_hash(self) -> bytes:
        """The hash of the file the coder needs (the field is named after its first use)."""
        return self.lm_hash

    @property
    def frame_rate(self) -> float:
        """Frames per second at the model rate (75.0 for 24 kHz with hop 320)."""
        return self.model_sample_rate / self.hop_length

    def to_bytes(self) -> bytes:
        """The header's exact bytes, CRC included."""
        name = self.model_name.encode("ascii")
        size = _HEADER_FIXED.size + len(name) + _CRC.size
        body = _HEADER_FIXED.pack(
            MAGIC,
            self.version,
            int(self.coder),
            size,
            self.model_sample_rate,
            self.hop_length,
            self.model_channels,
            self.num_codebooks,
            self.codebook_size,
            self.original_sample_rate,
            self.original_channels,
            self.model_hash,
            self.lm_hash,
            len(name),
        )
        body += name
        return body + _CRC.pack(zlib.crc32(body))


@dataclass(frozen=True)
class Trailer:
    """The totals, stored in the end record: lengths before padding to whole frames."""

    model_samples: int  # per channel, at the model rate
    original_samples: int  # per channel, at the original rate

    def __post_init__(self) -> None:
        _set_int(self, "model_samples", "model samples", 0, 2**64 - 1)
        _set_int(self, "original_samples", "original samples", 0, 2**64 - 1)


def _trailer_problem(header: Header, frames: int, model_samples: int, original: int) -> str | None:
    """Why the end record's totals cannot belong to these chunks, or None.

    The frames must cover model_samples, and original_samples must be model_samples at
    the original rate: resampling moves a length by less than one sample at the lower
    rate, plus the one model-rate sample kept for an input too short to give any.
    """
    if model_samples > frames * header.hop_length:
        return f"claims {model_samples} samples, more than the {frames} frames hold"
    model_rate, rate = header.model_sample_rate, header.original_sample_rate
    if abs(original * model_rate - model_samples * rate) > rate + model_rate:
        return (
            f"claims {original} samples at {rate} Hz, which does not match its "
            f"{model_samples} samples at {model_rate} Hz"
        )
    return None


@dataclass(frozen=True)
class Chunk:
    """One chunk as read back; `payload` is None for a damaged chunk in salvage mode."""

    index: int
    num_frames: int
    payload: bytes | None
    gain_db: int = 0  # version 2: the gain the audio was levelled by (version 1: 0)
    speech: bool = False  # version 4: the encoder judged the chunk speech (earlier: False)


# Version 4's level byte: the gain as a 7-bit two's-complement number (-60 … 60 fit in
# -64 … 63) and, in the top bit, the speech flag. It costs no byte: a live chunk of 93 ms
# at 6 kbps has 70 payload bytes, where one more per chunk would be 1.4 % of the rate.
SPEECH_BIT = 0x80


def level_byte(gain_db: int, speech: bool) -> bytes:
    """Version 4's level byte for a chunk gain (−60 … 60 dB) and speech flag."""
    return bytes([(gain_db & 0x7F) | (SPEECH_BIT if speech else 0)])


def parse_level_byte(value: int) -> tuple[int, bool]:
    """(gain_db, speech) of a version 4 level byte; the gain may still be out of range."""
    low = value & 0x7F
    return (low - 0x80 if low & 0x40 else low), bool(value & SPEECH_BIT)


def _check_chunk_sizes(header: Header, num_frames: int, payload_size: int) -> str | None:
    """Why a chunk's declared sizes are impossible, or None if they are fine."""
    if not 1 <= num_frames <= MAX_CHUNK_FRAMES:
        return f"declares {num_frames} frames (allowed: 1 to {MAX_CHUNK_FRAMES})"
    if payload_size > MAX_PAYLOAD_BYTES:
        return f"declares a payload of {payload_size} bytes (limit {MAX_PAYLOAD_BYTES})"
    return payload_problem(header.coder, num_frames, header.num_codebooks, payload_size)


def varint(value: int) -> bytes:
    """``value`` (≥ 0) as LEB128: 7 bits a byte, low bits first, the top bit set on
    every byte but the last (minimal: no trailing zero bytes)."""
    out = bytearray()
    while True:
        low, value = value & 0x7F, value >> 7
        if not value:
            out.append(low)
            return bytes(out)
        out.append(low | 0x80)


def check_width(payload_size: int) -> int:
    """Bytes of a version 3 chunk's check: 2 (CRC-16) for a small payload, else 4."""
    return 2 if payload_size < SMALL_PAYLOAD else 4


def chunk_overhead(num_frames: int, payload_size: int) -> int:
    """Bytes a version 3 chunk spends besides its payload (head and check)."""
    return len(varint(num_frames)) + len(varint(payload_size)) + 1 + check_width(payload_size)


def _check(version: int, chain: int, head: bytes, payload: bytes) -> int:
    """A chunk's check over its head bytes and payload, started from ``chain`` (the
    previous part's stored check; 0 in version 1)."""
    if version >= 3 and check_width(len(payload)) == 2:
        return binascii.crc_hqx(payload, binascii.crc_hqx(head, chain & 0xFFFF))
    return zlib.crc32(payload, zlib.crc32(head, chain))


def _read_varint(read, first: bytes, index: int, start: int) -> tuple[int, bytes]:
    """A LEB128 number whose first byte is ``first`` (already read), and its bytes."""
    raw = bytearray(first)
    while raw[-1] & 0x80:
        if len(raw) == _VARINT_MAX_BYTES:
            raise CorruptDataError(
                f"chunk {index} at byte {start} has a number of over {_VARINT_MAX_BYTES} "
                "bytes in its head: the file is damaged"
            )
        more = read(1)
        if not more:
            raise TruncatedError(f"truncated .ecdc file: ended inside chunk {index}")
        raw += more
    if len(raw) > 1 and raw[-1] == 0:
        raise CorruptDataError(
            f"chunk {index} at byte {start} has a number written in more bytes than it "
            "needs in its head: the file is damaged"
        )
    return sum((b & 0x7F) << (7 * i) for i, b in enumerate(raw)), bytes(raw)


def _read_head(
    read, version: int, index: int, start: int
) -> tuple[bytes, int, int, int, bool] | bytes:
    """The next chunk's head: (its bytes, num_frames, payload_size, gain_db, speech); or,
    where the end record starts, the bytes of it read so far. b"": the stream has ended."""
    if version < 3:
        size = (_CHUNK_HEAD if version == 2 else _CHUNK_HEAD_V1).size
        head = read(size)
        if not head or head[:4] == bytes(len(head[:4])):  # the end marker (or a cut-off one)
            return head
        if len(head) < size:
            raise TruncatedError(f"truncated .ecdc file: ended inside chunk {index}")
        if version == 2:
            return (head, *_CHUNK_HEAD.unpack(head), False)
        return (head, *_CHUNK_HEAD_V1.unpack(head), 0, False)
    first = read(1)
    if not first or first == b"\x00":  # no chunk has 0 frames: the end record
        return first
    num_frames, raw_frames = _read_varint(read, first, index, start)
    more = read(1)
    if not more:
        raise TruncatedError(f"truncated .ecdc file: ended inside chunk {index}")
    payload_size, raw_size = _read_varint(read, more, index, start)
    gain = read(1)
    if not gain:
        raise TruncatedError(f"truncated .ecdc file: ended inside chunk {index}")
    head = raw_frames + raw_size + gain
    if version == 3:
        return head, num_frames, payload_size, struct.unpack("<b", gain)[0], False
    gain_db, speech = parse_level_byte(gain[0])
    return head, num_frames, payload_size, gain_db, speech


class EcdcWriter:
    """Writes a `.ecdc` stream in one pass: header now, chunks as they come, then totals."""

    def __init__(self, fp: BinaryIO, header: Header) -> None:
        self._fp = fp
        self.header = header
        self.bytes_written = 0
        self.num_chunks = 0
        self.num_frames = 0
        self._finished = False
        if header.version != VERSION:
            raise ValueError(f"the writer writes version {VERSION} only")
        head = header.to_bytes()
        self._chain = _CRC.unpack(head[-4:])[0]  # each CRC starts from the previous one
        self._write(head)

    def _write(self, data: bytes) -> None:
        self._fp.write(data)
        self.bytes_written += len(data)

    def write_chunk(
        self, num_frames: int, payload: bytes, gain_db: int = 0, speech: bool = False
    ) -> None:
        """Append one chunk of `num_frames` frames whose coded bytes are `payload`; its
        audio was multiplied by 10^(gain_db/20) before encoding; `speech`: the encoder
        judged it speech (the decoder's postfilter follows this flag)."""
        if self._finished:
            raise ValueError("cannot write a chunk after finish()")
        payload = bytes(payload)
        num_frames = _check_range("chunk frames", num_frames, 1, MAX_CHUNK_FRAMES)
        problem = _check_chunk_sizes(self.header, num_frames, len(payload))
        if problem:
            raise ValueError(f"chunk {problem}")
        gain_db = _check_range("chunk gain (dB)", gain_db, MIN_GAIN_DB, MAX_GAIN_DB)
        head = varint(num_frames) + varint(len(payload)) + level_byte(gain_db, speech)
        check = _check(VERSION, self._chain, head, payload)
        self._chain = check  # each check starts from the one stored before it
        self._write(head + check.to_bytes(check_width(len(payload)), "little") + payload)
        self.num_chunks += 1
        self.num_frames += num_frames

    def finish(self, trailer: Trailer) -> None:
        """Write the end record; nothing may be written after it."""
        if self._finished:
            raise ValueError("finish() was already called")
        problem = _trailer_problem(
            self.header, self.num_frames, trailer.model_samples, trailer.original_samples
        )
        if problem:
            raise ValueError(f"trailer {problem}")
        body = _END_BODY.pack(0, trailer.model_samples, trailer.original_samples)
        self._write(body + _CRC.pack(zlib.crc32(body, self._chain)))
        self._finished = True


class _Source:
    """Reads exact byte counts from any object with `read()`, counting the offset."""

    def __init__(self, fp: BinaryIO) -> None:
        self._fp = fp
        self.offset = 0

    def read(self, size: int) -> bytes:
        """Up to `size` bytes; fewer only at end of stream (pipes may return short reads)."""
        parts = []
        remaining = size
        while remaining > 0:
            part = self._fp.read(remaining)
            if not part:
                break
            parts.append(part)
            remaining -= len(part)
        data = b"".join(parts)
        self.offset += len(data)
        return data


def _read_header(src: _Source) -> Header:
    prefix = src.read(_PREFIX.size)
    if not prefix:
        raise TruncatedError("empty input: not a neucomp .ecdc file")
    if not MAGIC.startswith(prefix[:4]):
        raise FormatError("not a neucomp .ecdc file (bad magic)")
    if len(prefix) <= 4:
        raise TruncatedError("truncated .ecdc file: ended inside the header")
    if prefix[4] not in READ_VERSIONS:
        *rest, last = (str(v) for v in READ_VERSIONS)
        readable = f"{', '.join(rest)} and {last}"
        raise FormatError(f"unsupported .ecdc version {prefix[4]} (this neucomp reads {readable})")
    if len(prefix) < _PREFIX.size:
        raise TruncatedError("truncated .ecdc file: ended inside the header")
    _, _, _, header_size = _PREFIX.unpack(prefix)
    if not _HEADER_MIN <= header_size <= _HEADER_MAX:
        raise FormatError(
            f"bad .ecdc header: its size {header_size} is outside {_HEADER_MIN} to "
            f"{_HEADER_MAX} bytes"
        )
    rest = src.read(header_size - _PREFIX.size)
    if len(rest) < header_size - _PREFIX.size:
        raise TruncatedError("truncated .ecdc file: ended inside the header")
    raw = prefix + rest
    body, (crc,) = raw[:-4], _CRC.unpack(raw[-4:])
    if zlib.crc32(body) != crc:
        raise CorruptDataError("checksum mismatch in the header at byte 0: the file is damaged")

    fields = _HEADER_FIXED.unpack(body[: _HEADER_FIXED.size])
    (_, version, coder, _, rate, hop, channels, n_q, cb_size, orig_rate, orig_ch) = fields[:11]
    model_hash, lm_hash, name_len = fields[11:]
    name_bytes = body[_HEADER_FIXED.size :]
    if name_len != len(name_bytes):
        raise FormatError(
            f"bad .ecdc header: model name length {name_len} does not match "
            f"the header size {header_size}"
        )
    if coder not in tuple(Coder):
        raise FormatError(f"bad .ecdc header: unknown coder {coder}")
    try:
        return Header(
            model_name=name_bytes.decode("ascii"),
            model_hash=model_hash,
            coder=Coder(coder),
            lm_hash=lm_hash,
            model_sample_rate=rate,
            model_channels=channels,
            hop_length=hop,
            num_codebooks=n_q,
            original_sample_rate=orig_rate,
            original_channels=orig_ch,
            codebook_size=cb_size,
            version=version,
        )
    except UnicodeDecodeError:
        raise FormatError("bad .ecdc header: the model name is not ASCII") from None
    except ValueError as err:
        raise FormatError(f"bad .ecdc header: {err}") from None


def read_header(fp: BinaryIO) -> Header:
    """Read and validate only the header (e.g. for `neucomp info` before the chunks)."""
    return _read_header(_Source(fp))


class EcdcReader:
    """Reads a `.ecdc` stream front to back, checking every size and checksum.

    `header` is available at once; `trailer` after `iter_chunks()` is exhausted. In
    salvage mode, damaged chunks come back with `payload=None` and `warnings` says why.
    """

    def __init__(self, fp: BinaryIO) -> None:
        self._src = _Source(fp)
        self.header = _read_header(self._src)
        self.warnings: list[str] = []
        self._trailer: Trailer | None = None
        self._started = False

    @property
    def bytes_read(self) -> int:
        """Bytes consumed from the stream so far."""
        return self._src.offset

    @property
    def trailer(self) -> Trailer:
        """The totals from the end record; only known once all chunks were read."""
        if self._trailer is None:
            raise RuntimeError("the trailer is only known after iter_chunks() is exhausted")
        return self._trailer

    def peek_trailer(self, max_chunks: int = PEEK_MAX_CHUNKS) -> Trailer | None:
        """The totals of the end record, read ahead of the chunks when the input can seek
        (a file, not a pipe): the chunk heads are walked with seeks, payloads skipped,
        and the end record must pass its (chained) checksum. None when the input cannot
        seek, has more than ``max_chunks`` chunks (the walk stays short), or anything
        looks wrong: the pass through the chunks then finds and reports it. The
        position is left where it was."""
        fp = self._src._fp
        try:
            if self._started or not fp.seekable():
                return None
            start = fp.tell()
        except (AttributeError, OSError, ValueError):
            return None
        try:
            return self._walk_to_trailer(fp, max_chunks)
        except (OSError, ValueError, struct.error):
            return None
        finally:
            fp.seek(start)

    def _walk_to_trailer(self, fp: BinaryIO, max_chunks: int) -> Trailer | None:
        version = self.header.version
        chain = _CRC.unpack(self.header.to_bytes()[-4:])[0] if version >= 2 else 0
        frames = 0
        for index in range(max_chunks + 1):
            head = _read_head(fp.read, version, index, 0)
            if isinstance(head, bytes):  # the end record (or the stream's end: None below)
                record = head + fp.read(END_RECORD_SIZE - len(head))
                if len(record) != END_RECORD_SIZE or fp.read(1):
                    return None
                body, (crc,) = record[: _END_BODY.size], _CRC.unpack(record[_END_BODY.size :])
                marker, model_samples, original_samples = _END_BODY.unpack(body)
                if marker or zlib.crc32(body, chain) != crc:
                    return None
                if _trailer_problem(self.header, frames, model_samples, original_samples):
                    return None
                return Trailer(model_samples, original_samples)
            _, num_frames, payload_size, _, _ = head
            if _check_chunk_sizes(self.header, num_frames, payload_size):
                return None
            width = check_width(payload_size) if version >= 3 else _CRC.size
            stored = fp.read(width)
            if len(stored) < width:
                return None
            fp.seek(payload_size, 1)
            if version >= 2:
                chain = int.from_bytes(stored, "little")
            frames += num_frames
        return None

    def iter_chunks(self, salvage: bool = False, check_end: bool = True) -> Iterator[Chunk]:
        """Yield every chunk in order, then read the end record and check nothing follows.

        Raises TruncatedError, CorruptDataError or FormatError on any damage; with
        `salvage=True` a chunk whose checksum fails but whose sizes are plausible is
        yielded with `payload=None` (and a warning) so the caller can fill in silence.
        ``check_end=False`` leaves the check that nothing follows the end record to
        :meth:`check_end`: on a pipe it waits for the writer to close it (to exit), and
        a streaming decoder can hand out its last samples first.
        """
        if self._started:
            raise RuntimeError("iter_chunks() can only be called once per reader")
        self._started = True
        src = self._src
        index = 0
        total_frames = 0
        version = self.header.version
        # From version 2 the checks are chained: each starts from the previous part's
        # *stored* check, so one damaged chunk does not make the next unverifiable in
        # salvage mode.
        chain = _CRC.unpack(self.header.to_bytes()[-4:])[0] if version >= 2 else 0
        while True:
            start = src.offset
            head = _read_head(src.read, version, index, start)
            if not head:
                where = f"chunk {index - 1}" if index else "the header"
                raise TruncatedError(f"truncated .ecdc file: no end record after {where}")
            if isinstance(head, bytes):
                self._read_end(head, start, total_frames, salvage, chain)
                if check_end:
                    self.check_end()
                return
            head_bytes, num_frames, payload_size, gain_db, speech = head
            problem = _check_chunk_sizes(self.header, num_frames, payload_size)
            if problem is None and version >= 4 and not MIN_GAIN_DB <= gain_db <= MAX_GAIN_DB:
                problem = (
                    f"declares a gain of {gain_db} dB (allowed: {MIN_GAIN_DB} to {MAX_GAIN_DB})"
                )
            if problem:
                raise CorruptDataError(
                    f"chunk {index} at byte {start} {problem}: the file is damaged"
                )
            width = check_width(payload_size) if version >= 3 else _CRC.size
            stored_bytes = src.read(width)
            payload = src.read(payload_size)
            if len(stored_bytes) < width or len(payload) < payload_size:
                raise TruncatedError(f"truncated .ecdc file: ended inside chunk {index}")
            stored = int.from_bytes(stored_bytes, "little")
            if _check(version, chain, head_bytes, payload) != stored:
                message = f"checksum mismatch in chunk {index} at byte {start}"
                if version >= 2:
                    message += " (damaged, or not in its place)"
                if not salvage:
                    raise CorruptDataError(f"{message}: the file is damaged")
                self.warnings.append(f"{message}: replaced {num_frames} frames with silence")
                yield Chunk(index, num_frames, None, 0)
            else:
                yield Chunk(index, num_frames, payload, gain_db, speech)
            if version >= 2:
                chain = stored
            index += 1
            total_frames += num_frames

    def check_end(self) -> None:
        """FormatError if anything follows the end record (which must have been read)."""
        if self._src.read(1):
            raise FormatError("unexpected data after end of stream")

    def _read_end(
        self, head: bytes, start: int, total_frames: int, salvage: bool, chain: int
    ) -> None:
        """Read the rest of the end record (its first bytes are in `head`), then check EOF."""
        rest = self._src.read(END_RECORD_SIZE - len(head))
        record = head + rest
        if len(record) < END_RECORD_SIZE:
            raise TruncatedError("truncated .ecdc file: ended inside the end record")
        body, (crc,) = record[: _END_BODY.size], _CRC.unpack(record[_END_BODY.size :])
        _, model_samples, original_samples = _END_BODY.unpack(body)
        capacity = total_frames * self.header.hop_length
        problem = None
        if zlib.crc32(body, chain) != crc:
            problem = f"checksum mismatch in the end record at byte {start}"
        else:
            why = _trailer_problem(self.header, total_frames, model_samples, original_samples)
            problem = f"the end record at byte {start} {why}" if why else None
        if problem is None:
            self._trailer = Trailer(model_samples, original_samples)
            return
        if not salvage:
            raise CorruptDataError(f"{problem}: the file is damaged")
        # The length is lost: assume the frames were full, and scale to the original rate.
        h = self.header
        estimate = round(capacity * h.original_sample_rate / h.model_sample_rate)
        self.warnings.append(f"{problem}: the length was estimated from the frame count")
        self._trailer = Trailer(capacity, estimate)


def summarize(fp: BinaryIO) -> dict[str, Any]:
    """Read a whole stream (checking it) and describe it as a JSON-ready dict for `info`."""
    reader = EcdcReader(fp)
    header_bytes = reader.bytes_read
    chunks = frames = payload_bytes = speech_chunks = 0
    for chunk in reader.iter_chunks():
        chunks += 1
        speech_chunks += chunk.speech
        frames += chunk.num_frames
        payload_bytes += len(chunk.payload or b"")
    h, t = reader.header, reader.trailer
    duration = t.original_samples / h.original_sample_rate
    file_bytes = reader.bytes_read

    def kbps(nbytes: int) -> float | None:
        return round(nbytes * 8 / duration / 1000, 3) if duration > 0 else None

    return {
        "format_version": h.version,
        "coder": CODER_NAMES[h.coder],
        "model_name": h.model_name,
        "model_hash": h.model_hash.hex(),
        "lm_hash": h.lm_hash.hex() if h.coder == Coder.LM else None,
        "tables_hash": h.lm_hash.hex() if h.coder == Coder.FAST else None,
        "model_sample_rate": h.model_sample_rate,
        "model_channels": h.model_channels,
        "hop_length": h.hop_length,
        "frame_rate": h.frame_rate,
        "num_codebooks": h.num_codebooks,
        "codebook_size": h.codebook_size,
        "original_sample_rate": h.original_sample_rate,
        "original_channels": h.original_channels,
        "chunks": chunks,
        "speech_chunks": speech_chunks,
        "frames": frames,
        "model_samples": t.model_samples,
        "original_samples": t.original_samples,
        "duration_s": duration,
        "header_bytes": header_bytes,
        "payload_bytes": payload_bytes,
        "file_bytes": file_bytes,
        "bitrate_kbps": kbps(file_bytes),
        "payload_kbps": kbps(payload_bytes),
    }
