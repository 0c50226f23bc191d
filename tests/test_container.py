"""The .ecdc container: exact bytes per docs/FORMAT.md, round-trips, and damaged input."""

from __future__ import annotations

import binascii
import dataclasses
import hashlib
import io
import random
import struct
import zlib

import numpy as np
import pytest
from conftest import chunk_spans
from hypothesis import given, settings
from hypothesis import strategies as st

from neucomp.coding.packing import pack_codes, packed_size, unpack_codes
from neucomp.container import (
    MAX_CHANNELS,
    MAX_CHUNK_FRAMES,
    MAX_SAMPLE_RATE,
    MIN_SAMPLE_RATE,
    Chunk,
    Coder,
    EcdcReader,
    EcdcWriter,
    Header,
    Trailer,
    chunk_overhead,
    read_header,
    summarize,
    varint,
)
from neucomp.errors import CorruptDataError, FormatError, TruncatedError

MODEL_HASH = hashlib.sha256(b"codec weights").digest()
LM_HASH = hashlib.sha256(b"lm weights").digest()


def make_header(**changes) -> Header:
    fields = dict(
        model_name="neucomp_24khz",
        model_hash=MODEL_HASH,
        coder=Coder.PLAIN,
        lm_hash=bytes(32),
        model_sample_rate=24000,
        model_channels=1,
        hop_length=320,
        num_codebooks=2,
        original_sample_rate=44100,
        original_channels=2,
    )
    fields.update(changes)
    return Header(**fields)


def write_file(header: Header, chunks: list[tuple], trailer: Trailer) -> bytes:
    """Chunks as (num_frames, payload[, gain_db[, speech]])."""
    out = io.BytesIO()
    writer = EcdcWriter(out, header)
    for chunk in chunks:
        writer.write_chunk(*chunk)
    writer.finish(trailer)
    assert writer.bytes_written == len(out.getvalue())
    return out.getvalue()


def read_all(data: bytes, salvage: bool = False) -> tuple[EcdcReader, list[Chunk]]:
    reader = EcdcReader(io.BytesIO(data))
    chunks = list(reader.iter_chunks(salvage=salvage))
    return reader, chunks


def small_file() -> tuple[bytes, list[bytes]]:
    """Three plain chunks (3, 2 and 1 frames of 2 codebooks) and the end record."""
    rng = np.random.default_rng(7)
    payloads = [pack_codes(rng.integers(0, 1024, size=(2, f))) for f in (3, 2, 1)]
    data = write_file(
        make_header(),
        [(3, payloads[0]), (2, payloads[1]), (1, payloads[2])],
        Trailer(model_samples=1900, original_samples=3491),
    )
    return data, payloads


class PipeReader:
    """Only `read()`, and short reads (at most 5 bytes a call), like a slow pipe."""

    def __init__(self, data: bytes) -> None:
        self._buf = io.BytesIO(data)
        self.largest_request = 0

    def read(self, size: int = -1) -> bytes:
        self.largest_request = max(self.largest_request, size)
        return self._buf.read(min(size, 5))


def leb128(value: int) -> bytes:
    """docs/FORMAT.md's numbers, written out here independently of the writer."""
    out = []
    while value >= 0x80:
        out.append(value & 0x7F | 0x80)
        value >>= 7
    return bytes([*out, value])


def v3_check(head: bytes, payload: bytes, prev: int) -> bytes:
    """A version 3 chunk's stored check, per docs/FORMAT.md."""
    if len(payload) < 256:
        return struct.pack("<H", binascii.crc_hqx(head + payload, prev & 0xFFFF))
    return struct.pack("<I", zlib.crc32(head + payload, prev))


# --- exact bytes ------------------------------------------------------------------------


