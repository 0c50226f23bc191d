"""The coded spectral envelope (neucomp.nn.envelope, EXPERIMENTS E18): causal analysis,
its codebooks interleaved with the learned ones, the equaliser, streaming equal to
whole-file coding, files and the engine, and the trainer's fit and learning rates."""

from __future__ import annotations

import io
from pathlib import Path

import numpy as np
import pytest
import torch
from conftest import make_audio, tiny_config

import neucomp
from neucomp.errors import ModelError
from neucomp.model import Codec, CodecConfig
from neucomp.nn.envelope import (
    EnvelopeCoder,
    EnvelopeEqualiser,
    SpectralEnvelope,
    envelope_slots,
    interleave,
    split,
)
from neucomp.registry import load_model, save_model


def _envelope_codec(seed: int = 0, fit: bool = True) -> Codec:
    torch.manual_seed(seed)
    config = tiny_config()
    config.envelope_bands = 12
    codec = Codec(config).eval()
    if fit:  # k-means on the envelopes of a test signal, as the trainer does on crops
        audio = torch.from_numpy(make_audio(24000 * 3, seed=seed))[None]
        env, _ = codec.envelope.analysis(codec.pad_to_frames(audio))
        codec.envelope.fit(env.transpose(1, 2).reshape(-1, env.shape[1]), iters=5)
    return codec


def test_models_without_an_envelope_keep_their_config_and_hash() -> None:
    d = CodecConfig().to_dict()
    assert "envelope_bands" not in d and "envelope_codebooks" not in d
    config = tiny_config()
    config.envelope_bands = 20
    d = config.to_dict()
    assert d["envelope_bands"] == 20 and d["envelope_codebooks"] == 16
    assert d["envelope_n_fft"] == 640 and d["envelope_equalise"] is True
    assert CodecConfig.from_dict(d).envelope_bands == 20
    config.envelope_codebooks = 15  # 32 codebooks alternate: 16 are the envelope's
    with pytest.raises(ModelError, match="16 envelope codebooks"):
        Codec(config)


def test_the_envelope_is_causal_and_streams_with_its_history() -> None:
    analysis = SpectralEnvelope(24000, 320, bands=20, n_fft=1280)
    x = torch.from_numpy(make_audio(320 * 30))[None]
    whole, _ = analysis(x)
    assert whole.shape == (1, 20, 30) and analysis.history == 960
    changed = x.clone()
    changed[..., 320 * 20 :] += 0.3  # the future: frames 0–19 must not see it
    assert torch.equal(analysis(changed)[0][..., :20], whole[..., :20])
    first, past = analysis(x[..., : 320 * 11])
    rest, _ = analysis(x[..., 320 * 11 :], past)
    assert torch.equal(torch.cat([first, rest], -1), whole)  # float64 inside: exactly
    # louder input, higher envelope: it carries the level as well as the shape
    assert (analysis(2 * x)[0] > whole + 0.2).all()


def test_fitting_the_codebooks_lowers_the_envelope_error() -> None:
    torch.manual_seed(0)
    frames = torch.randn(4000, 12) * torch.linspace(2, 0.2, 12)
    coder = EnvelopeCoder(24000, 320, 8, bands=12, codebooks=2, size=64)

    def error() -> float:
        codes = coder.quantizer.encode(frames.T[None], 2)
        return float((coder.quantizer.decode(codes)[0].T - frames).pow(2).mean())

    before = error()
    coder.fit(frames, iters=10)
    after = error()
    assert after < 0.5 * before
    one = coder.quantizer.decode(coder.quantizer.encode(frames.T[None], 1))[0].T
    assert float((one - frames).pow(2).mean()) > after  # the second stage adds detail


