"""Streaming: audio leaves decompress as it is decoded (stdin and file input), the WAV
header a pipe gets, the end record read ahead on seekable input."""

from __future__ import annotations

import io
import os
import select
import struct
import subprocess
import time
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf
from conftest import BIN, make_audio, write_audio

import neucomp
from neucomp import engine
from neucomp.audio.writers import UNKNOWN_SIZE, WavStreamWriter, wav_header
from neucomp.container import EcdcReader, Trailer
from neucomp.errors import OutputError
from neucomp.registry import coder_for

NEUCOMP = str(BIN / "neucomp")
RATE = 8000  # low, so that long inputs are cheap for the tiny model


def _long_ecdc(tmp_path: Path, lm: bool = False, bandwidth: float = 1.5) -> Path:
    """25 s: three chunks."""
    x = make_audio(25 * RATE, RATE)
    path = tmp_path / "long.ecdc"
    path.write_bytes(neucomp.compress(x, RATE, bandwidth, coder="lm" if lm else "plain"))
    return path


class _CountingFile(io.RawIOBase):
    """A file that remembers how far it has been read (the furthest position)."""

    def __init__(self, data: bytes) -> None:
        self._buf = io.BytesIO(data)
        self.furthest = 0

    def readable(self) -> bool:
        return True

    def seekable(self) -> bool:
        return True

    def seek(self, offset: int, whence: int = 0) -> int:
        return self._buf.seek(offset, whence)

    def tell(self) -> int:
        return self._buf.tell()

    def readinto(self, b) -> int:
        data = self._buf.read(len(b))
        b[: len(data)] = data
        self.furthest = max(self.furthest, self._buf.tell())
        return len(data)


@pytest.mark.parametrize("coder", ["plain", "lm"])
def test_first_audio_comes_before_the_input_is_read(request, tiny_model, tmp_path, coder):
    """The engine hands audio on a frame group at a time: with three chunks, the first
    audio comes while the reader has only reached the first chunk, and with the LM
    coder after it has decoded one group of that chunk's 750 frames, not all of them."""
    if coder == "lm":
        request.getfixturevalue("tiny_lm")
    data = _long_ecdc(tmp_path, lm=coder == "lm").read_bytes()
    fp = _CountingFile(data)
    reader = EcdcReader(fp)
    inner = coder_for(reader.header, tiny_model)
    pieces: list[int] = []

    class Watched:  # the same coder, noting each piece of codes it hands over
        coder_id, hash = inner.coder_id, inner.hash

        def decode(self, *args):
            codes = inner.decode(*args)
            pieces.append(codes.shape[1])
            return codes

        if hasattr(inner, "decode_iter"):

            def decode_iter(self, *args):
                for piece in inner.decode_iter(*args):
                    pieces.append(piece.shape[1])
                    yield piece

    class Sink:
        read_at_first: int | None = None
        pieces_at_first: list[int] = []
        total = 0

        def write(self, block: np.ndarray) -> None:
            if block.shape[1] and self.read_at_first is None:
                self.read_at_first, self.pieces_at_first = fp.furthest, list(pieces)
            self.total += block.shape[1]

    sink = Sink()
    result = engine.decompress_stream(reader, tiny_model, Watched(), lambda h: sink)
    assert sink.total == result.samples == 25 * RATE
    assert sink.read_at_first is not None and sink.read_at_first < len(data) / 2
    expected = [engine.FIRST_DECODE_FRAMES] if coder == "lm" else [750]
    assert sink.pieces_at_first == expected


def _read_until(proc: subprocess.Popen, nbytes: int, timeout: float) -> bytes:
    """Read proc's stdout until it has given ``nbytes`` (or timeout / EOF)."""
    got = b""
    deadline = time.monotonic() + timeout
    fd = proc.stdout.fileno()
    while len(got) < nbytes and time.monotonic() < deadline:
        ready, _, _ = select.select([fd], [], [], 0.1)
        if ready:
            part = os.read(fd, 1 << 16)
            if not part:
                break
            got += part
    return got


def test_stdin_decode_plays_before_the_stream_has_ended(cli_env, tiny_model, tmp_path):
    """`… | neucomp decompress - - | aplay`: the first chunk's audio comes out while the
    rest of the stream has not even been written, under a header of unknown length."""
    data = _long_ecdc(tmp_path).read_bytes()
    reader = EcdcReader(io.BytesIO(data))
    first_chunk_end = reader.bytes_read + _chunk_sizes(data)[0]
    proc = subprocess.Popen(
        [NEUCOMP, "decompress", "-q", "-", "-"],
        env=cli_env,
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
    )
    try:
        proc.stdin.write(data[:first_chunk_end])
        proc.stdin.flush()
        early = _read_until(proc, 44 + 2 * RATE, timeout=60)  # header + 1 s of audio
        assert proc.poll() is None  # still waiting for the rest of its input
        assert len(early) >= 44 + 2 * RATE, len(early)
        assert early[4:8] == early[40:44] == struct.pack("<I", UNKNOWN_SIZE)
        proc.stdin.write(data[first_chunk_end:])
        proc.stdin.close()
        rest, err = proc.stdout.read(), proc.stderr.read()
        assert proc.wait(timeout=60) == 0, err.decode()
    finally:
        if proc.poll() is None:
            proc.kill()
    pcm = np.frombuffer((early + rest)[44:], "<i2")
    expected, _ = neucomp.decompress(data)
    assert len(pcm) == expected.shape[1] == 25 * RATE


