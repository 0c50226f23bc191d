"""A RIFF/WAVE (or RF64) input read front to back from a pipe, without seeking.

libsndfile cannot read a pipe, and writers that cannot seek back (ffmpeg to a pipe,
RF64) leave placeholder sizes in the header, so :func:`neucomp.audio.readers.open_audio` hands
such streams (and WAV files whose header says 0 frames) to :class:`WavStreamReader`.
PCM (8/16/24/32 bit) and float (32/64 bit), plain or WAVE_FORMAT_EXTENSIBLE, are
decoded here to float32 ``[C, n]`` blocks.
"""

from __future__ import annotations

import io
import struct
from collections.abc import Iterator
from typing import BinaryIO

import numpy as np

from neucomp.audio.base import BLOCK_FRAMES, AudioInfo, AudioReader
from neucomp.errors import InputError

# WAVE_FORMAT_* tags we decode ourselves; EXTENSIBLE carries the real tag in its GUID.
_WAVE_PCM, _WAVE_FLOAT, _WAVE_EXTENSIBLE = 0x0001, 0x0003, 0xFFFE
_UNKNOWN_SIZES = (0, 0xFFFFFFFF)


class WavStreamReader(AudioReader):
    """A RIFF/WAVE (or RF64) stream read front to back without seeking.

    A data chunk size of 0 or 0xFFFFFFFF means "until end of stream", which is what
    writers that cannot seek back (ffmpeg to a pipe, RF64) leave in the header.
    """

    def __init__(self, fp: BinaryIO, name: str, eager: bool = False) -> None:
        self.name = name
        self._fp = fp
        # eager: hand out whatever whole frames have arrived instead of waiting for a
        # full block (a live source on a pipe delivers a few milliseconds at a time)
        self._eager = eager
        riff = read_exact(fp, 12)
        if len(riff) < 12 or riff[:4] not in (b"RIFF", b"RF64", b"BW64") or riff[8:] != b"WAVE":
            raise InputError(f"cannot read '{name}': not an audio file")
        fmt = None
        while True:
            head = read_exact(fp, 8)
            if len(head) < 8:
                raise InputError(f"cannot read '{name}': WAV stream has no data chunk")
            chunk_id, size = head[:4], struct.unpack("<I", head[4:])[0]
            if chunk_id == b"data":
                break
            if size == 0xFFFFFFFF:
                raise InputError(f"cannot read '{name}': WAV chunk {chunk_id!r} has no length")
            if chunk_id == b"fmt ":
                if size > 1024:  # 16 to 40 bytes in practice
                    raise InputError(f"cannot read '{name}': WAV fmt chunk is {size} bytes")
                fmt = read_exact(fp, size + (size & 1))[:size]
                if len(fmt) < size:
                    raise InputError(f"cannot read '{name}': WAV header is truncated")
            elif not _skip(fp, size + (size & 1)):  # LIST, fact, ...: read past, in pieces
                raise InputError(f"cannot read '{name}': WAV header is truncated")
        if fmt is None or len(fmt) < 16:
            raise InputError(f"cannot read '{name}': WAV stream has no valid fmt chunk")
        tag, channels, rate, _, align, bits = struct.unpack("<HHIIHH", fmt[:16])
        if tag == _WAVE_EXTENSIBLE and len(fmt) >= 26:
            tag = struct.unpack("<H", fmt[24:26])[0]  # first two bytes of the sub-format GUID
        self._dtype = _wav_sample_type(tag, bits)
        if self._dtype is None or channels < 1 or rate < 1 or align != channels * bits // 8:
            raise InputError(
                f"cannot read '{name}': unsupported WAV encoding (format {tag:#06x}, {bits} bit)"
            )
        self._bits = bits
        self._align = align
        self._remaining = None if size in _UNKNOWN_SIZES else size
        frames = None if self._remaining is None else self._remaining // align
        self.info = AudioInfo(rate, channels, frames)

    def blocks(self, block_frames: int = BLOCK_FRAMES) -> Iterator[np.ndarray]:
        if self._eager:
            yield from self._eager_blocks(block_frames)
            return
        want = block_frames * self._align
        while self._remaining is None or self._remaining > 0:
            n = want if self._remaining is None else min(want, self._remaining)
            raw = read_exact(self._fp, n)
            if self._remaining is not None:
                self._remaining -= len(raw)
            usable = len(raw) - len(raw) % self._align  # a torn last frame is dropped
            if usable:
                yield _decode_pcm(raw[:usable], self._dtype, self._bits, self.info.channels)
            if len(raw) < n:
                return  # end of stream (possibly earlier than the header promised)

    def _eager_blocks(self, block_frames: int) -> Iterator[np.ndarray]:
        """Blocks of what one read returns (at most ``block_frames``), a torn frame
        carried over to the next read."""
        carry = b""
        while self._remaining is None or self._remaining > 0:
            n = block_frames * self._align - len(carry)
            if self._remaining is not None:
                n = min(n, self._remaining)
            raw = read_some(self._fp, n)
            if not raw:
                return  # end of stream (a torn last frame is dropped)
            if self._remaining is not None:
                self._remaining -= len(raw)
            raw = carry + raw
            usable = len(raw) - len(raw) % self._align
            carry = raw[usable:]
            if usable:
                yield _decode_pcm(raw[:usable], self._dtype, self._bits, self.info.channels)

    def close(self) -> None:
        self._fp.close()


