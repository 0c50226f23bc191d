"""A model's second decoder, for the chunks the encoder flagged speech: the model file
carries it, the switch between the two is seamless and split-independent, the engine
follows the flags, and graft-speech-decoder builds such a model from two on one code."""

from __future__ import annotations

import io
from pathlib import Path

import numpy as np
import pytest
import torch
from click.testing import CliRunner
from conftest import build_model_file, tiny_config

import neucomp
from neucomp.cli import main
from neucomp.container import EcdcReader
from neucomp.errors import ModelError
from neucomp.model import Codec, CodecConfig, SwitchedDecoder
from neucomp.registry import load_model, save_model
from neucomp.train.export import graft_speech_decoder

RATE = 24000


def _codec_with_speech_decoder(seed: int = 0) -> Codec:
    torch.manual_seed(seed)
    config = tiny_config()
    config.speech_decoder = True
    return Codec(config).eval()


def _codes(codec: Codec, frames: int, seed: int = 1) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    return torch.randint(0, codec.config.codebook_size, (1, 8, frames), generator=g)


def _decode(decoder, codes: torch.Tensor, flags: list[bool], chunk: int, piece: int):
    """Push `codes` chunk by chunk (each chunk's flag first), `piece` frames at a time."""
    out = []
    for c, speech in enumerate(flags):
        if isinstance(decoder, SwitchedDecoder):
            decoder.start_chunk(speech)
        part = codes[..., c * chunk : (c + 1) * chunk]
        for i in range(0, part.shape[-1], piece):
            out.append(decoder.push(part[..., i : i + piece]))
    return torch.cat(out, dim=-1)[0].numpy()


def test_the_config_and_the_hash_of_models_without_one_are_unchanged() -> None:
    assert "speech_decoder" not in CodecConfig().to_dict()
    config = tiny_config()
    config.speech_decoder = True
    assert config.to_dict()["speech_decoder"] is True
    assert CodecConfig.from_dict(config.to_dict()).speech_decoder is True
    with pytest.raises(ModelError, match="no speech decoder"):
        Codec(tiny_config()).stream_decoder(speech=True)
    config.decoder, config.frame_decoder = "frame", {"dim": 16, "layers": 2}
    with pytest.raises(ModelError, match="SEANet"):
        Codec(config)


def test_a_model_file_carries_both_decoders(tmp_path: Path) -> None:
    codec = _codec_with_speech_decoder()
    digest = save_model(codec, tmp_path / "m.pt")
    loaded = load_model(tmp_path / "m.pt", cached=False)
    assert loaded.weights_hash == digest and loaded.speech_decoder is not None
    codes = _codes(codec, 20)
    for speech in (False, True):
        ours = loaded.stream_decoder(speech=speech).push(codes)
        theirs = codec.stream_decoder(speech=speech).push(codes)
        np.testing.assert_allclose(ours, theirs, atol=2e-3)  # fp16 weights in the file
    a = loaded.stream_decoder().push(codes)
    assert not np.allclose(a, loaded.stream_decoder(speech=True).push(codes), atol=1e-3)


def test_one_flag_throughout_is_that_decoder_alone() -> None:
    codec = _codec_with_speech_decoder()
    codes = _codes(codec, 60)
    hop = codec.hop_length
    for speech in (False, True):
        switched = _decode(SwitchedDecoder(codec, fade=hop), codes, [speech] * 3, 20, 7)
        alone = _decode(codec.stream_decoder(speech=speech), codes, [speech] * 3, 20, 7)
        np.testing.assert_array_equal(switched, alone)