def test_writer_bytes_match_the_spec_built_by_hand():
    header = make_header(coder=Coder.LM, lm_hash=LM_HASH, num_codebooks=8, model_channels=2)
    payload = b"\x01\x02\x03\x04\x05\x06\x07\x08"  # LM payloads are whole 32-bit words
    big = bytes(range(256)) * 2  # 512 bytes: a CRC-32 chunk
    chunks = [(750, payload), (20, big, -5, True)]
    data = write_file(header, chunks, Trailer(246_000, 452_025))

    name = b"neucomp_24khz"
    expected = b"NCDC" + bytes([4, 1]) + struct.pack("<H", 93 + len(name))
    expected += struct.pack("<IHBBHIH", 24000, 320, 2, 8, 1024, 44100, 2)
    expected += MODEL_HASH + LM_HASH + bytes([len(name)]) + name
    assert len(expected) == 89 + len(name)
    header_crc = zlib.crc32(expected)
    expected += struct.pack("<I", header_crc)
    # LEB128 frames and size, the level byte, then a check chained on the last one:
    # CRC-16 (binascii.crc_hqx: XMODEM) for a payload under 256 bytes, else CRC-32.
    head0 = bytes([0xEE, 0x05]) + bytes([8]) + bytes([0])  # 750 = 0x2EE; size 8; gain 0
    check0 = binascii.crc_hqx(head0 + payload, header_crc & 0xFFFF)
    expected += head0 + struct.pack("<H", check0) + payload
    # 512 = 4 << 7; gain -5 as 7 bits is 0x7B, and the speech flag is the top bit
    head1 = bytes([20]) + bytes([0x80, 0x04]) + bytes([0xFB])
    check1 = zlib.crc32(head1 + big, check0)
    expected += head1 + struct.pack("<I", check1) + big
    end = struct.pack("<IQQ", 0, 246_000, 452_025)
    expected += end + struct.pack("<I", zlib.crc32(end, check1))
    assert data == expected
    assert len(data) == (93 + 13) + (4 + 2 + 8) + (4 + 4 + 512) + 24
    assert [leb128(v) for v in (1, 127, 128, 750, 16_777_216)] == [
        varint(v) for v in (1, 127, 128, 750, 16_777_216)
    ]
    assert chunk_overhead(750, 8) == 6 and chunk_overhead(20, 512) == 8


def version2_file(header: Header, chunks: list[tuple[int, bytes, int]], trailer: Trailer) -> bytes:
    """A version-2 stream built by hand from docs/FORMAT.md (13-byte heads with gains,
    chained CRC-32s), as neucomp wrote until version 3."""
    raw = bytearray(dataclasses.replace(header, version=2).to_bytes())
    chain = zlib.crc32(bytes(raw[:-4]))
    for num_frames, payload, gain in chunks:
        head = struct.pack("<IIb", num_frames, len(payload), gain)
        chain = zlib.crc32(head + payload, chain)
        raw += head + struct.pack("<I", chain) + payload
    end = struct.pack("<IQQ", 0, trailer.model_samples, trailer.original_samples)
    return bytes(raw + end + struct.pack("<I", zlib.crc32(end, chain)))


def version3_file(header: Header, chunks: list[tuple[int, bytes, int]], trailer: Trailer) -> bytes:
    """A version-3 stream built by hand from docs/FORMAT.md (LEB128 heads whose gain byte
    is an i8 with no speech flag), as neucomp wrote until version 4."""
    raw = bytearray(dataclasses.replace(header, version=3).to_bytes())
    chain = zlib.crc32(bytes(raw[:-4]))
    for num_frames, payload, gain in chunks:
        head = leb128(num_frames) + leb128(len(payload)) + struct.pack("<b", gain)
        check = v3_check(head, payload, chain)
        chain = int.from_bytes(check, "little")
        raw += head + check + payload
    end = struct.pack("<IQQ", 0, trailer.model_samples, trailer.original_samples)
    return bytes(raw + end + struct.pack("<I", zlib.crc32(end, chain)))


def test_version_3_files_still_read_with_their_gains_and_no_speech_flags():
    """A version 3 gain byte is a whole i8: -7 is 0xF9, whose top bit is no flag."""
    rng = np.random.default_rng(6)
    payloads = [pack_codes(rng.integers(0, 1024, size=(2, f))) for f in (3, 2)]
    chunks = [(3, payloads[0], -7), (2, payloads[1], 12)]
    data = version3_file(make_header(), chunks, Trailer(1500, 2756))
    reader, read = read_all(data)
    assert reader.header.version == 3 and reader.trailer == Trailer(1500, 2756)
    assert [(c.num_frames, c.payload, c.gain_db, c.speech) for c in read] == [
        (*c, False) for c in chunks
    ]
    assert summarize(io.BytesIO(data))["speech_chunks"] == 0


