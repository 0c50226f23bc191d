"""neucomp.engine and the Python API: exact round trips, sizes, chunking, model checks."""

from __future__ import annotations

import io
import math

import numpy as np
import pytest
import torch
from conftest import build_model_file, make_audio, reseal

import neucomp
from neucomp import audio as A
from neucomp import engine, level
from neucomp.coding.packing import PlainCoder, unpack_codes
from neucomp.container import END_RECORD_SIZE, EcdcReader, chunk_overhead
from neucomp.errors import CorruptDataError, InputError, ModelError, UsageError

HOP, RATE = 320, 24000
BANDWIDTH_CODEBOOKS = {1.5: 2, 3.0: 4, 6.0: 8, 12.0: 16, 24.0: 32}


def expected_size(data: bytes, frames: int, k: int) -> int:
    """Header + per-chunk head and check + K×10 bits per frame per chunk + end record."""
    reader = EcdcReader(io.BytesIO(data))
    header = reader.bytes_read
    chunks = [c.num_frames for c in reader.iter_chunks()]
    assert sum(chunks) == frames
    return (
        header
        + sum(
            chunk_overhead(n, math.ceil(n * k * 10 / 8)) + math.ceil(n * k * 10 / 8) for n in chunks
        )
        + END_RECORD_SIZE
    )


@pytest.mark.parametrize("bandwidth", sorted(BANDWIDTH_CODEBOOKS))
def test_round_trip_at_every_bandwidth(tiny_model, bandwidth):
    x = make_audio(RATE, RATE)
    data = neucomp.compress(x, RATE, bandwidth)
    k = BANDWIDTH_CODEBOOKS[bandwidth]
    assert len(data) == expected_size(data, frames=75, k=k)
    reader = EcdcReader(io.BytesIO(data))
    assert reader.header.num_codebooks == k
    y, sr = neucomp.decompress(data)
    assert sr == RATE and y.shape == x.shape and y.dtype == np.float32
    assert np.all(np.isfinite(y))


@pytest.mark.parametrize("frames", [1, 319, 320, 321, 10 * RATE])
def test_exact_lengths(tiny_model, frames):
    x = make_audio(frames, RATE)
    data = neucomp.compress(x, RATE, 1.5)
    n_frames = math.ceil(frames / HOP)
    assert len(data) == expected_size(data, frames=n_frames, k=2)
    y, sr = neucomp.decompress(data)
    assert (sr, y.shape) == (RATE, (1, frames))


