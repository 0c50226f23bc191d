"""The fast coder: integer frequency tables with a small context, through constriction's
range coder (issue 14; measurements in docs/CODERS.md).

Model. Code k of frame t is coded with one of `n_ctx[k]` frequency tables of codebook k,
chosen through a learned map `ctx[k][code] -> table` by
- for k ≥ 1, the code of codebook k-1 in the same frame (the lower stage says much about
  the residual the next stage quantises);
- for k = 0, the code of codebook 0 in the frame before (code 0 for the chunk's first
  frame): the coarse stage moves slowly.
Measured on real codes, each context saves 1-2 bits a code against one table per
codebook (docs/CODERS.md). Tables are integers summing to 2^24 with
every entry ≥ 1, so any code is codable (at ≤ 24 bits); there are no floats anywhere in
the probability path: coding depends only on the table file and the codes.

Payload of a chunk of codes [K, F]: the codes go row by row (codebook 0, then 1, …).
Row 0 goes in time order, one code at a time (its context is the code just decoded).
Within row k ≥ 1 the frames are taken in groups by their context (context 0's frames in
time order, then context 1's, …), each group through its table: the decoder has row k-1
before it needs row k, so it knows the groups, and every group is one vectorised call
into the range coder. The coder is constriction's `stream.queue.RangeEncoder` (32-bit
words), the payload its words as little-endian u32; an empty chunk has an empty payload.

Bit-exactness: a table f reaches constriction as `Categorical(f - 1, perfect=False)` in
float64, which constriction turns into exactly the cumulative sums of f (the argument is
in `neucomp.coding.range`: every partial sum is an integer below 2^24 and the scale is
exactly 1.0). The models are built once, at load time.

Table file (`models/<codec name>.fct`), little-endian:

    magic "NCFT" | u16 version | u16 flags (0) | 32 bytes codec weights hash (sha256)
    u16 codebooks K | u16 card N | u8 precision (24) | 3 bytes zero
    per codebook k: u16 n_ctx[k] (1..256); u8[N] context map; u32[n_ctx[k], N] frequencies
    u32 CRC-32 of everything before it

`Tables.hash` (sha256 of the whole file) is what an .ecdc header would record.
"""

from __future__ import annotations

import struct
import zlib
from dataclasses import dataclass, field
from functools import cached_property
from hashlib import sha256
from pathlib import Path

import constriction
import numpy as np

from neucomp.coding.base import CoderId
from neucomp.errors import CorruptDataError, FormatError, ModelError

MAGIC = b"NCFT"
VERSION = 1
PRECISION = 24
TOTAL = 1 << PRECISION
MAX_CTX = 256
_HEAD = struct.Struct("<4sHH32sHHB3x")
_CRC = struct.Struct("<I")