def test_version_4_level_byte_carries_gain_and_speech_flag():
    chunks = [
        (3, pack_codes(np.zeros((2, 3), np.int64)), g, sp)
        for g, sp in [(-60, True), (-1, False), (0, True), (17, False), (60, True)]
    ]
    data = write_file(make_header(), chunks, Trailer(4800, 8820))
    _, read = read_all(data)
    assert [(c.gain_db, c.speech) for c in read] == [(g, sp) for _, _, g, sp in chunks]
    assert summarize(io.BytesIO(data))["speech_chunks"] == 3
    # a 7-bit gain outside -60 … 60 under a valid check is damage, not a level
    raw = make_header().to_bytes()
    payload = chunks[0][1]
    for level in (0x3D, 0xC3):  # 61 dB, and -61 dB with the speech flag
        head = b"\x03" + leb128(len(payload)) + bytes([level])
        forged = raw + head + v3_check(head, payload, zlib.crc32(raw[:-4])) + payload
        with pytest.raises(CorruptDataError, match=r"^chunk 0 at byte 106 declares a gain of"):
            read_all(forged + bytes(24))


def test_version_2_files_still_read():
    rng = np.random.default_rng(5)
    payloads = [pack_codes(rng.integers(0, 1024, size=(2, f))) for f in (3, 2)]
    chunks = [(3, payloads[0], -7), (2, payloads[1], 12)]
    data = version2_file(make_header(), chunks, Trailer(1500, 2756))
    reader, read = read_all(data)
    assert reader.header.version == 2 and reader.trailer == Trailer(1500, 2756)
    assert [(c.num_frames, c.payload, c.gain_db) for c in read] == chunks
    assert EcdcReader(io.BytesIO(data)).peek_trailer() == Trailer(1500, 2756)
    c1 = 106 + 13 + len(payloads[0])
    swapped = data[:106] + data[c1 : c1 + 13 + 5] + data[106:c1] + data[c1 + 18 :]
    with pytest.raises(CorruptDataError, match="chunk 0 .*not in its place"):
        read_all(swapped)
    damaged = bytearray(data)
    damaged[c1 + 13] ^= 1
    reader, read = read_all(bytes(damaged), salvage=True)
    assert [c.payload for c in read] == [payloads[0], None]


def version1_file(header: Header, chunks: list[tuple[int, bytes]], trailer: Trailer) -> bytes:
    """A version-1 stream built by hand from docs/FORMAT.md (no gains, unchained CRCs)."""
    raw = bytearray(dataclasses.replace(header, version=1).to_bytes())
    for num_frames, payload in chunks:
        head = struct.pack("<II", num_frames, len(payload))
        raw += head + struct.pack("<I", zlib.crc32(head + payload)) + payload
    end = struct.pack("<IQQ", 0, trailer.model_samples, trailer.original_samples)
    return bytes(raw + end + struct.pack("<I", zlib.crc32(end)))


def test_version_1_files_still_read():
    rng = np.random.default_rng(3)
    payloads = [pack_codes(rng.integers(0, 1024, size=(2, f))) for f in (3, 2)]
    data = version1_file(make_header(), [(3, payloads[0]), (2, payloads[1])], Trailer(1500, 2756))
    reader, chunks = read_all(data)
    assert reader.header.version == 1 and reader.trailer == Trailer(1500, 2756)
    assert [(c.num_frames, c.payload, c.gain_db) for c in chunks] == [
        (3, payloads[0], 0),
        (2, payloads[1], 0),
    ]
    assert summarize(io.BytesIO(data))["format_version"] == 1


def test_chunks_are_bound_to_their_place():
    """From version 2: a swapped chunk, or one spliced in from another file with the same
    header, fails its check (unlike version 1, where both passed)."""
    data, payloads = small_file()
    (c0, _, _, e0), (c1, _, _, e1), _ = chunk_spans(data)
    size = [e0 - c0, e1 - c1]
    assert size == [5 + len(payloads[0]), 5 + len(payloads[1])]  # 1+1+1 head, 2 check
    swapped = data[:c0] + data[c1 : c1 + size[1]] + data[c0:c1] + data[c1 + size[1] :]
    with pytest.raises(CorruptDataError, match="chunk 0 .*not in its place"):
        read_all(swapped)
    rng = np.random.default_rng(99)
    other_payloads = [pack_codes(rng.integers(0, 1024, size=(2, f))) for f in (3, 2, 1)]
    other = write_file(
        make_header(), list(zip((3, 2, 1), other_payloads, strict=True)), Trailer(1900, 3491)
    )
    spliced = data[:c1] + other[c1 : c1 + size[1]] + data[c1 + size[1] :]
    with pytest.raises(CorruptDataError, match="chunk 1"):
        read_all(spliced)
    # The same splice in version 1 goes unnoticed: why version 2 chained the checks.
    trailer = Trailer(1900, 3491)
    v1 = version1_file(make_header(), list(zip((3, 2, 1), payloads, strict=True)), trailer)
    v1_other = version1_file(
        make_header(), list(zip((3, 2, 1), other_payloads, strict=True)), trailer
    )
    a, b = 106 + 12 + len(payloads[0]), 12 + len(payloads[1])
    read_all(v1[:a] + v1_other[a : a + b] + v1[a + b :])