@pytest.mark.parametrize("rate", [8000, 16000, 22050, 44100, 48000, 96000])
def test_original_rate_is_restored(tiny_model, rate):
    for frames in (1, rate // 3 + 7):
        x = make_audio(frames, rate)
        y, sr = neucomp.decompress(neucomp.compress(x, rate, 3.0))
        assert (sr, y.shape) == (rate, x.shape)


@pytest.mark.parametrize("channels", [1, 2, 6])
def test_original_channel_count_is_restored(tiny_model, channels):
    x = make_audio(5000, 16000, channels=channels)
    y, sr = neucomp.decompress(neucomp.compress(x, 16000))
    assert (sr, y.shape) == (16000, (channels, 5000))
    # A mono model: every output channel carries the same decoded signal.
    assert all(np.array_equal(y[0], y[c]) for c in range(channels))


def test_output_is_what_the_model_decodes(tiny_model):
    """The pipeline adds nothing of its own: at the model's rate it is decode(codes)."""
    x = make_audio(2 * RATE + 100, RATE)
    data = neucomp.compress(x, RATE, 6.0)
    reader = EcdcReader(io.BytesIO(data))
    codes = np.concatenate(
        [unpack_codes(c.payload, 8, c.num_frames) for c in reader.iter_chunks()], axis=1
    )
    # One chunk: the engine levels it by the gain it stores, and divides that out again.
    (chunk,) = EcdcReader(io.BytesIO(data)).iter_chunks()
    assert chunk.gain_db == level.chunk_gain_db(x) != 0
    factor = 10 ** (chunk.gain_db / 20)
    with torch.inference_mode():
        ref_codes = tiny_model.encode(torch.from_numpy(x * factor)[None], 8)[0].numpy()
        ref = tiny_model.decode(torch.from_numpy(codes)[None])[0].numpy()[:, : x.shape[1]]
    assert np.mean(codes == ref_codes) > 0.99  # streaming = whole-signal, up to rounding
    y, _ = neucomp.decompress(data, postfilter=False)
    np.testing.assert_allclose(y, ref / factor, atol=1e-4)


def test_the_postfilter_when_asked_filters_the_decoded_audio(tiny_model):
    from neucomp.audio.postfilter import FormantPostfilter

    x = make_audio(2 * RATE + 100, RATE)
    data = neucomp.compress(x, RATE, 6.0)
    plain, _ = neucomp.decompress(data, postfilter=False)
    assert np.array_equal(plain, neucomp.decompress(data)[0])  # tones: not speech, so off
    filtered, _ = neucomp.decompress(data, postfilter=True)
    # at the model's rate it is the postfilter run over what the decoder gave
    np.testing.assert_allclose(filtered, FormantPostfilter(RATE).process(plain), atol=1e-5)
    assert not np.allclose(filtered, plain, atol=1e-3)


def _speech_then_chord() -> np.ndarray:
    """10 s of the sample's speech, then 10 s of a sustained chord, at 24 kHz."""
    from pathlib import Path

    import soundfile as sf
    import soxr

    sample = Path(__file__).parent / "data" / "sample.flac"
    audio, rate = sf.read(sample, dtype="float32", always_2d=True)
    speech = soxr.resample(audio.mean(axis=1), rate, RATE)[: 10 * RATE]
    t = np.arange(10 * RATE) / RATE
    chord = sum(0.05 * np.sin(2 * np.pi * f * t) for f in (220, 277, 330, 440))
    return np.concatenate([speech, chord]).astype(np.float32)[None]


def test_speech_flags_follow_the_content_and_turn_the_postfilter_on(tiny_model):
    """Each chunk's flag says what the encoder heard (or was told); by default the decoder
    postfilters the flagged chunks and leaves the others as they were decoded."""
    x = _speech_then_chord()
    flags = {}
    decoded = {}
    for content in ("auto", "speech", "other"):
        data = neucomp.compress(x, RATE, 6.0, content=content)
        flags[content] = [c.speech for c in EcdcReader(io.BytesIO(data)).iter_chunks()]
        decoded[content] = data
    assert flags == {"auto": [True, False], "speech": [True, True], "other": [False, False]}
    plain, _ = neucomp.decompress(decoded["auto"], postfilter=False)
    forced, _ = neucomp.decompress(decoded["auto"], postfilter=True)
    default, _ = neucomp.decompress(decoded["auto"])
    head, fade = slice(0, 10 * RATE), RATE // 100
    np.testing.assert_allclose(default[:, head], forced[:, head], atol=1e-6)
    np.testing.assert_array_equal(default[:, 10 * RATE + fade :], plain[:, 10 * RATE + fade :])
    assert not np.allclose(default[:, head], plain[:, head], atol=1e-3)
    # content speech / other: the default is the postfilter everywhere / nowhere
    np.testing.assert_allclose(
        neucomp.decompress(decoded["speech"])[0],
        neucomp.decompress(decoded["speech"], postfilter=True)[0],
        atol=1e-6,
    )
    np.testing.assert_array_equal(
        neucomp.decompress(decoded["other"])[0],
        neucomp.decompress(decoded["other"], postfilter=False)[0],
    )
    with pytest.raises(UsageError, match="unknown content 'music'"):
        neucomp.compress(x, RATE, 6.0, content="music")


def test_long_input_is_split_into_chunks_and_streamed(tiny_model):
    """25 s → chunks of 750 frames, written while the input is still being read."""
    rate = 8000
    x = make_audio(25 * rate, rate)
    out = io.BytesIO()
    seen_sizes = []

    class Watch(A.ArrayReader):
        def blocks(self, block_frames=A.BLOCK_FRAMES):
            for block in super().blocks(rate):  # 1 s blocks
                seen_sizes.append(out.tell())
                yield block

    n_q = tiny_model.config.n_codebooks_for(1.5)
    result = engine.compress_stream(Watch(x, rate), out, tiny_model, n_q, PlainCoder())
    chunks = [c.num_frames for c in EcdcReader(io.BytesIO(out.getvalue())).iter_chunks()]
    assert chunks == [750, 750, 375]
    assert result.chunks == 3 and result.samples == x.shape[1]
    assert seen_sizes[12] > 1875  # the first chunk was out after ~10 s of input, not at the end
    y, sr = neucomp.decompress(out.getvalue())
    assert (sr, y.shape) == (rate, x.shape)


def test_salvage_replaces_a_damaged_chunk_with_silence(tiny_model):
    x = make_audio(25 * RATE // 10, RATE)  # 2.5 s
    x = np.tile(x, 10)  # 25 s → three chunks
    data = bytearray(neucomp.compress(x, RATE, 1.5))
    reader = EcdcReader(io.BytesIO(bytes(data)))
    header_size = reader.bytes_read
    first_chunk = chunk_overhead(750, 1875) + 1875
    data[header_size + first_chunk + chunk_overhead(750, 1875) + 5] ^= (
        0x40  # inside chunk 1's payload
    )
    with pytest.raises(CorruptDataError, match="chunk 1"):
        neucomp.decompress(bytes(data))
    for postfilter in (False, True):  # the postfilter must not ring into the silence
        with pytest.warns(UserWarning, match="chunk 1"):
            y, sr = neucomp.decompress(bytes(data), salvage=True, postfilter=postfilter)
        assert y.shape == x.shape
        assert np.all(y[:, 10 * RATE : 20 * RATE] == 0)
        assert np.any(y[:, : 10 * RATE] != 0) and np.any(y[:, 20 * RATE :] != 0)


def test_unknown_bandwidth(tiny_model):
    with pytest.raises(UsageError, match="unsupported bandwidth 5 kbps"):
        neucomp.compress(make_audio(100), RATE, 5.0)


def test_empty_and_malformed_arrays(tiny_model):
    with pytest.raises(InputError, match="no audio samples"):
        neucomp.compress(np.zeros((2, 0), np.float32), RATE)
    with pytest.raises(InputError, match="shaped"):
        neucomp.compress(np.zeros((1, 2, 3), np.float32), RATE)
    with pytest.raises(InputError, match="floating point"):
        neucomp.compress(np.zeros(10, np.int16), RATE)


def test_non_finite_samples_become_silence_and_warn_once(tiny_model):
    """A few NaN / inf samples must not poison the encoder state for the rest."""
    rate = 16000
    x = make_audio(4 * rate, rate, channels=2)
    bad = x.copy()
    bad[0, rate // 2 : rate // 2 + 3] = np.nan
    bad[1, rate // 2 + 1] = np.inf
    bad[0, 3 * rate] = -np.inf
    clean = np.where(np.isfinite(bad), bad, 0).astype(np.float32)
    with pytest.warns(UserWarning) as caught:
        data = neucomp.compress(bad, rate)
    assert len(caught) == 1
    assert "5 non-finite samples (NaN or inf), the first at 0.500 s" in str(caught[0].message)
    assert data == neucomp.compress(clean, rate)
    y, _ = neucomp.decompress(data)
    assert np.isfinite(y).all() and np.abs(y[:, rate:]).max() > 0


def test_array_layout_and_rate_are_validated(tiny_model):
    x = make_audio(24000, RATE, channels=2)
    with pytest.raises(
        InputError, match=r"\[24000, 2\] would be 24000 channels.*\[C, T\].*\[T, C\]"
    ):
        neucomp.compress(x.T, RATE)
    for rate in (2**40, 0, -8000, 999, 384_001):
        with pytest.raises(InputError, match=f"sample rate of {rate} Hz .*1000 to 384000 Hz"):
            neucomp.compress(x, rate)
    for rate in (44100.7, "44100", None, True):
        with pytest.raises(InputError, match="sample rate must be an integer number of Hz"):
            neucomp.compress(x, rate)
    assert neucomp.decompress(neucomp.compress(x, 44100.0))[1] == 44100
    assert neucomp.decompress(neucomp.compress(x, np.int32(16000)))[1] == 16000
    with pytest.raises(InputError, match="65 channels"):
        neucomp.compress(np.zeros((65, 100), np.float32), RATE)


def test_a_model_name_from_a_file_never_resolves_outside_the_models_folder(
    tiny_model, model_dir, tmp_path, monkeypatch
):
    """A header naming `sample.flac` must not load ./sample.flac, even a valid model."""
    import shutil

    forged = reseal(neucomp.compress(make_audio(1000), RATE), model_name="sample.flac")
    monkeypatch.chdir(tmp_path)
    shutil.copy(model_dir / "neucomp_24khz.pt", tmp_path / "sample.flac")
    with pytest.raises(ModelError, match="needs model 'sample.flac' .* not installed"):
        neucomp.decompress(forged)
    # the user's own --model path is still honoured
    assert neucomp.decompress(forged, model="sample.flac")[0].shape == (1, 1000)


def test_model_files_are_loaded_without_unpickling_objects(tmp_path):
    marker = tmp_path / "ran"

    class Evil:
        def __reduce__(self):
            return (exec, (f"open({str(marker)!r}, 'w')",))

    torch.save({"format": "neucomp-model", "x": Evil()}, tmp_path / "evil.pt")
    with pytest.raises(ModelError, match="cannot load model file"):
        neucomp.load_model(str(tmp_path / "evil.pt"))
    assert not marker.exists()


def test_one_dimensional_input(tiny_model):
    y, sr = neucomp.decompress(neucomp.compress(make_audio(999)[0], RATE))
    assert (sr, y.shape) == (RATE, (1, 999))


def test_file_needs_the_model_that_made_it(tiny_model, tmp_path, monkeypatch):
    data = neucomp.compress(make_audio(1000), RATE)
    other = tmp_path / "models"
    other.mkdir()
    monkeypatch.setenv("NEUCOMP_MODEL_DIR", str(other))
    with pytest.raises(
        ModelError, match="needs model 'neucomp_24khz' with weights .*not installed"
    ):
        neucomp.decompress(data)
    build_model_file(other, seed=1)  # same name, different weights
    with pytest.raises(ModelError, match="different weights of model 'neucomp_24khz'"):
        neucomp.decompress(data)


def test_named_model_and_model_path(tiny_model, model_dir):
    path = model_dir / "neucomp_24khz.pt"
    assert neucomp.load_model(str(path)) is neucomp.load_model("neucomp_24khz")
    with pytest.raises(ModelError, match="'nonesuch' is not installed"):
        neucomp.compress(make_audio(100), RATE, model="nonesuch")


def test_import_is_light():
    """`import neucomp` must not pull in torch (the CLI starts fast)."""
    import subprocess
    import sys

    code = "import sys, neucomp, neucomp.cli; print('torch' in sys.modules)"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "False"


def test_stereo_model_channel_rule(tmp_path):
    """A stereo model: 6 channels fold onto L/R (even → L, odd → R) and come back as
    L, R, L, R, L, R; mono is duplicated on the way in and averaged on the way out."""
    import dataclasses

    from conftest import tiny_config

    from neucomp.model import Codec
    from neucomp.registry import save_model

    cfg = tiny_config("stereo_test")
    cfg = dataclasses.replace(cfg, seanet=dataclasses.replace(cfg.seanet, channels=2))
    torch.manual_seed(0)
    path = tmp_path / "stereo_test.pt"
    save_model(Codec(cfg), path)
    x = make_audio(4000, 16000, channels=6)
    data = neucomp.compress(x, 16000, model=str(path))
    header = EcdcReader(io.BytesIO(data)).header
    assert (header.model_channels, header.original_channels) == (2, 6)
    y, _ = neucomp.decompress(data, model=str(path))
    assert y.shape == (6, 4000)
    assert np.array_equal(y[0], y[2]) and np.array_equal(y[1], y[3])
    assert not np.array_equal(y[0], y[1])
    mono, _ = neucomp.decompress(neucomp.compress(x[:1], 16000, model=str(path)), model=str(path))
    assert mono.shape == (1, 4000)


def test_lm_coder_round_trip(tiny_model, tiny_lm):
    """--lm: same codes as the plain coder, range-coded; decodes to the same audio."""
    x = make_audio(RATE // 2, RATE)
    plain = neucomp.compress(x, RATE, 3.0)
    coded = neucomp.compress(x, RATE, 3.0, lm=True)
    header = EcdcReader(io.BytesIO(coded)).header
    assert header.coder == 1 and header.lm_hash != bytes(32)
    np.testing.assert_array_equal(neucomp.decompress(coded)[0], neucomp.decompress(plain)[0])


@pytest.fixture
def frame_model(tmp_path, monkeypatch):
    """A tiny model with the frame decoder (2 frames of look-ahead), as the default."""
    from neucomp import registry

    build_model_file(tmp_path, decoder="frame")
    monkeypatch.setenv("NEUCOMP_MODEL_DIR", str(tmp_path))
    return registry.load_model()


@pytest.mark.parametrize("frames", [1, 321, 2 * RATE + 100, 25 * RATE + 7])
def test_look_ahead_decoder_round_trip(frame_model, frames):
    """The engine flushes the decoder's held-back samples: exact lengths, whole-signal
    output across chunk and decoder-call boundaries."""
    x = make_audio(frames, RATE)
    data = neucomp.compress(x, RATE, 3.0)
    y, sr = neucomp.decompress(data, postfilter=False)  # the decoder's own output
    assert (sr, y.shape) == (RATE, x.shape)
    chunks = list(EcdcReader(io.BytesIO(data)).iter_chunks())
    codes = np.concatenate([unpack_codes(c.payload, 4, c.num_frames) for c in chunks], axis=1)
    unlevel = level.Unleveller(RATE)
    for c in chunks:
        unlevel.add_chunk(c.num_frames * HOP, c.gain_db)
    with torch.inference_mode():
        whole = frame_model.decode(torch.from_numpy(codes)[None])[0].numpy()
    np.testing.assert_allclose(y, unlevel.apply(whole)[:, :frames], atol=1e-4)


def test_look_ahead_decoder_salvage_keeps_the_length(frame_model):
    x = np.tile(make_audio(25 * RATE // 10, RATE), 10)  # 25 s → three chunks
    data = bytearray(neucomp.compress(x, RATE, 1.5))
    header_size = EcdcReader(io.BytesIO(bytes(data))).bytes_read
    first_chunk = chunk_overhead(750, 1875) + 1875
    data[header_size + first_chunk + chunk_overhead(750, 1875) + 5] ^= 0x40
    with pytest.warns(UserWarning, match="chunk 1"):
        y, _ = neucomp.decompress(bytes(data), salvage=True)
    assert y.shape == x.shape
    assert np.all(y[:, 10 * RATE : 20 * RATE] == 0)
    assert np.any(y[:, 20 * RATE :] != 0)