@dataclass(frozen=True)
class Tables:
    """Integer tables for the first `num_codebooks` codebooks of one codec."""

    codec_hash: bytes  # sha256 of the codec weights the tables were trained for
    freqs: tuple[np.ndarray, ...]  # per codebook: u32 [n_ctx, card], rows sum to 2^24
    ctx: tuple[np.ndarray, ...]  # per codebook: [card] ints, code → table
    card: int = 1024
    _models: list = field(default_factory=list, compare=False, repr=False)

    def __post_init__(self) -> None:
        if len(self.codec_hash) != 32:
            raise ValueError("codec hash must be 32 raw bytes")
        if len(self.freqs) != len(self.ctx) or not 1 <= len(self.freqs) <= 0xFFFF:
            raise ValueError("one frequency block and one context map per codebook")
        for k, (f, c) in enumerate(zip(self.freqs, self.ctx, strict=True)):
            if f.ndim != 2 or f.shape[1] != self.card or not 1 <= f.shape[0] <= MAX_CTX:
                raise ValueError(f"codebook {k}: frequencies shaped {f.shape}")
            if f.dtype != np.uint32 or (f < 1).any() or (f.sum(1, dtype=np.int64) != TOTAL).any():
                raise ValueError(f"codebook {k}: every table must be ≥ 1 and sum to 2^24")
            if c.shape != (self.card,) or c.min() < 0 or c.max() >= f.shape[0]:
                raise ValueError(f"codebook {k}: context map out of range")
        cat = constriction.stream.model.Categorical
        self._models.extend(
            [cat((row.astype(np.float64) - 1.0), perfect=False) for row in f] for f in self.freqs
        )

    @property
    def num_codebooks(self) -> int:
        return len(self.freqs)

    @cached_property
    def nbytes(self) -> int:
        return len(self.to_bytes())

    @cached_property
    def hash(self) -> bytes:
        """sha256 of the table file: what a stream header records."""
        return sha256(self.to_bytes()).digest()

    # ------------------------------------------------------------------ file format

    def to_bytes(self) -> bytes:
        parts = [
            _HEAD.pack(MAGIC, VERSION, 0, self.codec_hash, len(self.freqs), self.card, PRECISION)
        ]
        for f, c in zip(self.freqs, self.ctx, strict=True):
            parts.append(struct.pack("<H", f.shape[0]))
            parts.append(np.asarray(c, dtype=np.uint8).tobytes())
            parts.append(np.ascontiguousarray(f, dtype="<u4").tobytes())
        body = b"".join(parts)
        return body + _CRC.pack(zlib.crc32(body))

    @classmethod
    def from_bytes(cls, data: bytes, codec_hash: bytes | None = None) -> Tables:
        """Parse a table file; ModelError if it is damaged, not one, or for another codec."""
        if len(data) < _HEAD.size + _CRC.size or data[:4] != MAGIC:
            raise ModelError("not a neucomp table file (bad magic)")
        magic, version, flags, file_codec, k, card, precision = _HEAD.unpack_from(data)
        if version != VERSION:
            raise ModelError(f"unsupported table file version {version} (this reader: {VERSION})")
        (crc,) = _CRC.unpack_from(data, len(data) - _CRC.size)
        if zlib.crc32(data[: -_CRC.size]) != crc:
            raise ModelError("the table file is damaged (CRC mismatch)")
        if flags or precision != PRECISION or not 2 <= card <= 1 << 16 or k < 1:
            raise ModelError("table file has unsupported parameters")
        if codec_hash is not None and file_codec != codec_hash:
            raise ModelError(_wrong_codec(file_codec, codec_hash))
        freqs, ctx = [], []
        pos, end = _HEAD.size, len(data) - _CRC.size
        try:
            for _ in range(k):
                (n_ctx,) = struct.unpack_from("<H", data, pos)
                pos += 2
                ctx.append(np.frombuffer(data, np.uint8, card, pos).astype(np.int64))
                pos += card
                count = n_ctx * card
                if pos + 4 * count > end:
                    raise ValueError("truncated")
                freqs.append(
                    np.frombuffer(data, "<u4", count, pos).reshape(n_ctx, card).astype(np.uint32)
                )
                pos += 4 * count
            if pos != end:
                raise ValueError("trailing bytes")
            return cls(file_codec, tuple(freqs), tuple(ctx), card)
        except (ValueError, struct.error) as err:
            raise ModelError(f"the table file is malformed: {err}") from None

    def save(self, path: str | Path) -> bytes:
        """Write atomically; returns the file's hash."""
        from neucomp.audio.writers import atomic_write

        data = self.to_bytes()
        with atomic_write(path) as fp:
            fp.write(data)
        return sha256(data).digest()

    @classmethod
    def load(cls, path: str | Path, codec_hash: bytes | str | None = None) -> Tables:
        """Load a table file, refusing one for a codec other than `codec_hash` if given."""
        path = Path(path)
        if not path.is_file():
            raise ModelError(f"table file not found: {path}")
        if isinstance(codec_hash, str):
            codec_hash = bytes.fromhex(codec_hash)
        try:
            return cls.from_bytes(path.read_bytes(), codec_hash)
        except ModelError as err:
            raise ModelError(f"{path}: {err}") from None

    def check_codec(self, codec_hash: bytes | str) -> None:
        if isinstance(codec_hash, str):
            codec_hash = bytes.fromhex(codec_hash)
        if codec_hash != self.codec_hash:
            raise ModelError(_wrong_codec(self.codec_hash, codec_hash))

    # ---------------------------------------------------------------------- coding

    def _check_shape(self, k: int, f: int) -> None:
        if not 1 <= k <= self.num_codebooks:
            raise FormatError(f"{k} codebooks, these tables handle 1..{self.num_codebooks}")
        if f < 0:
            raise FormatError(f"negative frame count {f}")

    def _groups(self, k: int, lower: np.ndarray | None, f: int):
        """(context, frame indices) of row k, in payload order."""
        if lower is None or self.freqs[k].shape[0] == 1:
            yield 0, np.arange(f)
            return
        c = self.ctx[k][lower]
        order = np.argsort(c, kind="stable")
        bounds = np.searchsorted(c[order], np.arange(self.freqs[k].shape[0] + 1))
        for b in range(self.freqs[k].shape[0]):
            if bounds[b + 1] > bounds[b]:
                yield b, order[bounds[b] : bounds[b + 1]]

    def encode(self, codes: np.ndarray) -> bytes:
        """Range-code codes [K, F] (ints in [0, card)) into a payload."""
        codes = np.asarray(codes)
        if codes.ndim != 2:
            raise ValueError("codes must be [K, F]")
        k, f = codes.shape
        self._check_shape(k, f)
        if f == 0:
            return b""
        if codes.min() < 0 or codes.max() >= self.card:
            raise ValueError(f"codes out of range [0, {self.card})")
        return self._encode(codes.astype(np.int32)).astype("<u4").tobytes()

    def _encode(self, codes: np.ndarray) -> np.ndarray:
        encoder = constriction.stream.queue.RangeEncoder()
        if self.freqs[0].shape[0] > 1:  # row 0: one code at a time, after its predecessor
            models, ctx, prev = self._models[0], self.ctx[0].tolist(), 0
            for code in codes[0].tolist():
                encoder.encode(code, models[ctx[prev]])
                prev = code
        for i in range(codes.shape[0]):
            if i == 0 and self.freqs[0].shape[0] > 1:
                continue
            lower = codes[i - 1] if i else None
            for b, idx in self._groups(i, lower, codes.shape[1]):
                encoder.encode(np.ascontiguousarray(codes[i, idx]), self._models[i][b])
        return encoder.get_compressed()

    def decode(self, payload: bytes, num_codebooks: int, num_frames: int) -> np.ndarray:
        """Codes [K, F] from a payload, or CorruptDataError. Only the exact bytes `encode`
        writes for some codes are accepted (the decoded codes are re-encoded and must give
        the payload back), so a cut, padded, zeroed or altered payload is refused. The
        work is bounded by K x F whatever the bytes."""
        self._check_shape(num_codebooks, num_frames)
        out = np.zeros((num_codebooks, num_frames), dtype=np.int32)
        if num_frames == 0:
            if payload:
                raise CorruptDataError("fast-coder payload of a chunk without frames is not empty")
            return out.astype(np.int64)
        if len(payload) % 4 or not payload:
            raise CorruptDataError("fast-coder payload is not a whole, non-zero number of words")
        words = np.frombuffer(payload, dtype="<u4").astype(np.uint32)
        decoder = constriction.stream.queue.RangeDecoder(words)
        try:
            if self.freqs[0].shape[0] > 1:
                models, ctx, prev = self._models[0], self.ctx[0].tolist(), 0
                row = []
                for _ in range(num_frames):
                    prev = decoder.decode(models[ctx[prev]])
                    row.append(prev)
                out[0] = row
            for i in range(num_codebooks):
                if i == 0 and self.freqs[0].shape[0] > 1:
                    continue
                lower = out[i - 1] if i else None
                for b, idx in self._groups(i, lower, num_frames):
                    out[i, idx] = decoder.decode(self._models[i][b], len(idx))
        except Exception as err:  # constriction reports bad data by various types
            raise CorruptDataError(f"fast-coder payload does not decode: {err}") from None
        if not np.array_equal(self._encode(out), words):
            raise CorruptDataError("fast-coder payload does not end where its codes end")
        return out.astype(np.int64)

    def ideal_bits(self, codes: np.ndarray) -> float:
        """Σ -log2(f / 2^24) over the codes: what the range coder spends, give or take
        its flush word."""
        codes = np.asarray(codes, dtype=np.int64)
        bits = 0.0
        for i in range(codes.shape[0]):
            if i:
                c = self.ctx[i][codes[i - 1]]
            else:
                c = self.ctx[0][np.concatenate([[0], codes[0, :-1]]).astype(np.int64)]
            bits += float(np.sum(PRECISION - np.log2(self.freqs[i][c, codes[i]].astype(float))))
        return bits