def test_envelope_and_learned_codebooks_alternate_in_every_prefix() -> None:
    assert [envelope_slots(k) for k in (1, 2, 3, 8, 32)] == [
        (1, 0),
        (1, 1),
        (2, 1),
        (4, 4),
        (16, 16),
    ]
    env = torch.arange(3)[None, :, None].expand(1, 3, 4)
    learned = 10 + torch.arange(2)[None, :, None].expand(1, 2, 4)
    codes = interleave(env, learned)
    assert codes[0, :, 0].tolist() == [0, 10, 1, 11, 2]
    e, l_ = split(codes)
    assert torch.equal(e, env) and torch.equal(l_, learned)
    codec = _envelope_codec()
    codec.learned_beam = 1  # the greedy search, whose bandwidths are prefixes of each other
    wav = torch.from_numpy(make_audio(320 * 40))[None]
    codes = codec.encode(wav, 8)
    assert codes.shape == (1, 8, 40)
    env, _ = codec.envelope.analysis(wav)
    assert torch.equal(codes[:, 0::2], codec.envelope.encode(env, 4)[0])
    z, _ = codec.encoder(wav)
    assert torch.equal(codes[:, 1::2], codec.quantizer.encode(z, 4))
    # every bandwidth is a prefix: 6 codebooks are the first 6 of the 8
    assert torch.equal(codec.encode(wav, 6), codes[:, :6])
    assert codec.encode(wav, 1).shape == (1, 1, 40)
    # the projection starts at zero: the decoder gets exactly the learned codes' latent
    assert torch.equal(codec.decoder_input(codes), codec.quantizer.decode(codes[:, 1::2]))
    with torch.no_grad():
        codec.envelope.to_latent.weight.normal_()
    alone = codec.decoder_input(codes[:, :1])
    assert alone.shape == (1, 8, 40) and alone.abs().sum() > 0


def test_the_equaliser_passes_a_matching_output_and_corrects_a_wrong_one() -> None:
    analysis = SpectralEnvelope(24000, 320, bands=20)
    x = torch.from_numpy(make_audio(320 * 40, seed=3))[None]
    env, _ = analysis(x)
    eq = EnvelopeEqualiser(analysis, 1)
    same = torch.cat([eq.push(x, env), eq.flush()], -1)
    assert same.shape == x.shape
    # its own envelope: every gain is one, and Hann windows at half overlap add up to x
    assert torch.allclose(same, x, atol=1e-4)
    quiet = 0.1 * x  # 20 dB too quiet: equalised back up to the sent envelope
    eq = EnvelopeEqualiser(analysis, 1)
    fixed = torch.cat([eq.push(quiet, env), eq.flush()], -1)
    assert torch.allclose(fixed, x, atol=1e-3)
    # pushes of any size give the same samples, one frame late
    eq = EnvelopeEqualiser(analysis, 1)
    parts = [
        eq.push(quiet[..., 320 * a : 320 * b], env[..., a:b]) for a, b in ((0, 1), (1, 9), (9, 40))
    ]
    assert [p.shape[-1] for p in parts] == [0, 320 * 8, 320 * 31]
    assert torch.allclose(torch.cat([*parts, eq.flush()], -1), fixed, atol=1e-6)


def test_streaming_equals_whole_file_coding() -> None:
    codec = _envelope_codec()
    with torch.no_grad():
        codec.envelope.to_latent.weight.normal_(std=0.1)
    wav = torch.from_numpy(make_audio(320 * 50 + 77))[None]
    whole = codec.encode(wav, 8)
    enc = codec.stream_encoder(8)
    pieces = [enc.push(wav[..., a:b]) for a, b in ((0, 1000), (1000, 7777), (7777, wav.shape[-1]))]
    streamed = torch.cat([*pieces, enc.flush()], -1)
    assert torch.equal(streamed, whole)
    decoded = codec.decode(whole)
    assert decoded.shape == (1, 1, 51 * 320)
    unequalised, _ = codec.decoder(codec.decoder_input(whole))
    assert not torch.allclose(decoded, unequalised, atol=1e-3)  # the equaliser is on
    dec = codec.stream_decoder()
    pushed = [dec.push(whole[..., :1]), dec.push(whole[..., 1:7]), dec.push(whole[..., 7:])]
    assert [p.shape[-1] for p in pushed] == [0, 6 * 320, 44 * 320]  # one frame held back
    out = torch.cat([*pushed, dec.flush()], -1)
    assert torch.allclose(out, decoded, atol=1e-5)


