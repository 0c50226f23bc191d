"""The 48 kHz stereo model in the product (issue 15): `--model 48khz` / `--hq` /
`model=` through the API, the CLI, pipes and batch; the header, `info`, rates, channel
counts and odd lengths; wrong models refused in one line.

Everything runs on the tiny random-weight model built from configs/codec48.json
(conftest.hq_model_dir), installed beside the tiny 24 kHz default, so these tests hold
for the real weights once `models/neucomp_48khz.pt` is dropped in.
"""

from __future__ import annotations

import io
import json
import math
import subprocess
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf
import torch
from click.testing import CliRunner
from conftest import BIN, HQ_NAME, build_hq_model_file, make_audio, pipe_wav_bytes, write_audio

import neucomp
from neucomp import level
from neucomp.cli import main
from neucomp.coding.packing import unpack_codes
from neucomp.container import END_RECORD_SIZE, EcdcReader, chunk_overhead
from neucomp.errors import FormatError, ModelError, UsageError

NEUCOMP = str(BIN / "neucomp")
RATE, HOP = 48000, 640
CHUNK = 750 * HOP  # model-rate samples per container chunk (10 s)
HQ_CODEBOOKS = {3.0: 4, 6.0: 8, 12.0: 16, 24.0: 32}


def stereo(frames: int, rate: int = RATE, seed: int = 0) -> np.ndarray:
    """Two different channels (a tone each, plus noise)."""
    return make_audio(frames, rate, channels=2, seed=seed)


def header(data: bytes):
    return EcdcReader(io.BytesIO(data)).header


def chunk_frames(data: bytes) -> list[int]:
    return [c.num_frames for c in EcdcReader(io.BytesIO(data)).iter_chunks()]


@pytest.fixture
def run(hq_model):
    runner = CliRunner()

    def invoke(*args):
        return runner.invoke(main, [str(a) for a in args], catch_exceptions=False)

    return invoke


def one_line_error(result, code: int, *patterns: str) -> str:
    lines = result.stderr.strip().splitlines()
    assert result.exit_code == code, result.stderr
    assert len(lines) == 1 and lines[0].startswith("neucomp: error: "), result.stderr
    for pattern in patterns:
        assert pattern in lines[0], lines[0]
    return lines[0]


# ---------------------------------------------------------------------------- the API


@pytest.mark.parametrize("bandwidth", sorted(HQ_CODEBOOKS))
def test_stereo_round_trip_at_every_bandwidth(hq_model, bandwidth):
    x = stereo(RATE)
    data = neucomp.compress(x, RATE, bandwidth, model="48khz", coder="plain")
    h = header(data)
    k = HQ_CODEBOOKS[bandwidth]
    assert (h.model_name, h.model_sample_rate, h.model_channels) == (HQ_NAME, 48000, 2)
    assert (h.hop_length, h.num_codebooks, h.frame_rate) == (HOP, k, 75.0)
    assert (h.original_sample_rate, h.original_channels) == (RATE, 2)
    # 6 kbps is both channels together: K × 10 bits per frame, 75 frames per second.
    reader = EcdcReader(io.BytesIO(data))
    head = reader.bytes_read
    chunks = [c.num_frames for c in reader.iter_chunks()]
    sizes = [math.ceil(n * k * 10 / 8) for n in chunks]
    payload = sum(chunk_overhead(n, size) + size for n, size in zip(chunks, sizes, strict=True))
    assert chunks == [75] and len(data) == head + payload + END_RECORD_SIZE
    assert math.ceil(75 * k * 10 / 8) * 8 / 1000 == bandwidth  # 1 s of codes
    y, sr = neucomp.decompress(data)
    assert sr == RATE and y.shape == x.shape and np.all(np.isfinite(y))
    assert not np.array_equal(y[0], y[1])  # two channels, coded jointly, both kept


def test_the_stream_is_what_the_stereo_model_decodes(hq_model):
    """Engine, levelling and streaming add nothing at 48 kHz: the output is
    decode(codes) with the stored gain divided out, both channels."""
    x = stereo(2 * RATE + 100)
    data = neucomp.compress(x, RATE, 6.0, model="48khz", coder="plain")
    (chunk,) = EcdcReader(io.BytesIO(data)).iter_chunks()
    assert chunk.gain_db == level.chunk_gain_db(x) != 0
    codes = unpack_codes(chunk.payload, 8, chunk.num_frames)
    factor = 10 ** (chunk.gain_db / 20)
    with torch.inference_mode():
        ref_codes = hq_model.encode(torch.from_numpy(x * factor)[None], 8)[0].numpy()
        ref = hq_model.decode(torch.from_numpy(codes)[None])[0].numpy()[:, : x.shape[1]]
    assert np.mean(codes == ref_codes) > 0.99  # streaming = whole signal, up to rounding
    y, _ = neucomp.decompress(data)
    np.testing.assert_allclose(y, ref / factor, atol=1e-4)


