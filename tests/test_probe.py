"""The code probe (neucomp.eval.probe, EXPERIMENTS E18): its shapes, its target and
its error measure."""

from __future__ import annotations

import torch

from neucomp.eval.probe import FLOOR, Probe, _errors, log_spectrum
from neucomp.train.losses import mel_filterbank


def test_probe_maps_a_latent_to_one_spectrum_column_per_frame() -> None:
    probe = Probe(latent_dim=8, bins=426)
    assert probe(torch.randn(2, 8, 30)).shape == (2, 426, 30)


def test_the_target_is_the_floored_log_spectrum_one_column_per_hop() -> None:
    t = torch.arange(24000) / 24000
    tone = (0.1 * torch.sin(2 * torch.pi * 1000 * t)).reshape(1, 1, -1)
    spec = log_spectrum(tone, 320, 426)
    assert spec.shape == (1, 426, 24000 // 320 + 1)
    peak = int(spec[0, :, 40].argmax())
    assert abs(peak * 24000 / 1280 - 1000) < 24000 / 1280
    assert float(spec.min()) >= torch.log10(torch.tensor(FLOOR)) - 1e-6


def test_errors_are_zero_for_a_perfect_prediction_and_count_decibels() -> None:
    fb = mel_filterbank(24000, 1280, 64, area_norm=False)[:, :426]
    fb = fb[fb.sum(1) > 0]  # as the probe keeps them: the bands below 8 kHz
    ref = torch.rand(1, 426, 20) - 1.0
    zero = _errors(ref, ref, fb, 24000 / 1280)
    assert all(v == 0.0 for v in zero.values())
    off = _errors(ref + 0.5, ref, fb, 24000 / 1280)  # 10 dB louder everywhere
    assert abs(off["bin 0-4k"] - 10.0) < 1e-4 and abs(off["bin 4-8k"] - 10.0) < 1e-4
    assert abs(off["mel envelope"] - 10.0) < 1e-3