def read_some(fp: BinaryIO, n: int) -> bytes:
    """Up to n bytes, as many as one read of the underlying stream gives (b"": end of
    stream): what has arrived on a pipe, without waiting for all n."""
    read1 = getattr(fp, "read1", None)
    return read1(n) if read1 is not None else fp.read(n)


def _wav_sample_type(tag: int, bits: int) -> str | None:
    if tag == _WAVE_PCM:
        return {8: "u1", 16: "<i2", 24: "i24", 32: "<i4"}.get(bits)
    if tag == _WAVE_FLOAT:
        return {32: "<f4", 64: "<f8"}.get(bits)
    return None


def _decode_pcm(raw: bytes, dtype: str, bits: int, channels: int) -> np.ndarray:
    """Interleaved WAV sample bytes → ``[C, n]`` float32 in [-1, 1]."""
    if dtype == "i24":
        b = np.frombuffer(raw, np.uint8).reshape(-1, 3).astype(np.int32)
        ints = b[:, 0] | (b[:, 1] << 8) | (b[:, 2] << 16)
        ints = np.where(ints >= 1 << 23, ints - (1 << 24), ints)
        x = ints.astype(np.float32) / float(1 << 23)
    else:
        x = np.frombuffer(raw, dtype)
        if dtype == "u1":
            x = (x.astype(np.float32) - 128.0) / 128.0
        elif dtype[1] == "i":
            x = x.astype(np.float32) / float(1 << (bits - 1))
        else:
            x = x.astype(np.float32)
    return np.ascontiguousarray(x.reshape(-1, channels).T)


def _skip(fp: BinaryIO, n: int) -> bool:
    """Read and drop n bytes without holding them; False if the stream ends first."""
    while n > 0:
        got = len(read_exact(fp, min(n, 1 << 16)))
        if got == 0:
            return False
        n -= got
    return True


def read_exact(fp: BinaryIO, n: int) -> bytes:
    """Read n bytes, fewer only at end of stream (pipes may return short reads)."""
    parts, got = [], 0
    while got < n:
        part = fp.read(n - got)
        if not part:
            break
        parts.append(part)
        got += len(part)
    return b"".join(parts)


class Prefixed(io.RawIOBase):
    """A stream with some already-consumed bytes put back in front."""

    def __init__(self, prefix: bytes, fp: BinaryIO) -> None:
        self._prefix = prefix
        self._fp = fp

    def readable(self) -> bool:
        return True

    def readinto(self, buf) -> int:
        if self._prefix:
            n = min(len(buf), len(self._prefix))
            buf[:n] = self._prefix[:n]
            self._prefix = self._prefix[n:]
            return n
        data = read_some(self._fp, len(buf))
        buf[: len(data)] = data
        return len(data)