def test_a_switch_warms_the_incoming_decoder_up_and_crossfades() -> None:
    """Chunk 2 (speech, after a general chunk) is the speech decoder warmed up on the last
    `warmup` frames of chunk 1, once the fade is over; the fade starts at the outgoing
    decoder's output; the result does not depend on how the pushes split the stream."""
    codec = _codec_with_speech_decoder()
    hop, chunk, warmup, fade = codec.hop_length, 30, 12, 100
    codes = _codes(codec, 3 * chunk)
    flags = [False, True, False]
    out = _decode(SwitchedDecoder(codec, fade, warmup), codes, flags, chunk, 7)
    assert out.shape == (1, 3 * chunk * hop)
    general = _decode(codec.stream_decoder(), codes, [False] * 3, chunk, 7)
    np.testing.assert_array_equal(out[:, : chunk * hop], general[:, : chunk * hop])
    speech = codec.stream_decoder(speech=True)
    speech.push(codes[..., chunk - warmup : chunk])
    expected = speech.push(codes[..., chunk : 2 * chunk])[0].numpy()
    start = chunk * hop
    np.testing.assert_allclose(
        out[:, start + fade : 2 * chunk * hop], expected[:, fade:], rtol=1e-5, atol=1e-6
    )
    # the first sample of the switch is 1 / fade of the way from the outgoing decoder
    w = 1 / fade
    first = (1 - w) * general[0, start] + w * expected[0, 0]
    assert out[0, start] == pytest.approx(first, rel=1e-4, abs=1e-6)
    again = _decode(SwitchedDecoder(codec, fade, warmup), codes, flags, chunk, 13)
    np.testing.assert_allclose(again, out, rtol=1e-5, atol=1e-6)
    # after the return to general, chunk 3 is the general decoder warmed on chunk 2's end
    back = codec.stream_decoder()
    back.push(codes[..., 2 * chunk - warmup : 2 * chunk])
    tail = back.push(codes[..., 2 * chunk :])[0].numpy()
    np.testing.assert_allclose(out[:, 2 * start + fade :], tail[:, fade:], rtol=1e-5, atol=1e-6)


def _models_on_one_code(folder: Path) -> tuple[Path, Path]:
    """The tiny model, and a copy with another decoder on the same encoder and RVQ."""
    (folder / "base").mkdir()
    (folder / "donor").mkdir()
    base = build_model_file(folder / "base", seed=0)
    donor = load_model(build_model_file(folder / "donor", seed=5), cached=False)
    codec = load_model(base, cached=False)
    codec.decoder.load_state_dict(donor.decoder.state_dict())
    speech = folder / "speech.pt"
    save_model(codec, speech)
    return base, speech


def test_graft_builds_the_model_and_the_engine_follows_the_flags(tmp_path: Path) -> None:
    """A grafted model decodes speech-flagged chunks with its speech decoder and the
    others with its general one; speech_decoder=True/False forces either; a donor with
    other codes is refused."""
    from test_engine import _speech_then_chord

    base, speech = _models_on_one_code(tmp_path)
    grafted = tmp_path / "grafted.pt"
    graft_speech_decoder(base, speech, grafted)
    model = load_model(grafted, cached=False)
    assert model.config.speech_decoder and model.speech_decoder is not None
    with pytest.raises(ValueError, match="codes audio differently"):
        other_codes = build_model_file(tmp_path, name="neucomp_24khz", seed=9)
        graft_speech_decoder(base, other_codes, tmp_path / "bad.pt")

    x = _speech_then_chord()
    data = neucomp.compress(x, RATE, 6.0, coder="plain", model=str(grafted))
    assert [c.speech for c in EcdcReader(io.BytesIO(data)).iter_chunks()] == [True, False]
    kw = {"model": str(grafted), "postfilter": False}
    default, _ = neucomp.decompress(data, **kw)
    forced_speech, _ = neucomp.decompress(data, speech_decoder=True, **kw)
    forced_general, _ = neucomp.decompress(data, speech_decoder=False, **kw)
    head = slice(0, 10 * RATE)
    np.testing.assert_array_equal(default[:, head], forced_speech[:, head])
    assert not np.allclose(forced_speech[:, head], forced_general[:, head], atol=1e-3)
    # the chord chunk is the general decoder's, up to its one-second warm-up
    tail = slice(12 * RATE, None)
    to_general = np.abs(default[:, tail] - forced_general[:, tail]).mean()
    to_speech = np.abs(default[:, tail] - forced_speech[:, tail]).mean()
    assert to_general < 0.1 * to_speech
    # the speech decoder takes the postfilter's place: by default nothing is postfiltered,
    # unless the general decoder is asked to serve the flagged chunks
    np.testing.assert_array_equal(neucomp.decompress(data, model=str(grafted))[0], default)
    general_default, _ = neucomp.decompress(data, model=str(grafted), speech_decoder=False)
    assert not np.allclose(general_default[:, head], forced_general[:, head], atol=1e-3)


