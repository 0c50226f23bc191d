"""The encoder's search effort (`compress --effort`, model.SEARCH_EFFORTS): each effort's
codes come from its beams, a wider beam codes the latent closer, every effort's files
decode with the same decoder, and an unknown effort is a one-line usage error in the
API, the CLI and batches."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
from click.testing import CliRunner
from conftest import make_audio, write_audio

import neucomp
from neucomp import batch
from neucomp.cli import main
from neucomp.errors import UsageError
from neucomp.model import SEARCH_EFFORTS


@torch.no_grad()
def _latent_error(codec, wav: torch.Tensor, n_q: int, effort: str) -> float:
    wav = codec.pad_to_frames(wav)
    z, _ = codec.encoder(wav)
    codes, _ = codec.codes_of(z, n_q, wav, effort=effort)
    return float((codec.quantizer.decode(codes) - z).pow(2).mean())


def test_a_wider_search_codes_the_latent_closer_and_fast_is_greedy(tiny_model) -> None:
    codec = tiny_model
    wav = torch.from_numpy(make_audio(24000))[None]
    n_q = 4
    errors = {effort: _latent_error(codec, wav, n_q, effort) for effort in SEARCH_EFFORTS}
    assert errors["best"] <= errors["default"] < errors["fast"]
    with torch.no_grad():
        z, _ = codec.encoder(codec.pad_to_frames(wav))
    fast, _ = codec.codes_of(z, n_q, codec.pad_to_frames(wav), effort="fast")
    assert torch.equal(fast, codec.quantizer.encode(z, n_q))  # the plain greedy RVQ
    with pytest.raises(ValueError, match="offered: fast, default, best"):
        codec.search_beams("turbo")


def test_every_effort_decodes_and_the_default_follows_the_codec(tiny_model, monkeypatch) -> None:
    audio = make_audio(24000, 24000)
    files = {e: neucomp.compress(audio, 24000, 6.0, effort=e) for e in SEARCH_EFFORTS}
    assert files["fast"] != files["default"]
    for data in files.values():
        decoded, rate = neucomp.decompress(data)
        assert rate == 24000 and decoded.shape[-1] == audio.shape[-1]
        assert np.isfinite(decoded).all()
    # "default" is whatever the codec's own beams are: greedy ones give the fast file
    monkeypatch.setattr(tiny_model, "envelope_beam", 1)
    monkeypatch.setattr(tiny_model, "learned_beam", 1)
    assert neucomp.compress(audio, 24000, 6.0) == files["fast"]
    with pytest.raises(UsageError, match="unknown effort 'turbo'"):
        neucomp.compress(audio, 24000, 6.0, effort="turbo")


def test_the_cli_and_batches_take_the_effort(tiny_model, tmp_path: Path) -> None:
    audio = make_audio(24000 // 2, 24000)
    src = tmp_path / "in"
    src.mkdir()
    wav = write_audio(src / "a.wav", audio, 24000)
    runner = CliRunner()
    out = tmp_path / "a_fast.ecdc"
    result = runner.invoke(main, ["compress", "-q", "--effort", "fast", str(wav), str(out)])
    assert result.exit_code == 0, result.output
    assert out.read_bytes() == neucomp.compress(audio, 24000, 6.0, effort="fast")
    bad = runner.invoke(main, ["compress", "-q", "--effort", "turbo", str(wav), str(out)])
    assert bad.exit_code == 2 and "turbo" in bad.output and "Traceback" not in bad.output
    options = batch.CompressOptions(effort="best")
    summary = batch.run_batch(src, tmp_path / "out", "compress", quiet=True, options=options)
    assert summary.converted == 1 and not summary.failures
    made = (tmp_path / "out" / "a.ecdc").read_bytes()
    assert made == neucomp.compress(audio, 24000, 6.0, effort="best")
    with pytest.raises(UsageError, match="unknown effort"):
        batch.run_batch(
            src,
            tmp_path / "out2",
            "compress",
            quiet=True,
            options=batch.CompressOptions(effort="turbo"),
        )