def test_file_decode_plays_before_the_file_is_read(cli_env, tiny_model, tmp_path):
    """With a file IN the header has the exact length (the end record is read first),
    and audio comes out while most of the file is still unread: stdout is not drained,
    so the process stops inside the first chunk's audio. (24 kbps: chunks larger than
    the reader's buffer, so that the file position tells how far it has read.)"""
    path = _long_ecdc(tmp_path, bandwidth=24.0)
    size = path.stat().st_size
    proc = subprocess.Popen(
        [NEUCOMP, "decompress", "-q", str(path), "-"],
        env=cli_env,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
    )
    try:
        head = _read_until(proc, 44, timeout=60)
        assert struct.unpack("<I", head[40:44])[0] == 2 * 25 * RATE  # exact data size
        fdinfo = Path(f"/proc/{proc.pid}/fdinfo")
        if fdinfo.is_dir():
            time.sleep(1.0)  # let it fill the pipe and block
            positions = [
                int(line.split()[1])
                for fd in Path(f"/proc/{proc.pid}/fd").iterdir()
                if os.path.realpath(fd) == str(path.resolve())
                for line in (fdinfo / fd.name).read_text().splitlines()
                if line.startswith("pos:")
            ]
            assert positions and max(positions) < size / 2, (positions, size)
        rest = proc.stdout.read()
        assert proc.wait(timeout=60) == 0, proc.stderr.read().decode()
    finally:
        if proc.poll() is None:
            proc.kill()
    assert len(head + rest) == 44 + 2 * 25 * RATE


def _chunk_sizes(data: bytes) -> list[int]:
    """Bytes of each chunk (head included) of a stream, from the reader's offsets."""
    reader = EcdcReader(io.BytesIO(data))
    sizes, last = [], reader.bytes_read
    for _ in reader.iter_chunks():
        sizes.append(reader.bytes_read - last)
        last = reader.bytes_read
    return sizes


