"""End-to-end latency of the live pipe `neucomp compress … - - | neucomp decompress - -`,
fed by a paced writer at 1× real time, as a microphone would feed it.

A writer thread sends a WAV stream (sizes 0xFFFFFFFF, as from a pipe) to compress in
blocks of ``block_s`` seconds, each at its moment on the wall clock; a relay thread
carries compress's output on to decompress (and keeps it, to measure the container's
bytes); a reader thread timestamps every piece of audio decompress writes. The codec
keeps lengths and alignment, so output sample i is input sample i, and the latency of a
block is the time from its write into compress to the moment its last sample has come
out of decompress: the chunk it waits to fill, the coding, the samples decompress holds
back, the pipes and the scheduler. A warm-up (sent at once, not timed) lets both
processes load torch and the model first.

Used by `make bench` (neucomp.eval.bench) and by the tests (tests/test_live.py).
"""

from __future__ import annotations

import io
import os
import statistics
import struct
import subprocess
import threading
import time
from dataclasses import dataclass

import numpy as np

WAV_UNKNOWN = 0xFFFFFFFF


def pipe_wav_header(rate: int, channels: int) -> bytes:
    """A 16-bit PCM WAV header of unknown length, as ffmpeg or arecord write to a pipe."""
    fmt = struct.pack("<HHIIHH", 1, channels, rate, rate * 2 * channels, 2 * channels, 16)
    return (
        b"RIFF" + struct.pack("<I", WAV_UNKNOWN) + b"WAVEfmt " + struct.pack("<I", 16) + fmt
        + b"data" + struct.pack("<I", WAV_UNKNOWN)
    )  # fmt: skip


@dataclass
class LiveRun:
    """What one paced run measured (latencies in seconds, over the timed blocks)."""

    latencies: list[float]
    stream_bytes: int  # the .ecdc stream compress wrote
    payload_bytes: int  # of which chunk payloads
    fixed_bytes: int  # and the header and end record, once per stream
    chunks: int
    seconds: float  # of audio sent (warm-up included)
    output_samples: int
    returncodes: tuple[int, int]
    stderr: str

    @property
    def chunk_bytes(self) -> int:
        return self.stream_bytes - self.payload_bytes - self.fixed_bytes

    def summary(self) -> dict[str, float]:
        lat = sorted(self.latencies)
        return {
            "latency_p50_s": statistics.median(lat),
            "latency_p95_s": lat[min(len(lat) - 1, int(0.95 * len(lat)))],
            "latency_max_s": lat[-1],
            "blocks": len(lat),
            "kbps": self.stream_bytes * 8 / self.seconds / 1000,
            "payload_kbps": self.payload_bytes * 8 / self.seconds / 1000,
            # the chunk heads and checks: what the chunk length costs (header and end
            # record, 130 bytes once, left out: a live stream runs for long)
            "chunk_overhead_kbps": self.chunk_bytes * 8 / self.seconds / 1000,
            "chunk_overhead_pct": 100 * self.chunk_bytes / self.payload_bytes,
            "chunks": self.chunks,
        }


