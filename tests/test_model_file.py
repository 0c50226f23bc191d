"""Reading a model file: every weight comes from the file, none from the build's draws."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from conftest import build_model_file, tiny_config

from neucomp.model import Codec
from neucomp.registry import _random_init_skipped, load_model


@pytest.mark.parametrize("decoder", ["seanet", "frame"])
def test_a_loaded_model_is_the_saved_one_whatever_the_rng(tmp_path: Path, decoder: str) -> None:
    path = build_model_file(tmp_path, seed=3, decoder=decoder)
    torch.manual_seed(3)
    saved = load_model(path, cached=False)
    x = 0.1 * torch.randn(1, 1, 4000)
    with torch.no_grad():
        ref = saved.decode(saved.encode(x, 4))
    for seed in (0, 1):  # a different RNG state when the model is built
        torch.manual_seed(seed)
        again = load_model(path, cached=False)
        with torch.no_grad():
            assert torch.equal(again.decode(again.encode(x, 4)), ref)
        for name, value in saved.state_dict().items():
            assert torch.equal(again.state_dict()[name], value), name


def test_loaded_codebooks_have_statistics_of_their_own(tmp_path: Path) -> None:
    model = load_model(build_model_file(tmp_path), cached=False)
    quantizers = [m for m in model.modules() if hasattr(m, "restart_statistics")]
    assert quantizers
    for vq in quantizers:  # training on from the file would not re-run k-means over it
        assert bool(vq.initialized)
        assert torch.equal(vq.embed_sum, vq.embed)


def test_skipping_the_draws_is_undone_after_the_build_even_on_error() -> None:
    built_normally = Codec(tiny_config())
    weight = next(built_normally.parameters())
    assert weight.abs().sum() > 0
    with pytest.raises(RuntimeError, match="boom"), _random_init_skipped():
        raise RuntimeError("boom")
    t = torch.zeros(1000)
    torch.nn.init.uniform_(t)
    assert t.abs().sum() > 0  # the initialisers draw again