def test_chunk_gains_round_trip_and_are_range_checked():
    out = io.BytesIO()
    writer = EcdcWriter(out, make_header())
    payload = pack_codes(np.zeros((2, 3), np.int64))
    for gain in (-60, 0, 17, 60):
        writer.write_chunk(3, payload, gain)
    writer.finish(Trailer(3600, 6615))
    _, chunks = read_all(out.getvalue())
    assert [c.gain_db for c in chunks] == [-60, 0, 17, 60]
    with pytest.raises(ValueError, match="gain"):
        EcdcWriter(io.BytesIO(), make_header()).write_chunk(3, payload, 61)


def test_plain_file_size_is_payload_plus_documented_overhead():
    header = make_header(num_codebooks=8)
    codes = np.zeros((8, 750), dtype=np.int64)
    data = write_file(header, [(750, pack_codes(codes))] * 2, Trailer(480_000, 882_000))
    # a 750-frame chunk of 7500 bytes: 2 + 2 bytes of LEB128, the gain, a CRC-32
    assert len(data) == 2 * 7500 + (93 + 13) + 2 * 9 + 24


def test_read_header_consumes_exactly_the_header():
    data, _ = small_file()
    fp = io.BytesIO(data)
    assert read_header(fp) == make_header()
    assert fp.tell() == 93 + len("neucomp_24khz")


# --- round-trips ------------------------------------------------------------------------


def test_round_trip_plain_codes():
    data, payloads = small_file()
    reader, chunks = read_all(data)
    assert reader.header == make_header()
    assert [(c.index, c.num_frames) for c in chunks] == [(0, 3), (1, 2), (2, 1)]
    assert [c.payload for c in chunks] == payloads
    assert unpack_codes(chunks[0].payload, 2, 3).shape == (2, 3)
    assert reader.trailer == Trailer(1900, 3491)
    assert reader.warnings == []


def test_file_without_chunks():
    data = write_file(make_header(), [], Trailer(0, 0))
    reader, chunks = read_all(data)
    assert chunks == []
    assert reader.trailer == Trailer(0, 0)


names = st.text(
    alphabet="abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789_.-",
    min_size=1,
    max_size=64,
)


@st.composite
def headers(draw) -> Header:
    coder = draw(st.sampled_from(list(Coder)))
    lm_hash = bytes(32) if coder == Coder.PLAIN else draw(st.binary(min_size=32, max_size=32))
    if coder != Coder.PLAIN and lm_hash == bytes(32):
        lm_hash = LM_HASH
    return Header(
        model_name=draw(names),
        model_hash=draw(st.binary(min_size=32, max_size=32)),
        coder=coder,
        lm_hash=lm_hash,
        model_sample_rate=draw(st.integers(MIN_SAMPLE_RATE, MAX_SAMPLE_RATE)),
        model_channels=draw(st.integers(1, 255)),
        hop_length=draw(st.integers(1, 2**16 - 1)),
        num_codebooks=draw(st.integers(1, 32)),
        original_sample_rate=draw(st.integers(MIN_SAMPLE_RATE, MAX_SAMPLE_RATE)),
        original_channels=draw(st.integers(1, MAX_CHANNELS)),
        codebook_size=draw(st.integers(2, 1024)),
    )


