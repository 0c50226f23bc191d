"""Shared fixtures: a tiny random-weight codec model and synthetic audio.

Tests never depend on the quality of shipped weights: they build a small model with
random weights (same hop, rates and codebooks as the real one, far fewer channels),
save it as a model file, and point NEUCOMP_MODEL_DIR at it.
"""

from __future__ import annotations

import os
import struct
import sys
from pathlib import Path

import numpy as np
import pytest

DEFAULT_NAME = "neucomp_24khz"
BIN = Path(sys.executable).parent  # the venv's bin/, where the `neucomp` script lives


@pytest.fixture(scope="session", autouse=True)
def _one_torch_thread():
    """Like the CLI: one inference thread (CI has 2 cores; more threads only contend)."""
    import torch

    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


def tiny_config(name: str = DEFAULT_NAME):
    from neucomp.model import CodecConfig
    from neucomp.nn.seanet import SEANetConfig

    seanet = SEANetConfig(base_width=4, latent_dim=8, lstm_layers=1, n_residual_layers=1)
    return CodecConfig(name=name, seanet=seanet)


def build_model_file(
    folder: Path, name: str = DEFAULT_NAME, seed: int = 0, decoder: str = "seanet"
) -> Path:
    """Save a random-weight tiny model as ``folder/<name>.pt``; returns the path.
    ``decoder="frame"`` gives it the frame-rate iSTFT decoder (which looks ahead)."""
    import torch

    from neucomp.model import Codec
    from neucomp.registry import save_model

    torch.manual_seed(seed)
    path = folder / f"{name}.pt"
    config = tiny_config(name)
    if decoder == "frame":
        config.decoder, config.frame_decoder = "frame", {"dim": 16, "layers": 2}
    save_model(Codec(config), path)
    return path


HQ_NAME = "neucomp_48khz"
HQ_CONFIG = Path(__file__).resolve().parents[1] / "configs" / "codec48.json"


def tiny_hq_config(name: str = HQ_NAME):
    """The 48 kHz stereo model of configs/codec48.json (its rate, channels, strides,
    codebooks and bandwidths) at a tiny width, so tests exercise the shipped design."""
    import json

    from neucomp.model import CodecConfig

    model = json.loads(HQ_CONFIG.read_text())["model"]
    model["seanet"] = {**model["seanet"], "base_width": 2, "latent_dim": 8, "lstm_layers": 1}
    return CodecConfig.from_dict({**model, "name": name})


def build_hq_model_file(folder: Path, name: str = HQ_NAME, seed: int = 0) -> Path:
    """Save a random-weight tiny 48 kHz stereo model as ``folder/<name>.pt``."""
    import torch

    from neucomp.model import Codec
    from neucomp.registry import save_model

    torch.manual_seed(seed)
    path = folder / f"{name}.pt"
    save_model(Codec(tiny_hq_config(name)), path)
    return path


@pytest.fixture(scope="session")
def hq_model_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A models folder with both tiny models: the 24 kHz default and the 48 kHz one."""
    folder = tmp_path_factory.mktemp("models_hq")
    build_model_file(folder)
    build_hq_model_file(folder)
    return folder


@pytest.fixture
def hq_model(hq_model_dir: Path, monkeypatch: pytest.MonkeyPatch):
    """The tiny 48 kHz stereo model, installed (beside the tiny 24 kHz default)."""
    from neucomp import registry

    monkeypatch.setenv("NEUCOMP_MODEL_DIR", str(hq_model_dir))
    return registry.load_model(HQ_NAME)


@pytest.fixture
def hq_cli_env(hq_model_dir: Path) -> dict[str, str]:
    """Environment for the real `neucomp` executable with both tiny models."""
    env = dict(os.environ, NEUCOMP_MODEL_DIR=str(hq_model_dir))
    env.pop("NEUCOMP_DEBUG", None)
    return env


@pytest.fixture(scope="session")
def model_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A models folder holding the tiny model under the default name."""
    folder = tmp_path_factory.mktemp("models")
    build_model_file(folder)
    return folder


@pytest.fixture
def tiny_model(model_dir: Path, monkeypatch: pytest.MonkeyPatch):
    """The tiny model, installed as the default model for this test."""
    from neucomp import registry

    monkeypatch.setenv("NEUCOMP_MODEL_DIR", str(model_dir))
    return registry.load_model()


@pytest.fixture
def cli_env(model_dir: Path) -> dict[str, str]:
    """Environment for running the real `neucomp` executable with the tiny model."""
    env = dict(os.environ, NEUCOMP_MODEL_DIR=str(model_dir))
    env.pop("NEUCOMP_DEBUG", None)
    return env


def default_signals() -> None:
    """A child's preexec_fn: SIGINT, SIGTERM and SIGHUP at their default dispositions.

    neucomp keeps a signal ignored when it starts ignored (as `nohup` leaves SIGHUP, and
    a non-interactive shell's `&` leaves SIGINT), so a signal test run under either
    would see the command ignore it; the tests check what a terminal's user gets."""
    import signal

    for sig in (signal.SIGINT, signal.SIGTERM, signal.SIGHUP):
        signal.signal(sig, signal.SIG_DFL)


def make_audio(frames: int, sample_rate: int = 24000, channels: int = 1, seed: int = 0):
    """A deterministic test signal ``[C, T]`` float32: a tone per channel plus noise."""
    rng = np.random.default_rng(seed)
    t = np.arange(frames) / sample_rate
    tones = [np.sin(2 * np.pi * (220 + 110 * c) * t) for c in range(channels)]
    x = 0.4 * np.stack(tones) + 0.05 * rng.standard_normal((channels, frames))
    return x.astype(np.float32)


