"""The predictive (DPCM) envelope coder and the codebook layout (EXPERIMENTS E19): it
codes closer than a plain RVQ at equal stages, encoder and decoder agree on every frame,
streams cut anywhere give the same codes and samples, the layout puts each codebook in
its slot, and a model refitted from an envelope model still decodes that model's streams
bit for bit."""

from __future__ import annotations

import io
from pathlib import Path

import numpy as np
import pytest
import torch
from conftest import make_audio, tiny_config

import neucomp
from neucomp.errors import ModelError
from neucomp.model import ENVELOPE_BEAM, LEARNED_BEAM, Codec
from neucomp.nn.envelope import EnvelopeCoder, envelope_slots, interleave, split

LAYOUT = "elelelllellellelellellelellellel"  # 1+1, 2+2, 3+5, 6+10, 12+20


def _smooth_sequences(n: int = 400, frames: int = 40, bands: int = 12, seed: int = 0):
    """Envelope-like sequences [n, bands, frames]: a level per sequence plus a slowly
    moving shape (an AR(1) process, as half-overlapping windows give)."""
    g = torch.Generator().manual_seed(seed)
    level = 3 * torch.randn(n, 1, 1, generator=g)
    x = torch.zeros(n, bands, frames)
    state = torch.randn(n, bands, generator=g)
    for t in range(frames):
        state = 0.95 * state + 0.3 * torch.randn(n, bands, generator=g)
        x[:, :, t] = state
    return level + x - 2.0


def _error(coder: EnvelopeCoder, seqs: torch.Tensor, k: int) -> float:
    codes, _ = coder.encode(seqs, k)
    decoded, _ = coder.decode(codes)
    return float((decoded - seqs).pow(2).mean())


def test_prediction_codes_the_envelope_closer_than_plain_stages() -> None:
    seqs = _smooth_sequences()
    plain = EnvelopeCoder(24000, 320, 8, bands=12, codebooks=3, size=64)
    dpcm = EnvelopeCoder(24000, 320, 8, bands=12, codebooks=3, size=64, prediction=0.9)
    torch.manual_seed(0)
    plain.fit(seqs, iters=8)
    torch.manual_seed(0)
    dpcm.fit(seqs, iters=8, closed_loop_stages=2)
    held_out = _smooth_sequences(100, seed=1)
    for k in (1, 2, 3):
        assert _error(dpcm, held_out, k) < 0.7 * _error(plain, held_out, k)
    assert torch.allclose(dpcm.mean, seqs.mean((0, 2)), atol=1e-4)
    with pytest.raises(ValueError, match="prediction"):
        EnvelopeCoder(24000, 320, 8, bands=12, codebooks=3, size=64, prediction=1.0)


def test_the_predictive_coder_streams_and_its_decoder_tracks_its_encoder() -> None:
    seqs = _smooth_sequences(6, frames=50)
    coder = EnvelopeCoder(24000, 320, 8, bands=12, codebooks=3, size=64, prediction=0.9)
    coder.fit(_smooth_sequences(), iters=5)
    codes, end = coder.encode(seqs, 2)
    assert codes.shape == (6, 2, 50) and codes.dtype == torch.long
    decoded, decoder_end = coder.decode(codes)
    # the decoder's last frame is the encoder's own reconstruction, bit for bit
    assert torch.equal(decoder_end, end)
    # cut anywhere, with the state carried: the same codes and the same frames
    pieces, state = [], None
    for a, b in ((0, 1), (1, 17), (17, 17), (17, 50)):
        c, state = coder.encode(seqs[..., a:b], 2, state)
        pieces.append(c)
    assert torch.equal(torch.cat(pieces, -1), codes)
    out, state = [], None
    for a, b in ((0, 9), (9, 10), (10, 50)):
        d, state = coder.decode(codes[..., a:b], state)
        out.append(d)
    assert torch.equal(torch.cat(out, -1), decoded)
    # an error in one frame's codes fades away (the prediction decays, ρ < 1)
    hit = codes.clone()
    hit[:, 0, 5] = (hit[:, 0, 5] + 1) % 64
    diff = (coder.decode(hit)[0] - decoded).abs().amax((0, 1))
    assert diff[:5].max() == 0 and diff[5] > 0 and diff[-1] < 0.05 * diff[5]