def test_a_model_file_with_an_envelope_codes_through_the_engine(tmp_path: Path) -> None:
    codec = _envelope_codec()
    with torch.no_grad():
        codec.envelope.to_latent.weight.normal_(std=0.1)
    path = tmp_path / "neucomp_24khz.pt"
    save_model(codec, path)
    loaded = load_model(path, cached=False)
    assert loaded.config.envelope_bands == 12 and loaded.envelope is not None
    for ours, theirs in zip(
        codec.envelope.quantizer.layers, loaded.envelope.quantizer.layers, strict=True
    ):  # model files hold fp16 codebooks
        assert torch.equal(theirs.embed, ours.embed.half().float())
    assert torch.equal(
        loaded.envelope.to_latent.weight, codec.envelope.to_latent.weight.half().float()
    )
    audio = make_audio(24000 + 123)
    data = neucomp.compress(audio, 24000, 6.0, model=str(path), coder="plain")
    out, rate = neucomp.decompress(data, model=str(path))
    assert rate == 24000 and out.shape == audio.shape and np.isfinite(out).all()


def test_the_trainer_fits_the_envelope_and_gives_its_projection_a_faster_rate(
    tmp_path: Path,
) -> None:
    from train.test_train import _tiny_corpus

    from neucomp.train.loop import TrainConfig, Trainer

    model = tiny_config().to_dict()
    model["envelope_bands"], model["envelope_codebooks"] = 12, 16
    cfg = TrainConfig(
        run_dir=str(tmp_path / "run"),
        corpus=str(_tiny_corpus(tmp_path / "corpus")),
        deveval=str(tmp_path / "none"),
        model=model,
        segment_s=0.2,
        batch_size=2,
        threads=1,
        adv_start_step=10_000,
        lr=1e-3,
        log_every=1000,
        ckpt_every=1000,
        val_every=0,
        decoder_only=True,
        envelope_fit_batches=4,
        new_input_lr_scale=10.0,
    )
    trainer = Trainer(cfg)
    envelope = trainer.model.envelope
    embed = envelope.quantizer.layers[0].embed.clone()
    trainer.fit_envelope_codebooks(cfg.envelope_fit_batches)
    assert not torch.equal(envelope.quantizer.layers[0].embed, embed)
    fast = [g for g in trainer.opt_g.param_groups if g["lr_scale"] == 10.0]
    assert len(fast) == 1 and {id(p) for p in fast[0]["params"]} == {
        id(p) for p in envelope.to_latent.parameters()
    }
    trainer.step = 0
    out = trainer.train_step()
    assert envelope.to_latent.weight.abs().sum() > 0  # the zero projection has started
    assert out["lr"] == pytest.approx(1e-3)
    assert fast[0]["lr"] == pytest.approx(1e-2)
    # through_equaliser: the losses see the equalised output, what inference gives
    x = trainer.model.pad_to_frames(trainer.sampler.batch(2))
    trainer.model.eval()
    with torch.no_grad():
        raw = trainer._decode_frozen(x, 8)
        trainer.cfg.through_equaliser = True
        heard = trainer._decode_frozen(x, 8)
        inference = trainer.model.decode(trainer.model.encode(x, 8))
    assert torch.allclose(heard, inference, atol=1e-5)
    assert not torch.allclose(raw, heard, atol=1e-4)