@settings(max_examples=100, deadline=None)
@given(header=headers(), data=st.data())
def test_random_files_round_trip(header, data):
    frame_counts = data.draw(st.lists(st.integers(1, 40), max_size=5))
    chunks = []
    for num_frames in frame_counts:
        if header.coder == Coder.PLAIN:
            size = packed_size(num_frames, header.num_codebooks)
            payload = data.draw(st.binary(min_size=size, max_size=size))
        else:
            words = data.draw(st.integers(1, num_frames * header.num_codebooks + 2))
            payload = data.draw(st.binary(min_size=4 * words, max_size=4 * words))
        chunks.append((num_frames, payload))
    capacity = sum(frame_counts) * header.hop_length
    model_samples = data.draw(st.integers(0, capacity))
    # original_samples: model_samples at the original rate, give or take what resampling
    # moves a length by (the reader's tolerance, docs/FORMAT.md)
    rate, model_rate = header.original_sample_rate, header.model_sample_rate
    low = max(0, -(-(model_samples * rate - rate - model_rate) // model_rate))
    high = (model_samples * rate + rate + model_rate) // model_rate
    trailer = Trailer(model_samples, data.draw(st.integers(low, high)))
    raw = write_file(header, chunks, trailer)

    reader = EcdcReader(PipeReader(raw))
    assert reader.header == header
    got = [(c.num_frames, c.payload) for c in reader.iter_chunks()]
    assert got == chunks
    assert reader.trailer == trailer


def test_reads_from_a_stream_with_only_read_and_short_reads():
    data, payloads = small_file()
    pipe = PipeReader(data)
    assert not hasattr(pipe, "seek")
    reader = EcdcReader(pipe)
    assert [c.payload for c in reader.iter_chunks()] == payloads
    assert reader.trailer.model_samples == 1900


def test_summarize_reports_totals_and_bitrate():
    header = make_header(num_codebooks=8, original_sample_rate=24000, original_channels=1)
    codes = np.zeros((8, 750), dtype=np.int64)
    data = write_file(header, [(750, pack_codes(codes))], Trailer(240_000, 240_000))
    info = summarize(io.BytesIO(data))
    assert info["chunks"] == 1
    assert info["frames"] == 750
    assert info["frame_rate"] == 75.0
    assert info["duration_s"] == 10.0
    assert info["payload_kbps"] == 6.0
    assert info["file_bytes"] == len(data) == 7500 + 106 + 9 + 24
    assert info["bitrate_kbps"] == round(len(data) * 8 / 10 / 1000, 3)
    assert info["coder"] == "plain" and info["lm_hash"] is None
    assert info["model_hash"] == MODEL_HASH.hex()


# --- validation of what a program writes --------------------------------------------------


@pytest.mark.parametrize(
    "changes",
    [
        dict(model_name=""),
        dict(model_name="x" * 65),
        dict(model_name="has space"),
        dict(model_name="ünïcode"),
        dict(model_hash=b"short"),
        dict(model_hash="00" * 32),
        dict(lm_hash=LM_HASH),  # plain coder needs a zero LM hash
        dict(coder=Coder.LM),  # LM coder needs a real LM hash
        dict(coder=Coder.FAST),  # fast coder needs a real table hash
        dict(coder=7),
        dict(num_codebooks=0),
        dict(num_codebooks=33),
        dict(model_sample_rate=0),
        dict(hop_length=2**16),
        dict(model_channels=256),
        dict(original_channels=0),
        dict(codebook_size=1025),
        dict(hop_length=320.0),
        dict(hop_length=True),
    ],
)
def test_header_rejects_bad_values(changes):
    with pytest.raises(ValueError):
        make_header(**changes)


def test_header_accepts_numpy_integers_and_stores_ints():
    header = make_header(
        hop_length=np.int64(320), num_codebooks=np.uint8(4), coder=1, lm_hash=LM_HASH
    )
    assert type(header.hop_length) is int and header.hop_length == 320
    assert header.coder is Coder.LM


def test_writer_rejects_misuse():
    out = io.BytesIO()
    writer = EcdcWriter(out, make_header())
    with pytest.raises(ValueError):
        writer.write_chunk(0, b"")
    with pytest.raises(ValueError):
        writer.write_chunk(2, b"\x00" * 4)  # plain: 2 frames x 2 codebooks need 5 bytes
    writer.write_chunk(1, b"\x00" * 3)
    with pytest.raises(ValueError):
        writer.finish(Trailer(321, 0))  # more samples than one frame of 320 holds
    writer.finish(Trailer(320, 588))
    with pytest.raises(ValueError):
        writer.write_chunk(1, b"\x00" * 3)
    with pytest.raises(ValueError):
        writer.finish(Trailer(320, 588))


def test_trailer_is_unknown_before_the_chunks_are_read():
    data, _ = small_file()
    reader = EcdcReader(io.BytesIO(data))
    with pytest.raises(RuntimeError):
        _ = reader.trailer


# --- damaged and hostile input ----------------------------------------------------------


def test_bad_magic_and_version():
    data, _ = small_file()
    with pytest.raises(FormatError, match=r"^not a neucomp \.ecdc file \(bad magic\)$"):
        EcdcReader(io.BytesIO(b"RIFF" + data[4:]))
    with pytest.raises(
        FormatError, match=r"^unsupported \.ecdc version 5 \(this neucomp reads 1, 2, 3 and 4\)$"
    ):
        EcdcReader(io.BytesIO(data[:4] + b"\x05" + data[5:]))
    with pytest.raises(TruncatedError, match="empty input"):
        EcdcReader(io.BytesIO(b""))


def test_bad_header_value_under_a_valid_crc_is_a_format_error():
    data, _ = small_file()
    header = bytearray(data[:106])
    header[15] = 40  # num_codebooks
    header[-4:] = struct.pack("<I", zlib.crc32(bytes(header[:-4])))
    with pytest.raises(FormatError, match="number of codebooks must be in"):
        EcdcReader(io.BytesIO(bytes(header) + data[106:]))


def test_every_truncation_is_a_format_error():
    data, _ = small_file()
    for length in range(len(data)):
        with pytest.raises(FormatError) as info:
            read_all(data[:length])
        message = str(info.value)
        assert "\n" not in message and "b'" not in message, message
        if length >= 106:  # past the header, every cut is a truncation
            assert isinstance(info.value, TruncatedError), (length, message)


def test_truncation_messages_name_the_place():
    data, _ = small_file()
    with pytest.raises(TruncatedError, match="ended inside the header"):
        read_all(data[:50])
    # header 106, chunk 0 is 5+8 bytes, chunk 1 is 5+5: cut 3 bytes into chunk 1
    for cut in range(1, 10):
        with pytest.raises(TruncatedError, match="^truncated .ecdc file: ended inside chunk 1$"):
            read_all(data[: 106 + 13 + cut])
    with pytest.raises(TruncatedError, match="no end record after chunk 2"):
        read_all(data[:-24])
    with pytest.raises(TruncatedError, match="ended inside the end record"):
        read_all(data[:-1])


def test_trailing_garbage_is_rejected():
    data, _ = small_file()
    for extra in (b"\x00", b"garbage", data):
        with pytest.raises(FormatError, match="^unexpected data after end of stream$"):
            read_all(data + extra)


def test_damaged_payload_names_chunk_and_offset():
    data, payloads = small_file()
    damaged = bytearray(data)
    chunk1 = chunk_spans(data)[1][0]
    damaged[chunk1 + 5] ^= 0x40  # its payload's first byte
    with pytest.raises(
        CorruptDataError,
        match=f"^checksum mismatch in chunk 1 at byte {chunk1} .*: the file is damaged$",
    ):
        read_all(bytes(damaged))

    reader, chunks = read_all(bytes(damaged), salvage=True)
    assert [c.payload for c in chunks] == [payloads[0], None, payloads[2]]
    assert [c.num_frames for c in chunks] == [3, 2, 1]
    assert reader.trailer == Trailer(1900, 3491)
    assert len(reader.warnings) == 1 and "chunk 1" in reader.warnings[0]


def test_damaged_end_record_is_estimated_in_salvage_mode():
    data, payloads = small_file()
    damaged = bytearray(data)
    damaged[-10] ^= 0x01
    with pytest.raises(CorruptDataError, match="end record"):
        read_all(bytes(damaged))
    reader, chunks = read_all(bytes(damaged), salvage=True)
    assert [c.payload for c in chunks] == payloads
    assert reader.trailer == Trailer(6 * 320, round(6 * 320 * 44100 / 24000))
    assert len(reader.warnings) == 1


def test_random_byte_flips_never_pass_silently():
    data, payloads = small_file()
    rng = random.Random(1234)
    for _ in range(300):
        damaged = bytearray(data)
        position = rng.randrange(len(data))
        damaged[position] ^= rng.randrange(1, 256)
        damaged = bytes(damaged)
        with pytest.raises(FormatError):
            read_all(damaged)
        try:
            reader, chunks = read_all(damaged, salvage=True)
        except FormatError:
            continue  # header or framing damage: salvage cannot go on, and says so
        assert reader.warnings, f"flip at byte {position} passed silently"
        intact = [c for c in chunks if c.payload is not None]
        # A flip in a chunk's stored check also fails the next chunk, whose check starts
        # from it (the price of binding chunks to their place); elsewhere one chunk.
        checks = [check_at for _, check_at, _, _ in chunk_spans(data)[:2]]
        lost = 2 if any(f <= position < f + 2 for f in checks) else 1
        assert len(chunks) == 3 and len(intact) >= 3 - lost
        for chunk in intact:
            assert chunk.payload == payloads[chunk.index]


@pytest.mark.parametrize(
    ("head", "message"),
    [
        (b"\x83\x00\x08\x00", "written in more bytes than it needs"),  # 3 frames as 2 bytes
        (b"\x03\x88\x00\x00", "written in more bytes than it needs"),
        (b"\xff\xff\xff\xff\xff\x01\x08\x00", "a number of over 5 bytes"),
        (b"\x03\x09\x00", "declares a payload of 9 bytes, but 3 frames"),
    ],
)
def test_version_3_heads_are_canonical(head, message):
    """One way only to write a head: a longer LEB128 number than needed is damage."""
    raw = make_header().to_bytes()
    payload = bytes(9)
    forged = raw + head + v3_check(head, payload, zlib.crc32(raw[:-4])) + payload + bytes(24)
    with pytest.raises(CorruptDataError, match=f"^chunk 0 at byte 106 .*{message}"):
        read_all(forged)


def forge_chunk(header: Header, num_frames: int, payload_size: int) -> bytes:
    """A header plus one chunk head that declares these sizes, and a check over it."""
    head = leb128(num_frames) + leb128(payload_size) + b"\x00"
    raw = header.to_bytes()
    return raw + head + v3_check(head, b"\x00" * min(payload_size, 256), zlib.crc32(raw[:-4]))


@pytest.mark.parametrize(
    ("coder", "num_frames", "payload_size"),
    [
        (Coder.PLAIN, 2**31, packed_size(2**31, 2)),
        (Coder.PLAIN, 2**32 - 1, 5),
        (Coder.PLAIN, 10, 2**31),
        (Coder.LM, 10, 2**31),
        (Coder.LM, 2**31, 100),
        (Coder.PLAIN, 10, packed_size(10, 2) + 1),  # plain size must be exact
        (Coder.LM, 10, 6),  # the range coder writes whole 32-bit words
        (Coder.LM, 10, 4 * 10 * 2 + 12),  # more than ~32 bits per code
        (Coder.FAST, 10, 2**31),
        (Coder.FAST, 2**31, 100),
        (Coder.FAST, 10, 6),  # whole 32-bit words here too
        (Coder.FAST, 10, 0),  # a chunk with frames has at least the flush word
        (Coder.FAST, 10, 4 * 10 * 2 + 12),  # more than ~32 bits per code
    ],
)
def test_hostile_sizes_are_rejected_before_reading_the_payload(coder, num_frames, payload_size):
    header = make_header(coder=coder, lm_hash=bytes(32) if coder == Coder.PLAIN else LM_HASH)
    forged = forge_chunk(header, num_frames, payload_size % 2**32) + bytes(64)
    for salvage in (False, True):
        pipe = PipeReader(forged)
        reader = EcdcReader(pipe)
        with pytest.raises(CorruptDataError, match="^chunk 0 at byte 106 declares .* damaged$"):
            list(reader.iter_chunks(salvage=salvage))
        # Nothing bigger than the largest header (157 bytes) was ever asked for.
        assert pipe.largest_request <= 157


def test_model_samples_beyond_the_frames_are_rejected():
    header = make_header()
    body = struct.pack("<IQQ", 0, 1, 0)  # one sample, but no frames at all
    raw = header.to_bytes()
    data = raw + body + struct.pack("<I", zlib.crc32(body, zlib.crc32(raw[:-4])))
    with pytest.raises(CorruptDataError, match="claims 1 samples"):
        read_all(data)


# --- hostile fields under valid CRCs ------------------------------------------------------

# Header fields as (byte offset, struct format) per docs/FORMAT.md.
HEADER_FIELDS = {
    "model_sample_rate": (8, "<I"),
    "hop_length": (12, "<H"),
    "model_channels": (14, "B"),
    "num_codebooks": (15, "B"),
    "codebook_size": (16, "<H"),
    "original_sample_rate": (18, "<I"),
    "original_channels": (22, "<H"),
    "coder": (5, "B"),
}
HOSTILE_HEADER_VALUES = {
    "model_sample_rate": [0, 999, 384_001, 2**31, 2**32 - 1],
    "hop_length": [0],
    "model_channels": [0],
    "num_codebooks": [0, 33, 255],
    "codebook_size": [0, 1, 1025, 2**16 - 1],
    "original_sample_rate": [0, 1, 999, 384_001, 2**31, 2**32 - 1],
    "original_channels": [0, 65, 1024, 2**16 - 1],
    "coder": [2, 3, 255],  # 2 (fast) here with the plain header's zero hash
}


def forge_header(field: str, value: int) -> bytes:
    """A valid plain-coder header with one field replaced, and its CRC recomputed."""
    raw = bytearray(make_header().to_bytes())
    offset, fmt = HEADER_FIELDS[field]
    struct.pack_into(fmt, raw, offset, value)
    raw[-4:] = struct.pack("<I", zlib.crc32(bytes(raw[:-4])))
    return bytes(raw)


@pytest.mark.parametrize(
    ("field", "value"), [(f, v) for f, vs in HOSTILE_HEADER_VALUES.items() for v in vs]
)
def test_every_hostile_header_field_is_a_one_line_format_error(field, value):
    data, _ = small_file()
    forged = forge_header(field, value) + data[106:]
    with pytest.raises(FormatError, match="^bad .ecdc header: ") as info:
        read_all(forged)
    assert "\n" not in str(info.value)


def test_header_limits_match_the_documented_range():
    for rate in (MIN_SAMPLE_RATE, MAX_SAMPLE_RATE):
        make_header(original_sample_rate=rate, model_sample_rate=rate)
    make_header(original_channels=MAX_CHANNELS)


def forge_end(model_samples: int, original_samples: int) -> bytes:
    """small_file()'s header and chunks (6 frames) with a forged, CRC-valid end record."""
    data, _ = small_file()
    body = struct.pack("<IQQ", 0, model_samples, original_samples)
    last_check = struct.unpack("<H", data[-24 - 3 - 2 : -24 - 3])[0]  # its payload: 3 B
    return data[:-24] + body + struct.pack("<I", zlib.crc32(body, last_check))


@pytest.mark.parametrize(
    ("model_samples", "original_samples", "message"),
    [
        (1900, 2**32, "claims 4294967296 samples at 44100 Hz"),
        (1900, 2**40, "claims 1099511627776 samples at 44100 Hz"),
        (1900, 2**64 - 1, "claims 18446744073709551615 samples"),
        (1900, 0, "claims 0 samples at 44100 Hz, which does not match its 1900"),
        (0, 3491, "claims 3491 samples at 44100 Hz, which does not match its 0"),
        (6 * 320 + 1, 3529, "claims 1921 samples, more than the 6 frames hold"),
        (2**64 - 1, 2**64 - 1, "more than the 6 frames hold"),
    ],
)
def test_every_hostile_end_record_is_rejected(model_samples, original_samples, message):
    with pytest.raises(CorruptDataError, match=message):
        read_all(forge_end(model_samples, original_samples))
    reader, _ = read_all(forge_end(model_samples, original_samples), salvage=True)
    assert reader.trailer == Trailer(6 * 320, round(6 * 320 * 44100 / 24000))  # estimated


def test_lm_chunks_have_a_frame_bound_and_a_non_empty_payload():
    header = make_header(coder=Coder.LM, lm_hash=LM_HASH)
    for num_frames, payload_size in ((MAX_CHUNK_FRAMES + 1, 8), (2**16, 0), (10, 0)):
        forged = forge_chunk(header, num_frames, payload_size) + bytes(64)
        with pytest.raises(CorruptDataError, match="^chunk 0 at byte 106 declares"):
            read_all(forged)
    with pytest.raises(ValueError, match="LM payload of 0 bytes"):
        write_file(header, [(10, b"")], Trailer(0, 0))
