"""The codec model: shapes, exact streaming, bandwidth mapping, model files and hashes."""

from __future__ import annotations

import pytest
import torch
from conftest import tiny_config

from neucomp.errors import ModelError, UsageError
from neucomp.model import Codec, inference_copy
from neucomp.registry import load_model, save_model


@pytest.fixture
def codec() -> Codec:
    torch.manual_seed(0)
    model = Codec(tiny_config())
    # Give the codebooks spread-out values so that codes differ between frames.
    for layer in model.quantizer.layers:
        layer.embed.normal_()
    return inference_copy(model)


@pytest.mark.parametrize("length", [1, 319, 320, 321, 2400])
def test_encode_decode_shapes(codec: Codec, length: int) -> None:
    wav = torch.randn(2, 1, length)
    codes = codec.encode(wav, 8)
    frames = -(-length // 320)
    assert codes.shape == (2, 8, frames)
    assert codes.dtype == torch.long and int(codes.min()) >= 0 and int(codes.max()) < 1024
    assert codec.decode(codes).shape == (2, 1, frames * 320)


def test_streaming_encoder_matches_whole_signal(codec: Codec) -> None:
    wav = torch.randn(1, 1, 24000 + 123)
    whole = codec.encode(wav, 16)
    stream = codec.stream_encoder(16)
    cuts = [0, 1, 500, 640, 641, 9000, 24000 + 123]
    parts = [stream.push(wav[..., a:b]) for a, b in zip(cuts, cuts[1:], strict=False)]
    parts.append(stream.flush())
    assert torch.equal(torch.cat(parts, dim=-1), whole)


def test_streaming_decoder_matches_whole_signal(codec: Codec) -> None:
    codes = torch.randint(0, 1024, (1, 4, 50))
    whole = codec.decode(codes)
    stream = codec.stream_decoder()
    cuts = [0, 1, 2, 17, 49, 50]
    streamed = torch.cat(
        [stream.push(codes[..., a:b]) for a, b in zip(cuts, cuts[1:], strict=False)], dim=-1
    )
    torch.testing.assert_close(streamed, whole, rtol=0, atol=1e-5)


def test_decoder_is_causal(codec: Codec) -> None:
    codes = torch.randint(0, 1024, (1, 4, 30))
    changed = codes.clone()
    changed[..., 20:] = (changed[..., 20:] + 1) % 1024
    a, b = codec.decode(codes), codec.decode(changed)
    torch.testing.assert_close(a[..., : 20 * 320], b[..., : 20 * 320], rtol=0, atol=1e-6)
    assert not torch.allclose(a[..., 20 * 320 :], b[..., 20 * 320 :])


def test_more_codebooks_reconstruct_the_latent_better() -> None:
    torch.manual_seed(0)
    model = Codec(tiny_config())
    with torch.no_grad():
        z, _ = model.encoder(torch.randn(1, 1, 320 * 2000))
        model.quantizer.train()
        model.quantizer(z, 32)  # k-means initialises every stage on its own residuals
    errors = []
    for n_q in (1, 2, 4, 8, 16, 32):
        q = model.quantizer.decode(model.quantizer.encode(z, n_q))
        errors.append(float((q - z).pow(2).mean()))
    assert errors == sorted(errors, reverse=True)
    assert errors[-1] < 0.2 * errors[0]


@pytest.mark.parametrize(("kbps", "n_q"), [(1.5, 2), (3, 4), (6, 8), (12, 16), (24, 32)])
def test_bandwidth_to_codebooks(kbps: float, n_q: int) -> None:
    cfg = tiny_config()
    assert cfg.n_codebooks_for(kbps) == n_q
    assert cfg.bandwidth_for(n_q) == pytest.approx(kbps)


def test_unsupported_bandwidth_is_a_usage_error() -> None:
    with pytest.raises(UsageError, match="unsupported bandwidth 5"):
        tiny_config().n_codebooks_for(5)


def test_model_file_round_trip(codec: Codec, tmp_path) -> None:
    path = tmp_path / "m.pt"
    digest = save_model(codec, path)
    loaded = load_model(path, cached=False)
    assert loaded.weights_hash == digest and len(digest) == 64
    codes = torch.randint(0, 1024, (1, 8, 20))
    # Stored in fp16: close to, not equal to, the float32 original.
    torch.testing.assert_close(loaded.decode(codes), codec.decode(codes), rtol=0, atol=2e-2)
    assert save_model(loaded, tmp_path / "again.pt") == digest  # fp16 → fp16 is lossless


def test_training_model_exports_without_weight_norm(tmp_path) -> None:
    torch.manual_seed(1)
    trained = Codec(tiny_config())  # weight norm on, as in training
    wav = torch.randn(1, 1, 3200)
    save_model(trained, tmp_path / "m.pt")
    loaded = load_model(tmp_path / "m.pt", cached=False)
    assert not loaded.config.seanet.weight_norm
    torch.testing.assert_close(
        loaded.decode(trained.eval().encode(wav, 4)),
        trained.decode(trained.encode(wav, 4)),
        rtol=0,
        atol=2e-2,
    )


def test_damaged_model_file_is_refused(codec: Codec, tmp_path) -> None:
    path = tmp_path / "m.pt"
    save_model(codec, path)
    payload = torch.load(path, weights_only=True)
    key = next(iter(payload["state_dict"]))
    payload["state_dict"][key] = payload["state_dict"][key] + 1
    torch.save(payload, path)
    with pytest.raises(ModelError, match="do not match the recorded hash"):
        load_model(path, cached=False)
    path.write_bytes(b"not a model")
    with pytest.raises(ModelError, match="cannot load model file"):
        load_model(path, cached=False)


def test_unknown_model_name(tmp_path, monkeypatch) -> None:
    monkeypatch.setenv("NEUCOMP_MODEL_DIR", str(tmp_path))
    with pytest.raises(ModelError, match="'nope' is not installed"):
        load_model("nope", cached=False)


# ------------------------------------------------------------- the frame-rate decoder


@pytest.fixture(
    params=[None, "global", "add", "phase"], ids=["free", "global", "harmonic", "harmonic-phase"]
)
def frame_codec(request) -> Codec:
    torch.manual_seed(0)
    config = tiny_config()
    config.decoder = "frame"
    harmonic = request.param in ("add", "phase")
    config.frame_decoder = {"dim": 32, "layers": 2, "harmonic": harmonic}
    if request.param == "global":
        config.frame_decoder["global_phase"] = True
        request.param = None
    if harmonic:
        config.frame_decoder["harmonic_mode"] = request.param
    model = Codec(config)
    for layer in model.quantizer.layers:
        layer.embed.normal_()
    if request.param:  # make the harmonic path as loud as the free one, and its f0 vary
        with torch.no_grad():
            model.decoder.harmonic_head.bias.zero_()
            model.decoder.harmonic_head.weight.normal_(std=0.3)
            model.decoder.harmonic_head.weight[-1].mul_(0.1)  # f0 near 100 Hz, as in speech
    return inference_copy(model)


@pytest.mark.parametrize("cuts", [[0, 50], [0, 1, 2, 17, 49, 50], [0, *range(1, 51)]])
def test_frame_decoder_streams_like_the_whole_signal(frame_codec: Codec, cuts) -> None:
    codes = torch.randint(0, 1024, (2, 4, 50))
    whole = frame_codec.decode(codes)
    assert whole.shape == (2, 1, 50 * 320)
    stream = frame_codec.stream_decoder()
    parts = [stream.push(codes[..., a:b]) for a, b in zip(cuts, cuts[1:], strict=False)]
    parts.append(stream.flush(batch=2))
    streamed = torch.cat(parts, dim=-1)
    assert streamed.shape == whole.shape
    if not frame_codec.decoder.cfg.harmonic:
        torch.testing.assert_close(streamed, whole, rtol=0, atol=1e-5)
        return
    # The harmonic oscillator integrates f0 over the whole stream, so float rounding of
    # f0 (~1e-7) grows into phase drift at the upper harmonics: the spectra agree to
    # 1 % of full scale, the waveforms only to a few per cent.
    window = torch.hann_window(512)

    def spectra(x: torch.Tensor) -> torch.Tensor:
        return torch.stft(
            x.reshape(-1, x.shape[-1]), 512, 128, window=window, return_complex=True
        ).abs()

    a, b = spectra(streamed), spectra(whole)
    torch.testing.assert_close(a, b, rtol=0, atol=0.01 * float(b.max()))
    torch.testing.assert_close(streamed, whole, rtol=0, atol=0.05 * float(whole.abs().max()))


@pytest.mark.parametrize("global_phase", [False, True])
def test_global_phase_makes_a_constant_phase_a_steady_tone(global_phase: bool) -> None:
    """One bin, one constant predicted phase in every frame: counted from time zero that
    is a steady sinusoid at the bin's centre; counted from each frame's start (the
    default), bin 3's frames are a quarter turn apart and cancel in the overlap-add."""
    from neucomp.nn.framedecoder import FrameDecoder, FrameDecoderConfig

    cfg = FrameDecoderConfig(latent_dim=8, dim=16, layers=1, hop=64, global_phase=global_phase)
    dec = FrameDecoder(cfg)
    bins, k = cfg.n_fft // 2 + 1, 3
    with torch.no_grad():
        dec.head.weight.zero_()
        dec.head.bias.zero_()
        dec.head.bias[:bins] = -20.0  # log magnitudes: silence …
        dec.head.bias[k] = 0.0  # … but bin k; all phases 0
    y = dec(torch.zeros(1, 8, 40))[0][0, 0, 4 * cfg.hop : -4 * cfg.hop]
    t = torch.arange(4 * cfg.hop, 36 * cfg.hop)
    tone = torch.cos(2 * torch.pi * k * t / cfg.n_fft)
    basis = torch.stack([tone, torch.sin(2 * torch.pi * k * t / cfg.n_fft)], 1)
    fit = basis @ torch.linalg.lstsq(basis, y[:, None]).solution
    explained = 1 - float((y[:, None] - fit).pow(2).sum() / y.pow(2).sum().clamp_min(1e-12))
    if global_phase:
        assert explained > 0.999 and float(y.abs().max()) > 1e-3
    else:
        assert explained < 0.5


def test_frame_decoder_looks_ahead_two_frames_at_most(frame_codec: Codec) -> None:
    codes = torch.randint(0, 1024, (1, 4, 30))
    changed = codes.clone()
    changed[..., 20:] = (changed[..., 20:] + 1) % 1024
    a, b = frame_codec.decode(codes), frame_codec.decode(changed)
    lookahead = frame_codec.decoder.cfg.lookahead_frames
    safe = (20 - lookahead) * 320 + 160  # the last sample no window of frame 20 reaches
    torch.testing.assert_close(a[..., :safe], b[..., :safe], rtol=0, atol=1e-6)
    assert not torch.allclose(a[..., safe : 20 * 320], b[..., safe : 20 * 320])


def test_frame_decoder_model_file_round_trip(frame_codec: Codec, tmp_path) -> None:
    path = tmp_path / "frame.pt"
    digest = save_model(frame_codec, path)
    loaded = load_model(path, cached=False)
    assert loaded.weights_hash == digest and loaded.config.decoder == "frame"
    codes = torch.randint(0, 1024, (1, 4, 20))
    a, b = loaded.decode(codes), frame_codec.decode(codes)
    if not frame_codec.decoder.cfg.harmonic:
        torch.testing.assert_close(a, b, rtol=0, atol=2e-3)
    else:  # fp16 weights move f0 by ~1e-3, which the oscillator turns into phase drift
        assert loaded.decoder.cfg.harmonic
        assert abs(float(a.pow(2).mean() / b.pow(2).mean()) - 1) < 0.05


@pytest.mark.parametrize("pitch_input", [False, True])
def test_frame_encoder_streams_like_the_whole_signal(pitch_input: bool) -> None:
    torch.manual_seed(0)
    config = tiny_config()
    config.encoder = "frame"
    config.frame_encoder = {"dim": 32, "layers": 2, "pitch_input": pitch_input}
    config.decoder, config.frame_decoder = "frame", {"dim": 32, "layers": 2}
    model = Codec(config)
    for layer in model.quantizer.layers:
        layer.embed.normal_()
    if pitch_input:
        torch.nn.init.normal_(model.encoder.pitch_embed.weight)
    codec = inference_copy(model)
    wav = torch.randn(2, 1, 24000 + 123)
    whole = codec.encode(wav, 8)
    assert whole.shape == (2, 8, 76)
    stream = codec.stream_encoder(8)
    cuts = [0, 1, 500, 640, 641, 9000, 24000 + 123]
    parts = [stream.push(wav[..., a:b]) for a, b in zip(cuts, cuts[1:], strict=False)]
    parts.append(stream.flush())
    assert torch.equal(torch.cat(parts, dim=-1), whole)
    # Causal: changing the audio after frame 40's hop leaves codes ≤ 40 alone.
    changed = wav.clone()
    changed[..., 41 * 320 :] += 1.0
    assert torch.equal(codec.encode(changed, 8)[..., :41], whole[..., :41])


def test_harmonic_oscillator_frames_overlap_add_to_one_continuous_tone() -> None:
    from neucomp.nn.framedecoder import FrameDecoder, FrameDecoderConfig, harmonic_frames

    cfg = FrameDecoderConfig(harmonic=True, harmonic_fmax=1000.0)
    decoder = FrameDecoder(cfg)
    frames = 40
    f0 = torch.full((1, frames), 210.0)
    spectra, last = harmonic_frames(f0, torch.tensor([0.3]), cfg)
    # frame f centred on sample (f + ½)·hop; spectra are scaled so that a harmonic's
    # peak bin is ≈ 1, i.e. as the free path's bins for a sinusoid of amplitude 4 / n_fft
    out = decoder.overlap_add(spectra)[0] * (cfg.n_fft / 4)
    t = torch.arange(out.shape[-1], dtype=torch.float64) - cfg.hop // 2
    psi = 0.3 + 2 * torch.pi * 210.0 * t / cfg.sample_rate
    tone = sum(torch.cos(k * psi) for k in range(1, 5))  # 4 harmonics below 1 kHz
    inner = slice(3 * cfg.hop, (frames - 3) * cfg.hop)
    torch.testing.assert_close(out[inner].double(), tone[inner], rtol=0, atol=0.02)
    expected_last = 0.3 + 2 * torch.pi * 210.0 * (frames - 1) * cfg.hop / cfg.sample_rate
    assert abs(float(last) - expected_last % (2 * torch.pi)) < 1e-3


def test_harmonic_training_pass_teaches_the_reference_pitch() -> None:
    torch.manual_seed(0)
    config = tiny_config()
    config.encoder = "frame"
    config.frame_encoder = {"dim": 32, "layers": 2, "pitch_input": True, "pitch_skip": True}
    config.decoder = "frame"
    config.frame_decoder = {"dim": 32, "layers": 2, "harmonic": True, "f0_skip": True}
    model = Codec(config)
    t = torch.arange(24000) / 24000
    wav = (0.1 * torch.sin(2 * torch.pi * 150.0 * t))[None, None].repeat(2, 1, 1)
    y, _, commit = model(wav, 4)
    assert y.shape == wav.shape
    f0_loss = model.aux_losses["f0"]
    # the untrained head predicts ~100 Hz for a 150 Hz tone: |log2(100 / 150)| ≈ 0.58
    assert 0.3 < float(f0_loss) < 0.9
    f0_loss.backward()
    assert model.decoder.harmonic_head.weight.grad.abs().sum() > 0
    assert model.encoder.pitch_embed.weight.grad.abs().sum() > 0
    # the linear pitch paths (zero at the start) get the f0 gradient too
    assert model.decoder.f0_from_latent.weight.grad.abs().sum() > 0
    model.zero_grad()
    y, _, _ = model(wav, 4)
    model.aux_losses["f0"].backward()
    assert model.encoder.pitch_to_latent.weight.grad.abs().sum() > 0
    # without teacher forcing the oscillator follows the (untrained, ~100 Hz) prediction
    y_own, _, _ = model(wav, 4, teacher_f0=False)
    assert not torch.allclose(y_own, y)


def test_phase_oracle_splits_a_frame_codec_into_magnitude_and_phase(frame_codec: Codec) -> None:
    """The oracle's crossings keep exactly one half of each: the reference's magnitude
    with the model's phase, and the model's magnitude with the reference's phase."""
    from neucomp.eval.phase_oracle import model_variants
    from neucomp.nn.pitch import centred_frames

    torch.manual_seed(1)
    t = torch.arange(20 * 320) / 24000
    wav = (0.1 * torch.sin(2 * torch.pi * 180 * t) + 0.01 * torch.randn_like(t))[None, None]
    found = model_variants(wav, frame_codec, 6.0)
    harmonic = frame_codec.decoder.cfg.harmonic
    assert ("model at the reference's pitch" in found) == harmonic
    dec = frame_codec.decoder
    frames = centred_frames(wav, dec.cfg.hop, dec.cfg.n_fft)[0]
    ref = torch.fft.rfft(frames * dec.window, dim=-1).transpose(1, 2)
    own = found["model"]
    assert own.shape == ref.shape
    crossed = found["reference magnitude, model phase"]
    torch.testing.assert_close(crossed.abs(), ref.abs(), rtol=1e-4, atol=1e-6)
    torch.testing.assert_close(found["model magnitude, reference phase"].abs(), own.abs())
    keep = (ref.abs() > 1e-3) & (own.abs() > 1e-3)
    assert torch.allclose(torch.angle(crossed * own.conj())[keep], torch.zeros(1), atol=1e-3)


def test_phase_oracle_analyses_a_waveform_decoder_on_the_same_grid() -> None:
    from neucomp.eval.phase_oracle import model_variants

    codec = inference_copy(Codec(tiny_config()))
    wav = 0.1 * torch.randn(1, 1, 20 * 320)
    found = model_variants(wav, codec, 6.0)
    assert set(found) == {
        "model",
        "model magnitude, reference phase",
        "reference magnitude, model phase",
    }
    assert found["model"].shape == (1, 641, 20)