class FastCoder:
    """The :class:`~neucomp.coding.base.ChunkCoder` of coder 2: one table file's
    :class:`Tables` (read by :func:`neucomp.registry.fast_coder`). The header's coder
    hash is the table file's sha256."""

    coder_id = CoderId.FAST

    def __init__(self, tables: Tables) -> None:
        self.tables = tables
        self.hash = tables.hash

    @property
    def max_codebooks(self) -> int:
        return self.tables.num_codebooks

    def encode(self, codes: np.ndarray) -> bytes:
        return self.tables.encode(codes)

    def decode(self, payload: bytes, num_codebooks: int, num_frames: int) -> np.ndarray:
        return self.tables.decode(payload, num_codebooks, num_frames)


def _wrong_codec(have: bytes, want: bytes) -> str:
    return (
        f"the fast-coder tables were trained for codec weights {have.hex()[:12]}…, not for "
        f"{want.hex()[:12]}…; retrain them (`make train-lm`) after changing the codec"
    )


# -------------------------------------------------------------------------- training


def quantize(probs: np.ndarray) -> np.ndarray:
    """Float probabilities [..., N] → u32 tables: each ≥ 1, each row summing to 2^24."""
    probs = np.asarray(probs, dtype=np.float64)
    n = probs.shape[-1]
    p = probs / probs.sum(-1, keepdims=True)
    f = 1 + np.floor(p * (TOTAL - n)).astype(np.int64)
    rest = TOTAL - f.sum(-1)  # ≥ 0: the floors only ever round down
    top = np.argmax(f, axis=-1)
    np.put_along_axis(
        f, top[..., None], np.take_along_axis(f, top[..., None], -1) + rest[..., None], -1
    )
    return f.astype(np.uint32)


