"""10-bit packing: exact bytes from the spec in docs/FORMAT.md, sizes, and round-trips."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from neucomp.coding.packing import pack_codes, packed_size, unpack_codes


def reference_pack(codes: np.ndarray) -> bytes:
    """The spec written out bit by bit (slow, obviously right): frame-major, LSB-first."""
    num_codebooks, num_frames = codes.shape
    stream = []
    for f in range(num_frames):
        for k in range(num_codebooks):
            value = int(codes[k, f])
            stream.extend((value >> b) & 1 for b in range(10))
    out = bytearray((len(stream) + 7) // 8)
    for i, bit in enumerate(stream):
        out[i // 8] |= bit << (i % 8)
    return bytes(out)


def test_known_vector_one_frame_two_codebooks():
    # bits 0-9 hold 1, bits 10-19 hold 1023: 0000000001 / 1111111111 LSB-first.
    assert pack_codes(np.array([[1], [1023]])) == bytes([0x01, 0xFC, 0x0F])


def test_known_vector_is_frame_major():
    # K=2, F=2: order is (k0,f0)=5, (k1,f0)=0, (k0,f1)=0, (k1,f1)=1 → 5 at bit 0, 1 at bit 30.
    codes = np.array([[5, 0], [0, 1]])
    expected = (5 | (1 << 30)).to_bytes(5, "little")
    assert pack_codes(codes) == expected
    assert unpack_codes(expected, 2, 2).tolist() == codes.tolist()


@pytest.mark.parametrize(
    ("frames", "codebooks", "size"),
    [(0, 8, 0), (1, 1, 2), (1, 2, 3), (1, 4, 5), (3, 1, 4), (750, 8, 7500), (750, 1, 938)],
)
def test_packed_size_is_exact(frames, codebooks, size):
    assert packed_size(frames, codebooks) == size
    codes = np.full((codebooks, frames), 1023)
    assert len(pack_codes(codes)) == size


def test_packed_size_other_bit_widths():
    assert packed_size(3, 2, bits=8) == 6
    assert packed_size(1, 1, bits=1) == 1


def test_padding_bits_are_zero():
    data = pack_codes(np.array([[1023]]))  # 10 bits in 2 bytes: 6 padding bits
    assert data == bytes([0xFF, 0x03])


def test_output_matches_reference_on_random_codes():
    rng = np.random.default_rng(1)
    for num_codebooks, num_frames in [(1, 7), (3, 5), (8, 13), (32, 3)]:
        codes = rng.integers(0, 1024, size=(num_codebooks, num_frames))
        assert pack_codes(codes) == reference_pack(codes)


@settings(max_examples=150, deadline=None)
@given(
    num_codebooks=st.integers(1, 32),
    num_frames=st.integers(0, 300),
    seed=st.integers(0, 2**32 - 1),
)
def test_pack_unpack_round_trip(num_codebooks, num_frames, seed):
    rng = np.random.default_rng(seed)
    codes = rng.integers(0, 1024, size=(num_codebooks, num_frames))
    data = pack_codes(codes)
    assert len(data) == packed_size(num_frames, num_codebooks)
    back = unpack_codes(data, num_codebooks, num_frames)
    assert back.dtype == np.int64
    assert back.shape == (num_codebooks, num_frames)
    np.testing.assert_array_equal(back, codes)


def test_accepts_any_integer_dtype_and_non_contiguous_input():
    codes = np.arange(40, dtype=np.int16).reshape(8, 5)
    assert pack_codes(codes.T.T) == pack_codes(codes.astype(np.int64))
    view = np.arange(80).reshape(8, 10)[:, ::2]
    np.testing.assert_array_equal(unpack_codes(pack_codes(view), 8, 5), view)


@pytest.mark.parametrize(
    "bad",
    [np.array([[1024]]), np.array([[-1]]), np.array([1, 2, 3]), np.array([[0.5]])],
)
def test_pack_rejects_bad_codes(bad):
    with pytest.raises(ValueError):
        pack_codes(bad)


def test_unpack_rejects_wrong_length():
    with pytest.raises(ValueError, match="expected 3"):
        unpack_codes(b"\x00\x00", 2, 1)
    with pytest.raises(ValueError):
        unpack_codes(b"\x00\x00\x00\x00", 2, 1)