def run_live(
    compress: list[str],
    decompress: list[str],
    audio: np.ndarray,
    rate: int,
    *,
    block_s: float = 0.01,
    warmup_s: float = 1.0,
    held_s: float = 0.25,
    env: dict[str, str] | None = None,
    timeout_s: float = 120.0,
) -> LiveRun:
    """Send mono float ``audio`` at ``rate`` through ``compress`` (reading stdin, writing
    stdout) into ``decompress`` (likewise), paced at 1× after ``warmup_s``; time it.

    Pacing starts once the warm-up has come out but for ``held_s`` (at least the chunk
    length: what the pipe holds back), so that start-up is not counted as latency."""
    pcm = (np.clip(audio, -1, 1) * 32767).astype("<i2")
    block = max(1, round(block_s * rate))
    warm = min(len(pcm), round(warmup_s * rate))
    enc = subprocess.Popen(
        compress, stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
        env=env, bufsize=0,
    )  # fmt: skip
    dec = subprocess.Popen(
        decompress, stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
        env=env, bufsize=0,
    )  # fmt: skip
    written: list[tuple[int, float]] = []  # (end sample of a timed block, when it was written)
    arrivals: list[tuple[float, int]] = []  # (when, samples out so far)
    stream = bytearray()
    settled = threading.Event()  # the warm-up is through, but for what the pipe holds
    errors: list[BaseException] = []

    def guard(fn):
        def run() -> None:
            try:
                fn()
            except BaseException as err:  # noqa: BLE001 - reported by the caller
                errors.append(err)
                settled.set()

        return threading.Thread(target=run, daemon=True)

    def write() -> None:
        out = enc.stdin
        try:
            out.write(pipe_wav_header(rate, 1) + pcm[:warm].tobytes())
            settled.wait(timeout_s)  # both processes are up and have the model
            start = time.perf_counter()
            for i, pos in enumerate(range(warm, len(pcm), block)):
                due = start + (i + 1) * block / rate  # the block has "happened" by then
                delay = due - time.perf_counter()
                if delay > 0:
                    time.sleep(delay)
                end = min(len(pcm), pos + block)
                out.write(pcm[pos:end].tobytes())
                written.append((end, time.perf_counter()))
        finally:
            out.close()

    def relay() -> None:
        src, dst = enc.stdout.fileno(), dec.stdin
        try:
            while data := os.read(src, 1 << 16):
                stream.extend(data)
                dst.write(data)
        finally:
            dst.close()

    def read() -> None:
        fd = dec.stdout.fileno()
        head = b""
        while b"data" not in head or len(head) < head.index(b"data") + 8:
            part = os.read(fd, 1 << 16)
            if not part:
                return
            head += part
        body = len(head) - (head.index(b"data") + 8)
        settle_at = max(1, warm - round(held_s * rate))
        data = b""
        while True:
            body += len(data)
            if body // 2:
                arrivals.append((time.perf_counter(), body // 2))
                if body // 2 >= settle_at:
                    settled.set()
            data = os.read(fd, 1 << 16)
            if not data:
                break

    threads = [guard(write), guard(relay), guard(read)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout_s)
    try:
        codes = (enc.wait(timeout=10), dec.wait(timeout=10))
    finally:
        for p in (enc, dec):
            if p.poll() is None:
                p.kill()
    stderr = (enc.stderr.read() + dec.stderr.read()).decode(errors="replace")
    if errors:
        raise RuntimeError(f"live run failed: {errors[0]!r}; {stderr[-400:]}")
    latencies = _block_latencies(written, arrivals)
    payload, fixed, chunks = stream_parts(bytes(stream))
    return LiveRun(
        latencies=latencies,
        stream_bytes=len(stream),
        payload_bytes=payload,
        fixed_bytes=fixed,
        chunks=chunks,
        seconds=len(pcm) / rate,
        output_samples=arrivals[-1][1] if arrivals else 0,
        returncodes=codes,
        stderr=stderr,
    )


def _block_latencies(
    written: list[tuple[int, float]], arrivals: list[tuple[float, int]]
) -> list[float]:
    """For each timed block: when its last sample came out, less when it went in."""
    out = []
    j = 0
    for end, t_in in written:
        while j < len(arrivals) and arrivals[j][1] < end:
            j += 1
        if j == len(arrivals):
            break  # the run was cut short: what is left never came out
        out.append(arrivals[j][0] - t_in)
    return out


def stream_parts(data: bytes) -> tuple[int, int, int]:
    """Payload bytes, header + end record bytes, and chunk count of a whole .ecdc stream."""
    from neucomp.container import END_RECORD_SIZE, EcdcReader

    reader = EcdcReader(io.BytesIO(data))
    fixed = reader.bytes_read + END_RECORD_SIZE
    payload = chunks = 0
    for chunk in reader.iter_chunks():
        payload += len(chunk.payload or b"")
        chunks += 1
    return payload, fixed, chunks