@pytest.mark.parametrize("name", ["48khz", "48kHz", HQ_NAME])
def test_the_model_by_alias_full_name_or_path(hq_model, hq_model_dir, name):
    x = stereo(RATE // 10)
    expected = neucomp.compress(x, RATE, 6.0, model=str(hq_model_dir / f"{HQ_NAME}.pt"))
    assert neucomp.compress(x, RATE, 6.0, model=name) == expected
    assert header(expected).model_name == HQ_NAME


@pytest.mark.parametrize(
    ("rate", "channels"),
    [(44100, 2), (48000, 1), (96000, 2), (96000, 1), (22050, 2), (48000, 6)],
)
def test_inputs_keep_their_rate_and_channel_count(hq_model, rate, channels):
    x = make_audio(rate // 3 + 7, rate, channels=channels)
    data = neucomp.compress(x, rate, 6.0, model="48khz")
    h = header(data)
    assert (h.model_channels, h.original_sample_rate, h.original_channels) == (2, rate, channels)
    y, sr = neucomp.decompress(data)
    assert (sr, y.shape) == (rate, x.shape)


def test_mono_is_coded_as_stereo_and_restored_as_mono(hq_model):
    """48 kHz mono: L = R goes in, the mean of the decoded sides comes out."""
    x = make_audio(RATE // 2, RATE, channels=1)
    mono = neucomp.compress(x, RATE, 6.0, model="48khz", coder="plain")
    both = neucomp.compress(np.concatenate([x, x]), RATE, 6.0, model="48khz", coder="plain")
    # The same codes as the stereo file with two equal channels: only the header differs.
    assert header(mono).original_channels == 1 and header(both).original_channels == 2
    assert [c.payload for c in EcdcReader(io.BytesIO(mono)).iter_chunks()] == [
        c.payload for c in EcdcReader(io.BytesIO(both)).iter_chunks()
    ]
    y, _ = neucomp.decompress(mono)
    y2, _ = neucomp.decompress(both)
    assert y.shape == (1, x.shape[1])
    np.testing.assert_allclose(y[0], y2.mean(axis=0), atol=1e-6)


def test_stereo_into_the_24khz_model_is_unchanged(hq_model):
    """The default model still mixes down and copies the channel back."""
    x = stereo(RATE // 4)
    data = neucomp.compress(x, RATE, 6.0)
    h = header(data)
    assert (h.model_name, h.model_channels, h.original_channels) == ("neucomp_24khz", 1, 2)
    y, _ = neucomp.decompress(data)
    assert y.shape == x.shape and np.array_equal(y[0], y[1])


@pytest.mark.parametrize(
    "frames", [1, HOP - 1, HOP, HOP + 1, CHUNK - 1, CHUNK, CHUNK + 1], ids=lambda n: f"{n}"
)
def test_odd_lengths(hq_model, frames):
    x = stereo(frames)
    data = neucomp.compress(x, RATE, 3.0, model="48khz", coder="plain")
    frames_total = math.ceil(frames / HOP)
    assert sum(chunk_frames(data)) == frames_total
    if frames > CHUNK:
        assert chunk_frames(data) == [750, frames_total - 750]
    y, sr = neucomp.decompress(data)
    assert (sr, y.shape) == (RATE, (2, frames))


def test_empty_input_is_refused(hq_model):
    with pytest.raises(Exception, match="no audio samples"):
        neucomp.compress(np.zeros((2, 0), np.float32), RATE, 6.0, model="48khz")


def test_a_bandwidth_the_model_does_not_offer(hq_model):
    with pytest.raises(UsageError, match=r"1\.5 kbps for model 'neucomp_48khz' \(it offers 3, 6"):
        neucomp.compress(stereo(100), RATE, 1.5, model="48khz")


def test_the_file_needs_the_weights_that_made_it(hq_model, hq_model_dir, tmp_path):
    data = neucomp.compress(stereo(RATE // 10), RATE, 6.0, model="48khz")
    with pytest.raises(ModelError, match="different weights of model 'neucomp_48khz'"):
        neucomp.decompress(data, model="24khz")
    other = build_hq_model_file(tmp_path, seed=1)  # the same design, other weights
    with pytest.raises(ModelError, match="different weights of model 'neucomp_48khz'"):
        neucomp.decompress(data, model=str(other))


def test_a_header_that_does_not_fit_the_model(hq_model):
    from conftest import reseal

    data = neucomp.compress(stereo(RATE // 10), RATE, 6.0, model="48khz", coder="plain")
    for change in ({"model_channels": 1}, {"hop_length": 1280}, {"codebook_size": 512}):
        with pytest.raises(FormatError, match="does not fit model 'neucomp_48khz'"):
            neucomp.decompress(reseal(data, **change))


# ---------------------------------------------------------------------------- the CLI


def test_cli_compress_with_the_model_and_info(run, tmp_path):
    song = write_audio(tmp_path / "song.flac", stereo(44100 // 2, 44100), 44100)
    for i, option in enumerate((["--model", "48khz"], ["--hq"], ["--model", HQ_NAME])):
        out = tmp_path / f"song{i}.ecdc"
        r = run("compress", *option, song, out)
        assert r.exit_code == 0, r.stderr
        assert "song.flac: 0.5 s, 44100 Hz, 2 ch → " in r.stderr
    assert len({(tmp_path / f"song{i}.ecdc").read_bytes() for i in range(3)}) == 1
    r = run("info", "--json", tmp_path / "song0.ecdc")
    fields = json.loads(r.stdout)
    assert (fields["model_name"], fields["model_sample_rate"], fields["model_channels"]) == (
        HQ_NAME,
        48000,
        2,
    )
    assert (fields["hop_length"], fields["frame_rate"], fields["num_codebooks"]) == (640, 75.0, 8)
    assert (fields["original_sample_rate"], fields["original_channels"]) == (44100, 2)
    back = tmp_path / "back.wav"
    assert run("decompress", "-q", tmp_path / "song0.ecdc", back).exit_code == 0
    info = sf.info(str(back))
    assert (info.samplerate, info.channels, info.frames) == (44100, 2, 22050)


def test_cli_errors_name_what_is_offered(run, tmp_path):
    song = write_audio(tmp_path / "song.wav", stereo(RATE // 10), RATE)
    r = run("compress", "--hq", "-b", "1.5", song, tmp_path / "a.ecdc")
    one_line_error(r, 6, "unsupported bandwidth 1.5 kbps", "it offers 3, 6, 12, 24")
    r = run("compress", "--model", "96khz", song, tmp_path / "a.ecdc")
    one_line_error(r, 5, "'96khz' is not installed", "24khz (24 kHz mono)", "48khz (48 kHz stereo)")
    r = run("compress", "--hq", "--model", "24khz", song, tmp_path / "a.ecdc")
    one_line_error(r, 2, "--hq is --model 48khz")
    assert not (tmp_path / "a.ecdc").exists()


def test_cli_without_the_48khz_weights(model_dir, tmp_path, monkeypatch):
    """Before the weights ship: one line saying which file is missing."""
    monkeypatch.setenv("NEUCOMP_MODEL_DIR", str(model_dir))  # the 24 kHz model only
    song = write_audio(tmp_path / "song.wav", stereo(RATE // 10), RATE)
    r = CliRunner().invoke(main, ["compress", "--hq", str(song), str(tmp_path / "a.ecdc")])
    one_line_error(r, 5, "model 'neucomp_48khz' is not installed", "neucomp_48khz.pt is missing")


def sh(command: str, env: dict, cwd: Path) -> subprocess.CompletedProcess:
    return subprocess.run(
        ["bash", "-o", "pipefail", "-c", command], env=env, cwd=cwd, capture_output=True
    )


def test_pipes_with_the_model(hq_cli_env, tmp_path):
    x = stereo(RATE + 123)
    (tmp_path / "pipe.wav").write_bytes(pipe_wav_bytes(x, RATE))
    p = sh(
        f"cat pipe.wav | {NEUCOMP} compress --model 48khz -b 12 - - | tee s.ecdc"
        f" | {NEUCOMP} decompress - out.wav",
        hq_cli_env,
        tmp_path,
    )
    assert p.returncode == 0, p.stderr.decode()
    info = sf.info(str(tmp_path / "out.wav"))
    assert (info.samplerate, info.channels, info.frames) == (RATE, 2, RATE + 123)
    h = header((tmp_path / "s.ecdc").read_bytes())
    assert (h.model_name, h.num_codebooks) == (HQ_NAME, 16)


def test_batch_with_the_model(hq_cli_env, tmp_path):
    src = tmp_path / "music"
    (src / "sub").mkdir(parents=True)
    write_audio(src / "a.flac", stereo(44100 // 3, 44100), 44100)
    write_audio(src / "sub" / "b.wav", make_audio(RATE // 3, RATE, channels=1), RATE)
    write_audio(src / "sub" / "c.wav", stereo(96000 // 4, 96000), 96000)
    p = sh(f"{NEUCOMP} compress -q --hq --jobs 2 music out", hq_cli_env, tmp_path)
    assert p.returncode == 0 and p.stderr == b"", p.stderr.decode()
    outs = sorted((tmp_path / "out").rglob("*.ecdc"))
    assert [o.relative_to(tmp_path / "out").as_posix() for o in outs] == [
        "a.ecdc",
        "sub/b.ecdc",
        "sub/c.ecdc",
    ]
    assert {header(o.read_bytes()).model_name for o in outs} == {HQ_NAME}
    p = sh(f"{NEUCOMP} decompress -q out back", hq_cli_env, tmp_path)
    assert p.returncode == 0, p.stderr.decode()
    shapes = {
        f: (i.samplerate, i.channels, i.frames)
        for f in ("a", "sub/b", "sub/c")
        for i in [sf.info(str(tmp_path / "back" / f"{f}.wav"))]
    }
    assert shapes == {
        "a": (44100, 2, 44100 // 3),
        "sub/b": (RATE, 1, RATE // 3),
        "sub/c": (96000, 2, 96000 // 4),
    }
    p = sh(f"{NEUCOMP} compress -q --hq -b 1.5 music out2", hq_cli_env, tmp_path)
    err = p.stderr.decode()
    assert p.returncode == 6 and err.count("\n") == 1 and "it offers 3, 6, 12, 24" in err, err