def test_a_model_with_an_envelope_decodes_the_streams_of_the_model_it_was_made_from(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Installed in place of its base, the model `add-envelope` made decodes the base's
    streams (plain and LM-coded) exactly as the base did, with the base's LM kept in
    models/legacy/; its own streams carry the envelope and are coded with its own LM.
    Streams of other weights stay refused."""
    pytest.importorskip("neucomp.coding.range")
    from conftest import build_model_file
    from train.test_train import _tiny_corpus

    from neucomp import registry
    from neucomp.container import EcdcReader
    from neucomp.nn.lm import CodesLM, LMConfig
    from neucomp.train.envelope import add_envelope
    from neucomp.train.quantize import quantize_lm

    installed = tmp_path / "installed"
    installed.mkdir()
    base = build_model_file(installed)
    monkeypatch.setenv("NEUCOMP_MODEL_DIR", str(installed))
    registry._MODELS.clear()
    base_model = registry.load_model(cached=False)

    def install_lm(codec_hash: str, seed: int) -> None:
        torch.manual_seed(seed)
        lm = CodesLM(LMConfig(dim=16, layers=1, heads=2, ff=32, window=8))
        calibration = [torch.randint(0, 1024, (2, 8, 16))]
        registry.save_lm(
            quantize_lm(lm, calibration), registry.lm_path("neucomp_24khz"), codec_hash
        )

    install_lm(base_model.weights_hash, 0)
    x = make_audio(3 * 24000)[:1]
    old = {c: neucomp.compress(x, 24000, 6.0, coder=c) for c in ("plain", "lm")}
    before = {c: neucomp.decompress(d)[0] for c, d in old.items()}

    made = tmp_path / "with_envelope.pt"
    add_envelope(base, made, _tiny_corpus(tmp_path / "corpus"), bands=12, batches=2)
    legacy = registry.legacy_path("neucomp_24khz", base_model.weights_hash, ".lm")
    legacy.parent.mkdir()
    registry.lm_path("neucomp_24khz").rename(legacy)
    base.write_bytes(made.read_bytes())
    registry._MODELS.clear()
    registry._LMS.clear()
    model = registry.load_model()
    assert model.envelope is not None
    assert model.config.plain_predecessors == [base_model.weights_hash]
    assert base_model.weights_hash in model.code_hashes
    for c, data in old.items():
        np.testing.assert_array_equal(neucomp.decompress(data)[0], before[c])
    # its own streams: the envelope model's codes, with its own LM once one is installed
    with pytest.raises(ModelError, match="LM for model 'neucomp_24khz'"):
        neucomp.compress(x, 24000, 6.0, coder="lm")
    install_lm(model.weights_hash, 1)
    new = neucomp.compress(x, 24000, 6.0, coder="lm")
    assert EcdcReader(io.BytesIO(new)).header.model_hash.hex() == model.weights_hash
    out, _ = neucomp.decompress(new)
    assert out.shape == x.shape and not np.allclose(out, before["lm"], atol=1e-3)
    # the old streams still find the old LM, beside the new one
    np.testing.assert_array_equal(neucomp.decompress(old["lm"])[0], before["lm"])

    stranger = build_model_file(tmp_path, seed=9)
    data = neucomp.compress(x, 24000, 6.0, coder="plain", model=str(stranger))
    with pytest.raises(ModelError, match="different weights"):
        neucomp.decompress(data)


def test_with_the_equaliser_the_algorithmic_latency_is_two_frames() -> None:
    """A frame's codes still need only the samples up to its end; the equaliser then
    finishes a frame's samples once the next frame's window is in. So an input change
    inside frame 10 first changes the output of frame 9: a sample leaves at most two hops
    (26.7 ms at 24 kHz) after it came in."""
    codec = _envelope_codec()
    assert codec.algorithmic_latency == 2 * 320
    x = torch.from_numpy(make_audio(40 * 320))[None]
    y = x.clone()
    y[..., 10 * 320 + 5 :] = 0.5 * torch.randn(30 * 320 - 5)
    cx, cy = codec.encode(x, 8), codec.encode(y, 8)
    changed = (cx != cy).any(dim=1)[0].nonzero().flatten()
    assert int(changed[0]) == 10
    ox, oy = codec.decode(cx), codec.decode(cy)
    assert torch.equal(ox[..., : 9 * 320], oy[..., : 9 * 320])
    assert not torch.equal(ox[..., 9 * 320 : 10 * 320], oy[..., 9 * 320 : 10 * 320])
