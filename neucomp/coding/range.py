"""LM range coding of code chunks: integer LM tables + constriction's range coder.

A chunk of codes [K, F] is coded frame by frame: the integer LM (`neucomp.coding.intlm`)
turns the frames before t into K frequency tables for frame t, and the range coder
spends -log2(f / 2^24) bits per code. The LM state starts fresh in every chunk, so a
damaged chunk never affects another.

Bit-exactness: the tables are exact integers (see intlm), and they reach constriction in
a form its float-to-fixed-point conversion reproduces exactly. We pass p_i = f_i - 1 as
float64 with sum(f) = 2^24; constriction's `perfect=False` categorical gives symbol i the
interval starting at floor(C_i * scale) + i, where C_i = p_0 + ... + p_{i-1} is an exact
integer below 2^24 and scale = (2^24 - n) / sum(p) = 1.0 exactly, i.e. at f_0 + ... +
f_{i-1}: our table, bit for bit, with no rounding anywhere.
The encoder computes its tables with `IntLM.step`, the very function the decoder runs.
With an intra-frame LM (`LMConfig.intra`) the table of code k of a frame depends on codes
0..k-1 of that frame: `step` then hands out one table at a time, the decoder decodes each
code before asking for the next table, and the encoder feeds its known codes through the
same calls. The payload layout is unchanged.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator, Sequence

import constriction
import numpy as np
import torch

from neucomp.coding.base import CoderId
from neucomp.coding.intlm import FREQ_BITS, IntLM
from neucomp.errors import CorruptDataError, FormatError, ModelError


@contextlib.contextmanager
def _exact_matmuls() -> Iterator[None]:
    """float32 matmuls at full precision (never TF32/bf16) while the LM runs."""
    before = torch.get_float32_matmul_precision()
    if before != "highest":
        torch.set_float32_matmul_precision("highest")
    try:
        yield
    finally:
        if before != "highest":
            torch.set_float32_matmul_precision(before)


class LMCoder:
    """The :class:`~neucomp.coding.base.ChunkCoder` of coder 1: an integer LM and a range
    coder. One instance per LM file (read by :func:`neucomp.registry.read_lm`)."""

    coder_id = CoderId.LM

    def __init__(self, lm: IntLM, codec_hash: str, digest: bytes, card: dict | None = None):
        self.lm = lm
        self.codec_hash = codec_hash
        self.hash = digest
        self.card = card or {}
        self._family = constriction.stream.model.Categorical(perfect=False)

    @property
    def max_codebooks(self) -> int:
        return self.lm.config.max_codebooks

    def check_codec(self, codec_hash: str) -> None:
        """Refuse codes of a codec other than the one this LM was trained for."""
        if codec_hash != self.codec_hash:
            raise ModelError(
                f"the LM was trained for codec weights {self.codec_hash[:12]}…, not for "
                f"{codec_hash[:12]}…; retrain it with `make train-lm` after changing the codec"
            )

    def _check_shape(self, num_codebooks: int, num_frames: int) -> None:
        if not 1 <= num_codebooks <= self.max_codebooks:
            raise FormatError(
                f"{num_codebooks} codebooks, the LM coder handles 1..{self.max_codebooks}"
            )
        if num_frames < 0:
            raise FormatError(f"negative frame count {num_frames}")

    def encode(self, codes: np.ndarray) -> bytes:
        """Range-code codes [K, F] (values < card); the LM runs frame by frame, as in decode."""
        codes = np.asarray(codes)
        k, f = codes.shape
        self._check_shape(k, f)
        if f == 0:
            return b""
        if codes.min() < 0 or codes.max() >= self.lm.config.card:
            raise ValueError("codes out of range")
        frames = torch.from_numpy(codes.astype(np.int64))
        tables = []
        with torch.inference_mode(), _exact_matmuls():
            state = self.lm.start(k)
            for t in range(f):
                known = frames[:, t].tolist()  # intra: what the decoder's choose() gets back
                freqs = self.lm.step(
                    state, frames[:, t - 1] if t else None, lambda i, _, known=known: known[i]
                )
                tables.append(freqs)
        probs = (torch.cat(tables) - 1).double().numpy()  # frame-major [F * K, card]
        encoder = constriction.stream.queue.RangeEncoder()
        encoder.encode(codes.T.reshape(-1).astype(np.int32), self._family, probs)
        return encoder.get_compressed().astype("<u4").tobytes()

    def decode(self, payload: bytes, num_codebooks: int, num_frames: int) -> np.ndarray:
        """Codes [K, F] from a payload, or CorruptDataError. Only the exact bytes
        encode writes for some codes are accepted: the decoded codes are re-encoded
        alongside and must give the payload back, so an empty, zeroed, cut or padded
        payload is refused instead of decoding to garbage. The decode stops as soon as
        the codes carry more information than the payload can hold, so a small payload
        cannot buy the CPU time of many frames unless it really codes them."""
        parts = list(self.decode_iter(payload, num_codebooks, num_frames, [num_frames]))
        return parts[0] if parts else np.zeros((num_codebooks, 0), dtype=np.int64)

    def decode_iter(
        self, payload: bytes, num_codebooks: int, num_frames: int, sizes: Sequence[int]
    ) -> Iterator[np.ndarray]:
        """:meth:`decode`, handing out the codes ``[K, n]`` in pieces of ``sizes`` frames
        (which sum to ``num_frames``) as soon as they are decoded: the LM decodes a 10-s
        chunk in about a second, and a streaming decoder need not wait for all of it.
        The checks are :meth:`decode`'s, so the last piece may still be followed by a
        CorruptDataError."""
        self._check_shape(num_codebooks, num_frames)
        sizes = [n for n in sizes if n]  # an empty chunk has no pieces
        if sum(sizes) != num_frames or min(sizes, default=1) < 0:
            raise ValueError(f"piece sizes {sizes} do not split {num_frames} frames")
        if num_frames == 0:
            if payload:
                raise CorruptDataError("LM payload of a chunk without frames is not empty")
            return
        if len(payload) % 4 or not payload:
            raise CorruptDataError("LM payload is not a whole, non-zero number of 32-bit words")
        words = np.frombuffer(payload, dtype="<u4").astype(np.uint32)
        decoder = constriction.stream.queue.RangeDecoder(words)
        check = constriction.stream.queue.RangeEncoder()
        # Range coding costs the codes' information plus a flush word and a tiny
        # per-code rounding loss (< 0.01 bit with 24-bit tables and a 64-bit state).
        budget = 8 * len(payload) + 64 + 0.01 * num_codebooks * num_frames
        spent = 0.0
        prev = None

        def decode(freqs: torch.Tensor) -> np.ndarray:
            nonlocal spent
            probs = (freqs - 1).double().numpy()
            try:
                symbols = decoder.decode(self._family, probs)
            except Exception as err:  # constriction reports bad data by various types
                raise CorruptDataError(f"LM payload does not decode: {err}") from None
            check.encode(symbols.astype(np.int32), self._family, probs)
            chosen = freqs[torch.arange(len(symbols)), torch.from_numpy(symbols.astype(np.int64))]
            spent += FREQ_BITS * len(symbols) - float(np.log2(chosen.double().numpy()).sum())
            if spent > budget:
                raise CorruptDataError("LM payload is too short for the frames it declares")
            return symbols

        chosen: list[int] = []

        def choose(k: int, freqs: torch.Tensor) -> int:  # intra: one code at a time
            chosen.append(int(decode(freqs[None])[0]))
            return chosen[-1]

        state = None
        for size in sizes:
            piece = np.zeros((num_codebooks, size), dtype=np.int64)
            # No context is held across the yield: the caller's code runs in between.
            with torch.inference_mode(), _exact_matmuls():
                if state is None:
                    state = self.lm.start(num_codebooks)
                for i in range(piece.shape[1]):
                    if self.lm.config.intra:
                        chosen.clear()
                        self.lm.step(state, prev, choose)
                        symbols = chosen
                    else:
                        symbols = decode(self.lm.step(state, prev))
                    piece[:, i] = symbols
                    prev = torch.from_numpy(piece[:, i].copy())
            yield piece
        if not np.array_equal(check.get_compressed().astype(np.uint32), words):
            raise CorruptDataError("LM payload does not end where its codes end")


assert FREQ_BITS == 24, "constriction's Categorical works at 24-bit precision"