def _cluster(joint: np.ndarray, prior: np.ndarray, n_ctx: int, alpha: float, iters: int = 20):
    """Map the N values of the conditioning code to n_ctx contexts so that the pooled
    distributions predict the next code well (k-means under cross-entropy). joint[j, i]
    counts (conditioning j, coded i). Returns the map [N] and the smoothed tables."""
    n = joint.shape[0]
    used = joint.sum(1)
    # Start from the most frequent conditioning values, one context each.
    seeds = np.argsort(-used, kind="stable")[:n_ctx]
    assign = np.zeros(n, np.int64)

    def tables(assign: np.ndarray) -> np.ndarray:
        pooled = np.zeros((n_ctx, joint.shape[1]))
        np.add.at(pooled, assign, joint)
        return (pooled + alpha * prior) / (pooled.sum(1, keepdims=True) + alpha)

    probs = (joint[seeds] + alpha * prior) / (used[seeds, None] + alpha)
    for _ in range(iters):
        cost = -(joint @ np.log(probs).T)  # [N, n_ctx] bits (in nats) each value would cost
        new = np.argmin(cost, axis=1)
        new[used == 0] = 0
        if np.array_equal(new, assign):
            break
        assign = new
        probs = tables(assign)
    return assign, probs


def train_tables(
    codes: np.ndarray | list[np.ndarray],
    codec_hash: bytes | str,
    n_ctx: int = 16,
    n_ctx0: int = 256,
    alpha: float = 64.0,
    card: int = 1024,
) -> Tables:
    """Tables from training codes [K, F] (or a list of chunks [K, f_i], all the same K):
    n_ctx0 contexts for codebook 0 (by its previous code), n_ctx for the others (by the
    lower codebook's code); 1 means a single static table. Training is float (k-means
    clustering, smoothing); what it produces, and all that coding uses, is integers."""
    if isinstance(codec_hash, str):
        codec_hash = bytes.fromhex(codec_hash)
    chunks = [
        np.asarray(c, dtype=np.int64) for c in (codes if isinstance(codes, list) else [codes])
    ]
    k = chunks[0].shape[0]
    if not (1 <= n_ctx <= MAX_CTX and 1 <= n_ctx0 <= MAX_CTX):
        raise ValueError(f"context counts must be in 1..{MAX_CTX}")
    flat = np.concatenate(chunks, axis=1)
    freqs, ctx = [], []
    for i in range(k):
        uni = np.bincount(flat[i], minlength=card).astype(np.float64)
        prior = (uni + 0.5) / (uni.sum() + 0.5 * card)
        n = n_ctx0 if i == 0 else n_ctx
        if n == 1:
            freqs.append(quantize(prior[None]))
            ctx.append(np.zeros(card, np.int64))
            continue
        joint = np.zeros((card, card))
        if i:
            np.add.at(joint, (flat[i - 1], flat[i]), 1.0)
        else:  # pairs of consecutive frames inside each chunk
            for c in chunks:
                np.add.at(joint, (c[0, :-1], c[0, 1:]), 1.0)
        assign, probs = _cluster(joint, prior, n, alpha)
        freqs.append(quantize(probs))
        ctx.append(assign)
    return Tables(codec_hash, tuple(freqs), tuple(ctx), card)