def test_the_beam_search_finds_the_best_coding_and_codes_closer_than_greedy() -> None:
    from itertools import product

    from neucomp.nn.search import beam_search

    rng = np.random.default_rng(0)
    books = [rng.normal(size=(4, 3)) * s for s in (1.0, 0.6, 0.4)]
    norms = [(b**2).sum(1) for b in books]
    frames = rng.normal(size=(50, 3))
    # a beam as wide as the last stage's choices is exhaustive: the best of all 4^3 sums
    codes, coded = beam_search(frames, books, norms, beam=16)
    for i, x in enumerate(frames):
        errors = {
            c: ((x - sum(b[j] for b, j in zip(books, c, strict=True))) ** 2).sum()
            for c in product(range(4), repeat=3)
        }
        best = min(errors, key=lambda c: (errors[c], c))
        assert errors[tuple(codes[:, i])] == pytest.approx(errors[best], abs=1e-12)
        # the sum it returns is the decoder's sum, in the decoder's order
        assert np.array_equal(
            coded[i], books[0][codes[0, i]] + books[1][codes[1, i]] + books[2][codes[2, i]]
        )
    # beam 1 is the greedy search
    greedy, _ = beam_search(frames, books, norms, beam=1)
    residual, want = frames.copy(), []
    for b in books:
        idx = ((residual[:, None, :] - b[None]) ** 2).sum(-1).argmin(1)
        residual -= b[idx]
        want.append(idx)
    assert np.array_equal(greedy, np.stack(want))

    # in the closed loop: closer than greedy, the decoder still tracks it, streams cut
    # anywhere give the same codes
    seqs = _smooth_sequences(6, frames=50)
    coder = EnvelopeCoder(24000, 320, 8, bands=12, codebooks=3, size=64, prediction=0.9)
    coder.fit(_smooth_sequences(), iters=5)
    greedy_error = _error(coder, seqs, 3)
    codes, end = coder.encode(seqs, 3, beam=8)
    decoded, decoder_end = coder.decode(codes)
    assert float((decoded - seqs).pow(2).mean()) < 0.9 * greedy_error
    assert torch.equal(decoder_end, end)
    pieces, state = [], None
    for a, b in ((0, 7), (7, 8), (8, 50)):
        c, state = coder.encode(seqs[..., a:b], 3, state, beam=8)
        pieces.append(c)
    assert torch.equal(torch.cat(pieces, -1), codes)


