"""neucomp.audio (readers, wavstream, signal, writers): reading every format (files and
pipes), resampling,
channels, writing."""

from __future__ import annotations

import io
import struct
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf
from conftest import make_audio, pipe_wav_bytes, write_audio

from neucomp import audio as A
from neucomp.audio.writers import AudioWriter, atomic_output, output_format
from neucomp.errors import InputError, OutputError, UsageError


class Pipe(io.RawIOBase):
    """A non-seekable stream that returns short reads, like a pipe."""

    def __init__(self, data: bytes, step: int = 777) -> None:
        self._data, self._pos, self._step = data, 0, step

    def readable(self) -> bool:
        return True

    def readinto(self, buf) -> int:
        n = min(len(buf), self._step, len(self._data) - self._pos)
        buf[:n] = self._data[self._pos : self._pos + n]
        self._pos += n
        return n


# (extension, soundfile format, subtype, rate, max error against the source)
FORMATS = [
    ("wav", "WAV", "PCM_U8", 16000, 1 / 64),
    ("wav", "WAV", "PCM_16", 16000, 1e-4),
    ("wav", "WAV", "PCM_24", 16000, 1e-6),
    ("wav", "WAV", "PCM_32", 16000, 1e-6),
    ("wav", "WAV", "FLOAT", 16000, 0),
    ("wav", "WAV", "DOUBLE", 16000, 1e-7),
    ("wav", "WAVEX", "PCM_16", 16000, 1e-4),
    ("flac", "FLAC", "PCM_16", 16000, 1e-4),
    ("aiff", "AIFF", "PCM_16", 16000, 1e-4),
    ("ogg", "OGG", "VORBIS", 16000, None),
    ("opus", "OGG", "OPUS", 48000, None),
    ("mp3", "MP3", "MPEG_LAYER_III", 16000, None),
]


