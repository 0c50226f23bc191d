"""The widened warm start: a codec at k times its source's width computes what the source
did, and its channel copies still come apart when it trains."""

from __future__ import annotations

import dataclasses
from pathlib import Path

import pytest
import torch
from conftest import tiny_config

from neucomp.model import Codec
from neucomp.registry import save_model
from neucomp.train.common import warm_start
from neucomp.train.widen import width_factor


def _wider(k: int, **changes) -> Codec:
    base = tiny_config()
    seanet = dataclasses.replace(
        base.seanet, base_width=base.seanet.base_width * k, lstm_layers=2, **changes
    )
    return Codec(dataclasses.replace(base, seanet=seanet))


@pytest.mark.parametrize(("k", "weight_norm"), [(2, False), (3, True)])
def test_a_widened_codec_computes_what_its_source_did(
    tmp_path: Path, k: int, weight_norm: bool
) -> None:
    torch.manual_seed(1)
    base = tiny_config()
    donor = Codec(dataclasses.replace(base, seanet=dataclasses.replace(base.seanet, lstm_layers=2)))
    donor.eval()
    save_model(donor, tmp_path / "donor.pt")
    torch.manual_seed(2)
    wide = _wider(k, weight_norm=weight_norm).eval()
    fresh = warm_start(wide, tmp_path / "donor.pt")
    # Weight-normed tensors are set through their folded weight, so only they may be listed.
    assert [name for name in fresh if "parametrizations" not in name] == []

    x = 0.1 * torch.randn(1, 1, 1920)
    with torch.no_grad():
        z_donor = donor.encoder(x)[0]
        torch.testing.assert_close(wide.encoder(x)[0], z_donor, rtol=0, atol=5e-3)  # fp16 file
        torch.testing.assert_close(
            wide.decoder(z_donor)[0], donor.decoder(z_donor)[0], rtol=0, atol=5e-3
        )

    # The first conv's k copies of a channel are equal, but their gradients differ:
    # the random shares downstream break the symmetry, so the copies can come apart.
    first = wide.encoder.layers[0].conv
    width = donor.encoder.layers[0].conv.weight.shape[0]
    copies = first.weight.detach().reshape(k, width, -1)
    torch.testing.assert_close(copies[1], copies[0])
    wide.train()
    (wide.decoder(wide.encoder(x)[0])[0] - x).square().mean().backward()
    raw = first.parametrizations.weight.original1 if weight_norm else first.weight
    grads = raw.grad.reshape(k, width, -1)
    assert (grads[1] - grads[0]).abs().max() > 0.01 * grads.abs().max() > 0


def test_only_an_integer_factor_on_the_same_body_is_a_widening() -> None:
    ours = {"seanet": {"base_width": 32, "ratios": [2, 4], "weight_norm": True}}
    assert width_factor(ours, {"seanet": {"base_width": 16, "ratios": [2, 4]}}) == 2
    assert width_factor(ours, {"seanet": {"base_width": 8, "ratios": [2, 4]}}) == 4
    assert width_factor(ours, {"seanet": {"base_width": 32, "ratios": [2, 4]}}) == 1
    # Not widenings: the warm start falls back to copying tensors whose shapes agree.
    assert width_factor(ours, {"seanet": {"base_width": 12, "ratios": [2, 4]}}) == 1
    assert width_factor(ours, {"seanet": {"base_width": 64, "ratios": [2, 4]}}) == 1
    assert width_factor(ours, {"seanet": {"base_width": 16, "ratios": [2, 5]}}) == 1
