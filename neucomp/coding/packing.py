"""Plain 10-bit packing of code frames: the payload of a coder-0 `.ecdc` chunk.

Codes arrive as `[K, F]` (K codebooks, F frames, the layout the model uses) and are
written frame-major: frame 0's K codes (codebook 0 first), then frame 1, and so on.
Each code takes 10 bits, packed LSB-first into a little-endian bit stream; the last
byte is zero-padded. See docs/FORMAT.md.

Both directions are vectorised: four 10-bit codes fill exactly five bytes, so the
stream is handled as rows of 40-bit little-endian words (no per-code Python loop).
"""

from __future__ import annotations

import numpy as np

from neucomp.coding.base import BITS, CoderId, packed_size

__all__ = ["BITS", "PlainCoder", "pack_codes", "packed_size", "unpack_codes"]
_MASK = (1 << BITS) - 1
# Four codes of 10 bits are exactly 40 bits = 5 bytes: the unit we pack and unpack.
_GROUP_CODES = 4
_GROUP_BYTES = _GROUP_CODES * BITS // 8


def pack_codes(codes: np.ndarray) -> bytes:
    """Pack integer codes of shape `[K, F]` (values in [0, 1024)) into bytes, frame-major."""
    codes = np.asarray(codes)
    if codes.ndim != 2:
        raise ValueError(f"codes must have shape [K, F], got {codes.ndim} dimensions")
    if codes.size and not np.issubdtype(codes.dtype, np.integer):
        raise ValueError(f"codes must be integers, got dtype {codes.dtype}")
    num_codebooks, num_frames = codes.shape
    if codes.size and (codes.min() < 0 or codes.max() > _MASK):
        raise ValueError(f"codes must lie in [0, {_MASK + 1}) to fit {BITS} bits")

    # Frame-major order: transpose to [F, K] and flatten row by row.
    flat = np.ascontiguousarray(codes.T, dtype=np.uint64).reshape(-1)
    pad = -flat.size % _GROUP_CODES
    if pad:
        flat = np.concatenate([flat, np.zeros(pad, dtype=np.uint64)])
    groups = flat.reshape(-1, _GROUP_CODES)
    words = np.zeros(groups.shape[0], dtype=np.uint64)
    for j in range(_GROUP_CODES):  # 4 column operations, not a loop over codes
        words |= groups[:, j] << np.uint64(j * BITS)
    # Little-endian 64-bit words; the low 5 bytes of each hold the 40 packed bits.
    raw = words.astype("<u8").view(np.uint8).reshape(-1, 8)[:, :_GROUP_BYTES]
    return raw.tobytes()[: packed_size(num_frames, num_codebooks)]


def unpack_codes(data: bytes, num_codebooks: int, num_frames: int) -> np.ndarray:
    """Inverse of `pack_codes`: bytes → int64 codes of shape `[K, F]`.

    `data` must be exactly `packed_size(num_frames, num_codebooks)` bytes long.
    """
    if num_codebooks < 1 or num_frames < 0:
        raise ValueError("unpack_codes needs num_codebooks >= 1 and num_frames >= 0")
    expected = packed_size(num_frames, num_codebooks)
    if len(data) != expected:
        raise ValueError(
            f"packed data holds {len(data)} bytes, expected {expected} for "
            f"{num_frames} frames of {num_codebooks} codebooks"
        )
    count = num_frames * num_codebooks
    raw = np.frombuffer(data, dtype=np.uint8)
    pad = -raw.size % _GROUP_BYTES
    if pad:
        raw = np.concatenate([raw, np.zeros(pad, dtype=np.uint8)])
    rows = np.zeros((raw.size // _GROUP_BYTES, 8), dtype=np.uint8)
    rows[:, :_GROUP_BYTES] = raw.reshape(-1, _GROUP_BYTES)
    words = rows.view("<u8").reshape(-1)
    shifts = np.arange(_GROUP_CODES, dtype=np.uint64) * np.uint64(BITS)
    flat = (words[:, None] >> shifts) & np.uint64(_MASK)
    codes = flat.reshape(-1)[:count].astype(np.int64)
    return np.ascontiguousarray(codes.reshape(num_frames, num_codebooks).T)


class PlainCoder:
    """The :class:`~neucomp.coding.base.ChunkCoder` of coder 0: plain 10-bit packing."""

    coder_id = CoderId.PLAIN
    hash = bytes(32)  # no model behind it

    def encode(self, codes: np.ndarray) -> bytes:
        return pack_codes(codes)

    def decode(self, payload: bytes, num_codebooks: int, num_frames: int) -> np.ndarray:
        return unpack_codes(payload, num_codebooks, num_frames)