def test_decompress_decoder_option(tmp_path: Path, cli_env: dict[str, str]) -> None:
    """--decoder speech on a model with no speech decoder is a one-line error; auto and
    general decode it as before."""
    src = tmp_path / "a.wav"
    import soundfile as sf

    sf.write(src, np.zeros((RATE, 1), np.float32), RATE)
    runner = CliRunner()
    out = tmp_path / "a.ecdc"
    assert runner.invoke(main, ["compress", "-q", str(src), str(out)], env=cli_env).exit_code == 0
    for choice in ("auto", "general"):
        args = ["decompress", "-q", "--decoder", choice, str(out), str(tmp_path / f"{choice}.wav")]
        assert runner.invoke(main, args, env=cli_env).exit_code == 0
    r = runner.invoke(
        main, ["decompress", "--decoder", "speech", str(out), str(tmp_path / "s.wav")], env=cli_env
    )
    assert r.exit_code != 0 and "no speech decoder" in r.output
    assert "Traceback" not in r.output and not (tmp_path / "s.wav").exists()


def test_a_grafted_model_decodes_its_predecessors_streams_with_their_lm(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Installed in place of its base, a grafted model decodes the base's streams, plain
    and LM-coded, as the base did where its general decoder serves (no flags here), with
    the base's LM unchanged; its own streams name it, and use that LM too. Streams of
    weights with other codes stay refused."""
    pytest.importorskip("neucomp.coding.range")
    from neucomp import registry
    from neucomp.nn.lm import CodesLM, LMConfig
    from neucomp.train.quantize import quantize_lm

    base, speech = _models_on_one_code(tmp_path)
    grafted = tmp_path / "grafted.pt"
    graft_speech_decoder(base, speech, grafted)
    installed = tmp_path / "installed"
    installed.mkdir()
    monkeypatch.setenv("NEUCOMP_MODEL_DIR", str(installed))
    (installed / "neucomp_24khz.pt").write_bytes(base.read_bytes())
    base_model = registry.load_model(cached=False)
    torch.manual_seed(0)
    lm = CodesLM(LMConfig(dim=16, layers=1, heads=2, ff=32, window=8))
    calibration = [torch.randint(0, 1024, (2, 8, 16))]
    registry.save_lm(
        quantize_lm(lm, calibration), registry.lm_path("neucomp_24khz"), base_model.weights_hash
    )
    t = np.arange(3 * RATE) / RATE
    x = (0.1 * np.sin(2 * np.pi * 330 * t)).astype(np.float32)[None]
    old = {c: neucomp.compress(x, RATE, 6.0, coder=c) for c in ("plain", "lm")}
    before = {c: neucomp.decompress(d)[0] for c, d in old.items()}

    (installed / "neucomp_24khz.pt").write_bytes(grafted.read_bytes())
    registry._MODELS.clear()
    model = registry.load_model()
    assert model.code_hashes == (model.weights_hash, base_model.weights_hash)
    for c, data in old.items():
        np.testing.assert_array_equal(neucomp.decompress(data)[0], before[c])
    new = neucomp.compress(x, RATE, 6.0, coder="lm")
    assert EcdcReader(io.BytesIO(new)).header.model_hash.hex() == model.weights_hash
    np.testing.assert_allclose(neucomp.decompress(new)[0], before["lm"], atol=1e-6)

    stranger = build_model_file(tmp_path, seed=9)
    data = neucomp.compress(x, RATE, 6.0, coder="plain", model=str(stranger))
    with pytest.raises(ModelError, match="different weights"):
        neucomp.decompress(data)