def test_stdout_gets_the_samples_a_file_gets(cli_env, tmp_path):
    """Streamed WAV (file IN: exact header; pipe IN: unknown length) holds exactly the
    samples of the .wav file decompress writes, 16-bit and float, stereo at 44.1 kHz."""
    src = write_audio(tmp_path / "a.wav", make_audio(44100 * 3 // 2, 44100, 2), 44100)
    run = [NEUCOMP, "compress", "-q", str(src), str(tmp_path / "a.ecdc")]
    subprocess.run(run, env=cli_env, check=True)
    for flag, dtype in (([], "int16"), (["--float"], "float32")):
        out = tmp_path / "a_out.wav"
        subprocess.run(
            [NEUCOMP, "decompress", "-q", "-f", *flag, str(tmp_path / "a.ecdc"), str(out)],
            env=cli_env,
            check=True,
        )
        ref, rate = sf.read(str(out), dtype=dtype)
        seekable = subprocess.run(
            [NEUCOMP, "decompress", "-q", *flag, str(tmp_path / "a.ecdc"), "-"],
            env=cli_env,
            capture_output=True,
            check=True,
        ).stdout
        piped = subprocess.run(
            [NEUCOMP, "decompress", "-q", *flag, "-", "-"],
            input=(tmp_path / "a.ecdc").read_bytes(),
            env=cli_env,
            capture_output=True,
            check=True,
        ).stdout
        got, got_rate = sf.read(io.BytesIO(seekable), dtype=dtype)
        assert got_rate == rate == 44100
        np.testing.assert_array_equal(got, ref)
        body = piped[piped.index(b"data") + 8 :]
        np.testing.assert_array_equal(np.frombuffer(body, dtype).reshape(-1, 2), ref)


def test_wav_header_for_known_and_unknown_lengths():
    known = wav_header(48000, 2, "PCM_16", 1000)
    assert len(known) == 44 and struct.unpack("<I", known[40:44])[0] == 4000
    assert struct.unpack("<I", known[4:8])[0] == 36 + 4000
    info = sf.info(io.BytesIO(known + bytes(4000)))
    assert (info.samplerate, info.channels, info.frames, info.subtype) == (48000, 2, 1000, "PCM_16")
    unknown = wav_header(24000, 1, "FLOAT", None)
    assert unknown[4:8] == struct.pack("<I", UNKNOWN_SIZE)
    assert unknown.endswith(b"data" + struct.pack("<I", UNKNOWN_SIZE))
    huge = wav_header(48000, 2, "FLOAT", 2**31)  # 16 GiB: too long for 32-bit sizes
    assert huge.endswith(b"data" + struct.pack("<I", UNKNOWN_SIZE))


def test_stream_writer_holds_its_header_to_the_length_and_flushes():
    class Flushes(io.BytesIO):
        flushes = 0

        def flush(self) -> None:
            Flushes.flushes += 1

    out = Flushes()
    writer = WavStreamWriter(out, 8000, 1, "PCM_16", 10)
    assert out.getvalue() == b""  # nothing before the first audio
    writer.write(np.zeros((1, 4), np.float32))
    assert len(out.getvalue()) == 44 + 8 and Flushes.flushes == 1
    with pytest.raises(OutputError, match="longer than"):
        writer.write(np.zeros((1, 7), np.float32))
    with pytest.raises(OutputError, match="not the 10"):
        writer.close()
    empty = io.BytesIO()
    WavStreamWriter(empty, 8000, 1, "PCM_16", 0).close()
    assert sf.info(io.BytesIO(empty.getvalue())).frames == 0


def test_end_record_is_read_ahead_only_where_the_input_can_seek(tiny_model):
    data = neucomp.compress(make_audio(25 * RATE, RATE), RATE, 1.5)
    fp = io.BytesIO(data)
    reader = EcdcReader(fp)
    where = fp.tell()
    assert reader.peek_trailer() == Trailer(24000 * 25, 25 * RATE)
    assert fp.tell() == where  # put back: the chunks still read from the start
    assert sum(c.num_frames for c in reader.iter_chunks()) == 1875

    class Pipe(io.BytesIO):
        def seekable(self) -> bool:
            return False

    assert EcdcReader(Pipe(data)).peek_trailer() is None
    damaged = bytearray(data)
    damaged[-10] ^= 1  # inside the end record: its checksum fails
    assert EcdcReader(io.BytesIO(bytes(damaged))).peek_trailer() is None
    assert EcdcReader(io.BytesIO(data[:-1])).peek_trailer() is None  # cut short
    assert EcdcReader(io.BytesIO(data + b"x")).peek_trailer() is None  # trailing bytes
    assert EcdcReader(io.BytesIO(data)).peek_trailer(max_chunks=2) is None


# ------------------------------------------------------------------------ progress


def _stderr_on_a_terminal(args: list[str], env: dict, cwd: Path) -> tuple[int, str]:
    """Run neucomp with stderr on a pseudo-terminal (stdin, stdout not); what it shows."""
    import pty

    master, slave = pty.openpty()
    proc = subprocess.Popen(
        [NEUCOMP, *args], env=env, cwd=cwd, stdin=subprocess.DEVNULL,
        stdout=subprocess.DEVNULL, stderr=slave,
    )  # fmt: skip
    os.close(slave)
    shown = b""
    while True:
        try:
            part = os.read(master, 1 << 16)
        except OSError:  # EIO: the other side is closed
            break
        if not part:
            break
        shown += part
    os.close(master)
    return proc.wait(timeout=120), shown.decode(errors="replace")


@pytest.mark.parametrize("coder", ["plain", "lm"])
def test_progress_bar_only_on_a_terminal(request, cli_env, tmp_path, coder):
    """A tqdm bar over seconds of audio (with its total, for an ETA) when stderr is a
    terminal, for compress and decompress; gone before the summary line. A pipe gets
    only the summary; -q silences the bar too."""
    if coder == "lm":
        request.getfixturevalue("tiny_lm")
    write_audio(tmp_path / "a.wav", make_audio(12 * RATE, RATE), RATE)
    flag = ["--coder", coder]
    code, shown = _stderr_on_a_terminal(["compress", *flag, "a.wav"], cli_env, tmp_path)
    assert code == 0, shown
    assert "a.wav:" in shown and "/12.0 s [" in shown and "s/s]" in shown  # the bar
    lines = shown.replace("\r\n", "\n").split("\r")
    assert lines[-1].startswith("a.wav: 12.0 s, 8000 Hz, 1 ch → a.ecdc")  # after the bar
    code, shown = _stderr_on_a_terminal(["decompress", "a.ecdc", "b.wav"], cli_env, tmp_path)
    assert code == 0 and "a.ecdc:" in shown and "/12.0 s [" in shown, shown
    code, shown = _stderr_on_a_terminal(
        ["decompress", "-q", "-f", "a.ecdc", "b.wav"], cli_env, tmp_path
    )
    assert code == 0 and shown == ""
    piped = subprocess.run(
        [NEUCOMP, "decompress", "-f", "a.ecdc", "b.wav"], env=cli_env, cwd=tmp_path,
        capture_output=True, text=True,
    )  # fmt: skip
    assert piped.returncode == 0
    assert piped.stderr.splitlines() == [piped.stderr.strip()]  # the summary line alone
    assert piped.stderr.startswith("a.ecdc: ") and "s/s" not in piped.stderr


@pytest.mark.parametrize("frames", [0, 1, 29, 30, 31, 180, 750, 1000])
def test_decode_pieces_split_a_chunk_exactly(frames):
    sizes = engine.decode_pieces(frames)
    assert sum(sizes) == frames and all(0 < n <= engine.DECODE_FRAMES for n in sizes)
    if frames:
        assert sizes[0] == min(frames, engine.FIRST_DECODE_FRAMES)
    assert all(n == engine.DECODE_FRAMES for n in sizes[1:-1])