@pytest.mark.parametrize(("ext", "fmt", "subtype", "rate", "tol"), FORMATS)
def test_reads_every_format_from_a_file(tmp_path, ext, fmt, subtype, rate, tol):
    x = make_audio(rate // 2, rate, channels=2)
    path = write_audio(tmp_path / f"x.{ext}", x, rate, format=fmt, subtype=subtype)
    y, sr = A.read_audio(path)
    assert sr == rate and y.dtype == np.float32 and y.shape[0] == 2
    if tol is None:  # lossy codecs: length within a frame's worth of padding
        assert abs(y.shape[1] - x.shape[1]) < 2000
    else:
        assert y.shape == x.shape
        assert np.max(np.abs(y - x)) <= tol + 1e-7


@pytest.mark.parametrize(("ext", "fmt", "subtype", "rate", "tol"), FORMATS)
def test_reads_every_format_from_a_pipe(tmp_path, ext, fmt, subtype, rate, tol):
    x = make_audio(rate // 4, rate, channels=1)
    path = write_audio(tmp_path / f"x.{ext}", x, rate, format=fmt, subtype=subtype)
    expected, sr = A.read_audio(path)
    with A.open_audio(Pipe(path.read_bytes()), name="<stdin>") as reader:
        got = np.concatenate(list(reader.blocks(1000)), axis=1)
        assert reader.info.sample_rate == sr
    np.testing.assert_array_equal(got, expected)


@pytest.mark.parametrize("size_field", [0xFFFFFFFF, 0])
@pytest.mark.parametrize("subtype", ["PCM_U8", "PCM_16", "PCM_24", "PCM_32", "FLOAT", "DOUBLE"])
def test_wav_stream_without_sizes(subtype, size_field):
    x = make_audio(3001, 8000, channels=3)
    buf = io.BytesIO()
    sf.write(buf, x.T, 8000, format="WAV", subtype=subtype)
    data = bytearray(buf.getvalue())
    start = data.index(b"data")
    expected, _ = sf.read(io.BytesIO(bytes(data)), dtype="float32", always_2d=True)
    data[4:8] = struct.pack("<I", size_field)
    data[start + 4 : start + 8] = struct.pack("<I", size_field)
    with A.open_audio(Pipe(bytes(data))) as reader:
        assert reader.info.frames is None
        assert (reader.info.sample_rate, reader.info.channels) == (8000, 3)
        got = np.concatenate(list(reader.blocks(512)), axis=1)
    np.testing.assert_array_equal(got, expected.T)


def test_wav_stream_skips_extra_chunks_and_rejects_sizeless_ones():
    x = make_audio(500, 8000)
    data = pipe_wav_bytes(x, 8000, size_field=1000)
    extra = b"LIST" + struct.pack("<I", 5) + b"abcde\0"  # odd size: one pad byte
    with_list = data[:36] + extra + data[36:]
    y, _ = A.read_audio(Pipe(with_list))
    assert y.shape == x.shape and np.max(np.abs(y - x)) < 1e-4
    sizeless = data[:36] + b"LIST" + b"\xff" * 4 + data[36:]
    with pytest.raises(InputError, match="has no length"):
        A.read_audio(Pipe(sizeless))


def test_ffmpeg_style_rf64_pipe_header():
    """RF64 with ds64, an 18-byte fmt (cbSize), LIST/INFO and a sizeless data chunk."""
    x = make_audio(700, 44100, channels=2)
    pcm = (np.clip(x.T, -1, 1) * 32767).astype("<i2").tobytes()
    fmt = struct.pack("<HHIIHHH", 1, 2, 44100, 44100 * 4, 4, 16, 0)
    info = b"INFOISFT" + struct.pack("<I", 13) + b"Lavf60.3.100\0\0"
    data = (
        b"RF64" + b"\xff" * 4 + b"WAVE"
        + b"ds64" + struct.pack("<I", 28) + bytes(28)
        + b"fmt " + struct.pack("<I", len(fmt)) + fmt
        + b"LIST" + struct.pack("<I", len(info)) + info
        + b"data" + b"\xff" * 4 + pcm
    )  # fmt: skip
    y, sr = A.read_audio(Pipe(data))
    assert sr == 44100 and y.shape == x.shape
    assert np.max(np.abs(y - x)) < 1e-4


def test_wav_file_with_zero_sizes_is_read_to_the_end(tmp_path):
    x = make_audio(1234, 16000)
    path = tmp_path / "dump.wav"
    path.write_bytes(pipe_wav_bytes(x, 16000, size_field=0))
    y, sr = A.read_audio(path)
    assert sr == 16000 and y.shape == x.shape
    assert np.max(np.abs(y - x)) < 1e-4


def test_wav_stream_cut_mid_frame_drops_the_torn_frame():
    x = make_audio(100, 8000, channels=2)
    data = pipe_wav_bytes(x, 8000)[:-3]  # 16-bit stereo frames are 4 bytes
    y, _ = A.read_audio(Pipe(data))
    assert y.shape == (2, 99)


@pytest.mark.parametrize(
    ("content", "message"),
    [
        (b"", "contains no audio samples"),
        (b"this is a text file, not audio\n" * 10, "not an audio file"),
        (pipe_wav_bytes(np.zeros((1, 0), np.float32), 8000, 0), "no audio samples"),
    ],
)
def test_bad_inputs_raise_input_error(tmp_path, content, message):
    path = tmp_path / "bad.wav"
    path.write_bytes(content)
    with pytest.raises(InputError, match=message):
        A.read_audio(path)
    with pytest.raises(InputError, match=message):
        A.read_audio(Pipe(content))


def test_missing_file_and_folder(tmp_path):
    with pytest.raises(InputError, match="no such file: .*nope.wav"):
        A.open_audio(tmp_path / "nope.wav")
    with pytest.raises(InputError, match="is a folder"):
        A.open_audio(tmp_path)


def test_unsupported_wav_encoding_is_a_clean_error():
    buf = io.BytesIO()
    sf.write(buf, np.zeros(100), 8000, format="WAV", subtype="ULAW")
    with pytest.raises(InputError, match="unsupported WAV encoding"):
        A.open_audio(Pipe(buf.getvalue()))


@pytest.mark.parametrize(("rate_in", "rate_out"), [(44100, 24000), (8000, 24000), (24000, 24000)])
def test_streaming_resampler_matches_one_shot(rate_in, rate_out):
    x = make_audio(rate_in, rate_in, channels=2)
    whole = A.Resampler(rate_in, rate_out, 2).push(x, last=True)
    r = A.Resampler(rate_in, rate_out, 2)
    parts = [r.push(x[:, i : i + 999]) for i in range(0, x.shape[1], 999)] + [r.flush()]
    pieces = np.concatenate(parts, axis=1)
    assert whole.shape == pieces.shape == (2, rate_out)
    assert np.max(np.abs(whole - pieces)) < 1e-4


def test_channel_mapping_rules():
    six = np.arange(12, dtype=np.float32).reshape(6, 2)
    np.testing.assert_allclose(A.to_model_channels(six, 1), six.mean(0, keepdims=True))
    stereo = A.to_model_channels(six, 2)
    np.testing.assert_allclose(stereo, [six[0::2].mean(0), six[1::2].mean(0)])
    mono = six[:1]
    np.testing.assert_array_equal(A.to_model_channels(mono, 2), np.concatenate([mono, mono]))
    # Back out: a mono model's signal goes to every channel; stereo alternates L, R.
    assert np.all(A.from_model_channels(mono, 6) == mono)
    out = A.from_model_channels(six[:2], 5)
    np.testing.assert_array_equal(out, six[[0, 1, 0, 1, 0]])
    np.testing.assert_allclose(A.from_model_channels(six[:2], 1), six[:2].mean(0, keepdims=True))


def test_fit_length():
    x = np.ones((2, 5), np.float32)
    assert A.fit_length(x, 3).shape == (2, 3)
    padded = A.fit_length(x, 8)
    assert padded.shape == (2, 8) and np.all(padded[:, 5:] == 0)


def test_output_format_from_extension():
    assert output_format("a.wav") == ("WAV", "PCM_16")
    assert output_format("a.FLAC") == ("FLAC", "PCM_16")
    assert output_format("a.wav", float_wav=True) == ("WAV", "FLOAT")
    assert output_format("-") == ("WAV", "PCM_16")
    with pytest.raises(UsageError, match="unsupported output format '.mp3'"):
        output_format("a.mp3")
    with pytest.raises(UsageError, match="--float"):
        output_format("a.flac", float_wav=True)


def test_writer_clips_integer_formats(tmp_path):
    path = tmp_path / "loud.wav"
    with atomic_output(path) as fp:
        w = AudioWriter(fp, 8000, 1, "WAV", "PCM_16")
        w.write(np.array([[2.0, -2.0, 0.5]], np.float32))
        w.close()
    y, _ = sf.read(path)
    np.testing.assert_allclose(y, [32767 / 32768, -1.0, 0.5], atol=1e-4)


def test_atomic_output_leaves_nothing_on_failure(tmp_path):
    target = tmp_path / "out.wav"
    with pytest.raises(KeyboardInterrupt), atomic_output(target) as fp:
        fp.write(b"partial")
        raise KeyboardInterrupt
    assert list(tmp_path.iterdir()) == []


def test_atomic_output_refuses_existing_and_missing_folder(tmp_path):
    target = tmp_path / "out.wav"
    target.write_bytes(b"old")
    with pytest.raises(OutputError, match="already exists"), atomic_output(target):
        pass
    with atomic_output(target, force=True) as fp:
        fp.write(b"new")
    assert target.read_bytes() == b"new"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["out.wav"]
    with (
        pytest.raises(OutputError, match="does not exist"),
        atomic_output(tmp_path / "no" / "x.wav"),
    ):
        pass


def test_one_resample_for_mono_and_multichannel_signals() -> None:
    x = make_audio(4800, 48000, channels=2)
    y = A.resample(x, 48000, 24000)
    assert y.shape == (2, 2400) and y.dtype == np.float32
    np.testing.assert_array_equal(A.resample(x[0], 48000, 24000), y[0])  # [T] the same way
    assert A.resample(x, 24000, 24000) is x
    np.testing.assert_array_equal(A.to_mono(x), x.mean(axis=0))
    mono = x[0]
    assert A.to_mono(mono) is mono


def test_load_reference_is_mono_at_the_asked_rate(tmp_path: Path) -> None:
    x = make_audio(44100, 44100, channels=2)
    write_audio(tmp_path / "a.wav", x, 44100)
    ref = A.load_reference(tmp_path / "a.wav", 16000)
    assert ref.dtype == np.float32 and ref.shape == (16000,)


def test_atomic_write_leaves_the_file_or_nothing(tmp_path: Path) -> None:
    from neucomp.audio.writers import atomic_write

    target = tmp_path / "table.tsv"
    with atomic_write(target, text=True) as f:
        f.write("a\tb\n")
    assert target.read_text() == "a\tb\n"
    with pytest.raises(RuntimeError), atomic_write(target) as fp:
        fp.write(b"half")
        raise RuntimeError("interrupted")
    assert target.read_text() == "a\tb\n"  # untouched
    assert [p.name for p in tmp_path.iterdir()] == ["table.tsv"]  # no temp file left


@pytest.mark.parametrize("suffix", [".wav", ".flac"])
def test_a_signal_inside_libsndfiles_read_callback_is_raised_not_lost(
    tmp_path, monkeypatch, capfd, suffix
) -> None:
    """SIGTERM's Terminated raised while libsndfile is calling back into Python used to
    be printed ("Exception ignored from cffi callback") and dropped: the batch worker
    then carried on. It must come out of the read as Terminated, with nothing printed."""
    from neucomp.audio import readers
    from neucomp.errors import Terminated

    path = write_audio(tmp_path / f"in{suffix}", make_audio(200_000), 24000)
    reader = A.open_audio(path)  # opened normally; the signal comes during the reads
    reader.close()

    class SignalledFile(io.FileIO):
        reads = 0

        def read(self, size: int = -1) -> bytes:
            SignalledFile.reads += 1
            if SignalledFile.reads == 6:
                raise Terminated(15)
            return super().read(size)

    monkeypatch.setattr(readers, "open", lambda p, mode: SignalledFile(p, "r"), raising=False)
    with pytest.raises(Terminated):
        reader = A.open_audio(path)
        for _ in reader.blocks(1024):
            pass
    assert SignalledFile.reads >= 6
    assert "Exception ignored" not in capfd.readouterr().err
