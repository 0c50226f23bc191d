"""The one interface of entropy coding: a :class:`ChunkCoder` turns one chunk of codes
``[K, F]`` into a payload and back, and names itself in the `.ecdc` header.

What a payload of each coder may look like (its size rule) is part of the wire format,
so it lives here, torch-free: the container applies it to every chunk head before it
reads the payload, long before (or without) any coder being loaded.
"""

from __future__ import annotations

from enum import IntEnum
from typing import Protocol

import numpy as np

HASH_BYTES = 32  # a coder's hash as the header records it (all zeros: no model)
BITS = 10  # bits per code in plain packing (codebooks of up to 1024 entries)


def packed_size(num_frames: int, num_codebooks: int, bits: int = BITS) -> int:
    """Bytes taken by `num_frames` frames of `num_codebooks` codes of `bits` bits each."""
    if num_frames < 0 or num_codebooks < 0 or bits < 1:
        raise ValueError("packed_size needs non-negative counts and a positive bit width")
    return (num_frames * num_codebooks * bits + 7) // 8


class CoderId(IntEnum):
    """How chunk payloads are coded: the header's coder field."""

    PLAIN = 0  # 10-bit packing (neucomp.coding.packing.PlainCoder)
    LM = 1  # language-model range coder (neucomp.coding.range.LMCoder)
    FAST = 2  # context frequency tables + range coder (neucomp.coding.tables.FastCoder)


#: The names users pick coders by (``--coder``, ``coder=``), and back.
CODER_NAMES = {CoderId.PLAIN: "plain", CoderId.FAST: "fast", CoderId.LM: "lm"}
CODER_BY_NAME = {name: coder_id for coder_id, name in CODER_NAMES.items()}


class ChunkCoder(Protocol):
    """Codes ``[K, F]`` (int, values < 1024, 1 ≤ K ≤ 32) ⇄ one chunk's payload bytes.

    Every chunk is coded on its own (no state crosses chunks), so a damaged chunk never
    affects another. ``decode`` raises CorruptDataError for a payload ``encode`` cannot
    have written; it returns int64 codes.
    """

    coder_id: CoderId
    hash: bytes  # HASH_BYTES bytes for the header's coder hash (zeros for plain packing)

    def encode(self, codes: np.ndarray) -> bytes: ...

    def decode(self, payload: bytes, num_codebooks: int, num_frames: int) -> np.ndarray: ...


def payload_problem(
    coder_id: CoderId, num_frames: int, num_codebooks: int, payload_size: int
) -> str | None:
    """Why a payload of ``payload_size`` bytes cannot come from this coder for a chunk
    of that shape, or None if it can."""
    if coder_id == CoderId.PLAIN:
        expected = packed_size(num_frames, num_codebooks)
        if payload_size != expected:
            return (
                f"declares a payload of {payload_size} bytes, but {num_frames} frames of "
                f"{num_codebooks} codebooks take {expected}"
            )
    elif coder_id in (CoderId.LM, CoderId.FAST):
        # Both range coders emit 32-bit words, at most ~32 bits per code (the LM's and
        # the tables' smallest frequency is 1 / 2^24) plus a flush (docs/LM_CODER.md,
        # docs/CODERS.md): anything else cannot have come from them.
        # The flush alone is one word, so no payload of a chunk with frames is empty.
        limit = 4 * num_frames * num_codebooks + 8
        if payload_size % 4 or not 4 <= payload_size <= limit:
            name = "an LM" if coder_id == CoderId.LM else "a fast-coder"
            return (
                f"declares {name} payload of {payload_size} bytes (must be a multiple of 4, "
                f"4 to {limit} for {num_frames} frames of {num_codebooks} codebooks)"
            )
    return None