def write_audio(path: Path, audio: np.ndarray, sample_rate: int, **kw) -> Path:
    """Write ``[C, T]`` audio with soundfile (format from the extension or ``format=``)."""
    import soundfile as sf

    sf.write(str(path), audio.T, sample_rate, **kw)
    return path


def pipe_wav_bytes(audio: np.ndarray, sample_rate: int, size_field: int = 0xFFFFFFFF) -> bytes:
    """16-bit WAV bytes whose RIFF and data sizes are ``size_field``, as ffmpeg writes
    them to a pipe."""
    import io
    import struct

    import soundfile as sf

    buf = io.BytesIO()
    sf.write(buf, audio.T, sample_rate, format="WAV", subtype="PCM_16")
    data = bytearray(buf.getvalue())
    assert data[36:40] == b"data"  # soundfile writes the canonical 44-byte header
    data[4:8] = struct.pack("<I", size_field)
    data[40:44] = struct.pack("<I", size_field)
    return bytes(data)


@pytest.fixture
def tiny_lm(tiny_model, model_dir: Path) -> Path:
    """A tiny random-weight LM for the tiny model, installed next to it (`--lm`)."""
    pytest.importorskip("neucomp.coding.range")
    import torch

    from neucomp import registry
    from neucomp.nn.lm import CodesLM, LMConfig
    from neucomp.train.quantize import quantize_lm

    path = registry.lm_path(tiny_model.config.name)
    if not path.is_file():
        torch.manual_seed(0)
        lm = CodesLM(LMConfig(dim=16, layers=1, heads=2, ff=32, window=8))
        calibration = [torch.randint(0, 1024, (2, 8, 16))]
        registry.save_lm(quantize_lm(lm, calibration), path, tiny_model.weights_hash)
    return path


def reseal(data: bytes, **header_changes) -> bytes:
    """The .ecdc stream `data` rewritten with header fields changed and every CRC valid
    (version 2 chains each CRC to the one before, so a forged header must re-seal all)."""
    import dataclasses
    import io

    from neucomp.container import EcdcReader, EcdcWriter

    reader = EcdcReader(io.BytesIO(data))
    chunks = list(reader.iter_chunks())
    out = io.BytesIO()
    writer = EcdcWriter(out, dataclasses.replace(reader.header, **header_changes))
    for chunk in chunks:
        writer.write_chunk(chunk.num_frames, chunk.payload, chunk.gain_db)
    writer.finish(reader.trailer)
    return out.getvalue()


def chunk_spans(data: bytes) -> list[tuple[int, int, int, int]]:
    """(start, check offset, check width, end) of each chunk of a version 3 stream, parsed by hand
    from docs/FORMAT.md (independently of neucomp.container)."""
    pos = struct.unpack_from("<H", data, 6)[0]
    out = []
    while data[pos]:
        start = pos
        values = []
        for _ in range(2):
            value = shift = 0
            while True:
                byte = data[pos]
                pos += 1
                value |= (byte & 0x7F) << shift
                shift += 7
                if byte < 0x80:
                    break
            values.append(value)
        pos += 1  # gain
        check_at, width = pos, 2 if values[1] < 256 else 4
        pos += width + values[1]
        out.append((start, check_at, width, pos))
    return out


def shipped_or_skip(header, *, made_by: bool = False) -> None:
    """Skip a format fixture test when the installed model cannot decode the fixture:
    weights with other codes cannot (make new fixtures from the previous release), a
    model that names the fixture's weights among its predecessors can. ``made_by``: skip
    unless the installed model is the very one that wrote it (for byte-exact output)."""
    from neucomp.registry import load_model

    model = load_model()
    want = header.model_hash.hex()
    if made_by and model.weights_hash != want:
        pytest.skip("the shipped model did not write these fixtures")
    if want not in model.code_hashes:
        pytest.skip("the shipped model is not the one these fixtures were made with")


def fixture_codes(reader) -> tuple[np.ndarray, list[int]]:
    """A fixture stream's codes [K, frames], decoded with the installed model's coder
    that its header names (plain packing, the LM or the tables), and its chunks' gains."""
    from neucomp.registry import coder_for, model_for

    h = reader.header
    coder = coder_for(h, model_for(h, None))  # the model that made it, or one standing in
    parts, gains = [], []
    for chunk in reader.iter_chunks():
        parts.append(np.asarray(coder.decode(chunk.payload, h.num_codebooks, chunk.num_frames)))
        gains.append(chunk.gain_db)
    return np.concatenate(parts, axis=1), gains


def assert_decodes_like(audio, reference) -> None:
    """``audio`` [C, T] against a stored decoding (a 16-bit FLAC made on another machine).

    The codes are bit-exact everywhere, but torch's float kernels differ between CPUs in
    the last bits, so the decoded audio is compared within what that and the 16-bit file
    allow: every sample within 5e-4, and the difference 60 dB under the signal. A wrong
    gain, a lost or shifted frame or another model fails both by far."""
    import numpy as np
    import soundfile as sf

    ref, _ = sf.read(reference, dtype="float32", always_2d=True)
    ref = ref.T
    assert audio.shape == ref.shape
    err = audio.astype(np.float64) - ref
    assert np.abs(err).max() <= 5e-4
    snr_db = 10 * np.log10(np.sum(ref.astype(np.float64) ** 2) / max(np.sum(err**2), 1e-30))
    assert snr_db >= 60.0