def test_the_learned_rvq_beam_codes_the_latent_closer_and_its_budget_bounds_it() -> None:
    from neucomp.model import LEARNED_SEARCH_BUDGET
    from neucomp.nn.quantizer import ResidualVectorQuantizer

    torch.manual_seed(0)
    rvq = ResidualVectorQuantizer(16, 4, 64)
    z = torch.randn(2, 16, 300)
    for k, layer in enumerate(rvq.layers):  # codebooks of shrinking scale, as trained ones
        layer.embed.copy_(torch.randn(64, 16) * 0.6**k)

    def error(codes: torch.Tensor) -> float:
        return float((rvq.decode(codes) - z).pow(2).mean())

    greedy = rvq.encode(z, 4)
    assert torch.equal(rvq.encode(z, 4, beam=1), greedy)
    beamed = rvq.encode(z, 4, beam=8)
    assert beamed.shape == greedy.shape and beamed.dtype == torch.long
    assert error(beamed) < 0.97 * error(greedy)
    # frames are searched independently: any split of them gives the same codes
    halves = torch.cat(
        [rvq.encode(z[..., :111], 4, beam=8), rvq.encode(z[..., 111:], 4, beam=8)], -1
    )
    assert torch.equal(halves, beamed)
    # the search's float64 copy of a codebook follows in-place changes to it
    with torch.no_grad():
        for layer in rvq.layers:
            layer.embed.mul_(-1.0)
    assert torch.equal(rvq.encode(-z, 4, beam=8), beamed)
    codec = _dpcm_codec()
    assert codec.learned_beam_for(1) == codec.learned_beam_for(4) == LEARNED_BEAM
    assert codec.learned_beam_for(16) == max(1, LEARNED_SEARCH_BUDGET // 16)


def test_the_layout_puts_each_codebook_in_its_slot() -> None:
    assert [envelope_slots(k, LAYOUT) for k in (2, 4, 8, 16, 32)] == [
        (1, 1),
        (2, 2),
        (3, 5),
        (6, 10),
        (12, 20),
    ]
    env = torch.arange(3)[None, :, None].expand(1, 3, 2)
    learned = 10 + torch.arange(5)[None, :, None].expand(1, 5, 2)
    codes = interleave(env, learned, LAYOUT)
    assert codes[0, :, 0].tolist() == [0, 10, 1, 11, 2, 12, 13, 14]
    e, l_ = split(codes, LAYOUT)
    assert torch.equal(e, env) and torch.equal(l_, learned)
    with pytest.raises(ValueError, match="do not fit"):
        interleave(env[:, :2], learned, LAYOUT)
    config = tiny_config()
    config.envelope_bands, config.envelope_layout = 12, "el" * 15 + "ex"
    with pytest.raises(ModelError, match="layout"):
        Codec(config)
    config.envelope_layout, config.envelope_codebooks = LAYOUT, 11
    with pytest.raises(ModelError, match="12 envelope codebooks"):
        Codec(config)


def _dpcm_codec(seed: int = 0) -> Codec:
    torch.manual_seed(seed)
    config = tiny_config()
    config.envelope_bands, config.envelope_codebooks = 12, 12
    config.envelope_prediction, config.envelope_layout = 0.9, LAYOUT
    codec = Codec(config).eval()
    audio = torch.from_numpy(make_audio(24000 * 3, seed=seed))[None]
    env, _ = codec.envelope.analysis(codec.pad_to_frames(audio))
    codec.envelope.fit(env, iters=5)
    with torch.no_grad():
        codec.envelope.to_latent.weight.normal_(std=0.1)
    return codec


def test_a_predictive_model_streams_exactly_as_it_codes_whole_files() -> None:
    codec = _dpcm_codec()
    d = codec.config.to_dict()
    assert d["envelope_prediction"] == 0.9 and d["envelope_layout"] == LAYOUT
    wav = torch.from_numpy(make_audio(320 * 50 + 77))[None]
    # the greedy search: every bandwidth's codes are a prefix of the next one's
    codec.envelope_beam = codec.learned_beam = 1
    greedy = codec.encode(wav, 8)
    assert greedy.shape == (1, 8, 51)
    env, _ = codec.envelope.analysis(codec.pad_to_frames(wav))
    assert torch.equal(split(greedy, LAYOUT)[0], codec.envelope.encode(env, 3)[0])
    assert torch.equal(codec.encode(wav, 4), greedy[:, :4])
    # the default beams pick other codes, and stream exactly as they code whole files
    codec.envelope_beam, codec.learned_beam = ENVELOPE_BEAM, LEARNED_BEAM
    whole = codec.encode(wav, 8)
    assert not torch.equal(whole, greedy)
    assert torch.equal(
        split(whole, LAYOUT)[0], codec.envelope.encode(env, 3, beam=ENVELOPE_BEAM)[0]
    )
    enc = codec.stream_encoder(8)
    cuts = ((0, 1000), (1000, 7777), (7777, wav.shape[-1]))
    streamed = torch.cat([*(enc.push(wav[..., a:b]) for a, b in cuts), enc.flush()], -1)
    assert torch.equal(streamed, whole)
    decoded = codec.decode(whole)
    dec = codec.stream_decoder()
    pushed = [dec.push(whole[..., :1]), dec.push(whole[..., 1:7]), dec.push(whole[..., 7:])]
    assert torch.allclose(torch.cat([*pushed, dec.flush()], -1), decoded, atol=1e-5)
    # a new stream starts from the mean again: the same codes decode to the same samples
    again = torch.cat([dec.push(whole), dec.flush()], -1)
    assert torch.allclose(again, decoded, atol=1e-5)


def test_a_refitted_envelope_model_decodes_the_streams_of_the_one_it_came_from(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """`add-envelope` on a model that has an envelope: the new model codes with its own
    (predictive) envelope, and the old model's streams (and its plain predecessor's)
    still decode as they did, by the old envelope coder kept inside the new model."""
    from conftest import build_model_file
    from train.test_train import _tiny_corpus

    from neucomp import registry
    from neucomp.container import EcdcReader
    from neucomp.train.envelope import add_envelope

    installed = tmp_path / "installed"
    installed.mkdir()
    base = build_model_file(installed)
    monkeypatch.setenv("NEUCOMP_MODEL_DIR", str(installed))
    corpus = _tiny_corpus(tmp_path / "corpus")
    x = make_audio(2 * 24000)[:1]

    def install(path: Path) -> Codec:
        base.write_bytes(path.read_bytes())
        registry._MODELS.clear()
        return registry.load_model()

    plain = registry.load_model(cached=False)
    plain_stream = neucomp.compress(x, 24000, 6.0, coder="plain")
    plain_out = neucomp.decompress(plain_stream)[0]
    first = tmp_path / "first.pt"
    add_envelope(base, first, corpus, bands=12, batches=2)
    old = install(first)
    old_stream = neucomp.compress(x, 24000, 6.0, coder="plain")
    old_out = neucomp.decompress(old_stream)[0]

    second = tmp_path / "second.pt"
    add_envelope(base, second, corpus, bands=12, batches=3, prediction=0.9, layout=LAYOUT)
    new = install(second)
    assert new.config.envelope_prediction == 0.9 and new.config.envelope_layout == LAYOUT
    assert list(new.config.envelope_predecessors) == [old.weights_hash]
    assert new.config.plain_predecessors == [plain.weights_hash]
    assert set(new.code_hashes) == {new.weights_hash, old.weights_hash, plain.weights_hash}
    view = new.predecessor_view(old.weights_hash)
    for ours, theirs in zip(
        view.envelope.quantizer.layers, old.envelope.quantizer.layers, strict=True
    ):
        assert torch.equal(ours.embed, theirs.embed)
    np.testing.assert_array_equal(neucomp.decompress(old_stream)[0], old_out)
    np.testing.assert_array_equal(neucomp.decompress(plain_stream)[0], plain_out)
    new_stream = neucomp.compress(x, 24000, 6.0, coder="plain")
    assert EcdcReader(io.BytesIO(new_stream)).header.model_hash.hex() == new.weights_hash
    out, _ = neucomp.decompress(new_stream)
    assert out.shape == x.shape and np.isfinite(out).all()
    with pytest.raises(ModelError, match="was not made from"):
        new.predecessor_view("ab" * 32)


def test_the_log_spread_equaliser_corrects_levels_and_means_gains_in_db() -> None:
    from neucomp.nn.envelope import EnvelopeEqualiser, SpectralEnvelope

    analysis = SpectralEnvelope(24000, 320, bands=20)
    x = torch.from_numpy(make_audio(320 * 30, seed=4))[None]
    env, _ = analysis(x)
    for log_spread in (False, True):
        eq = EnvelopeEqualiser(analysis, 1, log_spread=log_spread)
        fixed = torch.cat([eq.push(0.1 * x, env), eq.flush()], -1)
        assert torch.allclose(fixed, x, atol=1e-3)  # one gain everywhere: both the same
    # bands asking for +20 and -20 dB alternately: between them the linear mean of the
    # gains leans to the louder one, the log mean lies in between
    frames = x.unfold(-1, 640, 320) * analysis.window
    tilt = env.clone()
    tilt[:, 0::2] += 1.0
    tilt[:, 1::2] -= 1.0
    linear = EnvelopeEqualiser(analysis, 1)._gains(frames, tilt[..., 1:])[1]
    geometric = EnvelopeEqualiser(analysis, 1, log_spread=True)._gains(frames, tilt[..., 1:])[1]
    assert float(torch.log10(linear).mean()) > float(torch.log10(geometric).mean()) + 0.3


def test_a_stereo_48khz_model_takes_the_predictive_envelope(tmp_path: Path) -> None:
    """The design carries over to the 48 kHz stereo model (issue 15): one envelope of
    the channels' magnitudes per frame, windows of two 640-sample hops, both channels
    equalised by the same gains; stereo in, stereo out, and streams cut anywhere give the
    same codes."""
    from conftest import tiny_hq_config

    from neucomp.registry import save_model

    torch.manual_seed(0)
    config = tiny_hq_config()
    config.envelope_bands, config.envelope_n_fft = 16, 2 * config.hop_length
    config.envelope_prediction = 0.9
    codec = Codec(config).eval()
    rng = np.random.default_rng(0)
    left = np.sin(np.linspace(0, 2000, 48000 + 77)).astype(np.float32)
    stereo = np.stack([0.3 * left, 0.05 * rng.standard_normal(left.size).astype(np.float32)])
    # fitted on this signal at the level the container codes it at (-23 dBFS)
    levelled = torch.from_numpy(stereo * 10 ** (-23 / 20) / np.sqrt(np.mean(stereo**2)))[None]
    env, _ = codec.envelope.analysis(codec.pad_to_frames(levelled))
    assert env.shape[1:] == (16, 76)
    codec.envelope.fit(env, iters=3)
    path = tmp_path / "neucomp_48khz.pt"
    save_model(codec, path)
    data = neucomp.compress(stereo, 48000, 6.0, model=str(path), coder="plain")
    out, rate = neucomp.decompress(data, model=str(path))
    assert rate == 48000 and out.shape == stereo.shape and np.isfinite(out).all()
    assert not np.allclose(out[0], out[1])  # two channels, not one copied
    x = torch.from_numpy(stereo)[None]
    whole = codec.encode(x, 8)
    enc = codec.stream_encoder(8)
    pieces = [enc.push(x[..., a:b]) for a, b in ((0, 5000), (5000, 30001), (30001, x.shape[-1]))]
    assert torch.equal(torch.cat([*pieces, enc.flush()], -1), whole)
