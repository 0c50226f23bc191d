"""The code LM: float model shape/causality, integer twin exactness and fidelity."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from neucomp.nn import intlm
from neucomp.nn.intlm import FREQ_BITS, IntLM, code_bits, quantize_lm, random_lm
from neucomp.nn.lm import CodesLM, LMConfig, bits_per_code

TINY = LMConfig(dim=32, layers=2, heads=4, ff=64, window=6, max_codebooks=8)


def structured_codes(k: int, t: int, seed: int = 0) -> np.ndarray:
    """Codes with the kind of regularity real ones have: a skewed choice among a few values
    per codebook (the same for every seed), runs of repeated frames, cross-codebook ties."""
    vocab = np.random.default_rng(1234).permutation(1024)[:24]
    rng = np.random.default_rng(seed)
    pick = np.minimum(rng.geometric(0.25, size=(k, t)) - 1, 23)
    codes = (vocab[pick] + 37 * np.arange(k)[:, None]) % 1024
    hold = rng.random(t) < 0.4
    for i in np.flatnonzero(hold[1:]) + 1:  # repeat the previous frame now and then
        codes[:, i] = codes[:, i - 1]
    codes[k // 2 :] = (codes[k // 2 :] + codes[: k - k // 2]) % 1024  # cross-codebook tie
    return codes


def test_float_model_is_causal_and_windowed():
    torch.manual_seed(0)
    model = CodesLM(TINY).eval()
    codes = torch.randint(0, 1024, (1, 3, 30))
    base = model(codes)
    assert base.shape == (1, 3, 30, 1024)
    changed = codes.clone()
    changed[0, 1, 10] = (changed[0, 1, 10] + 1) % 1024
    out = model(changed)
    # code at frame 10 is input to frame 11; each layer reaches window - 1 frames further
    assert torch.equal(out[..., :11, :], base[..., :11, :])
    assert not torch.allclose(out[..., 11, :], base[..., 11, :])
    last_seen = 11 + TINY.layers * (TINY.window - 1)
    assert not torch.allclose(out[..., last_seen, :], base[..., last_seen, :])
    assert torch.allclose(out[..., last_seen + 1 :, :], base[..., last_seen + 1 :, :])


@pytest.mark.parametrize("k", [1, 3, 8])
def test_step_path_equals_full_forward_exactly(k):
    lm = random_lm(TINY, seed=k)
    codes = torch.from_numpy(structured_codes(k, 3 * TINY.window + 5, seed=k))  # compacts caches
    full = lm.forward(codes)
    state = lm.start(k)
    steps = [lm.step(state, codes[:, t - 1] if t else None) for t in range(codes.shape[1])]
    assert torch.equal(torch.stack(steps, 1), full)


def test_tables_are_valid_frequencies():
    lm = random_lm(TINY, seed=3, spread=1.0)  # very peaked: many symbols hit the floor
    freqs = lm.forward(torch.from_numpy(structured_codes(8, 40)))
    assert freqs.dtype == torch.int64
    assert torch.all(freqs.sum(-1) == 1 << FREQ_BITS)
    assert freqs.min() >= 1
    assert (freqs == 1).any()  # the floor is actually exercised


def test_more_codebooks_than_trained_is_refused():
    lm = random_lm(TINY)
    with pytest.raises(ValueError):
        lm.start(TINY.max_codebooks + 1)


def test_isqrt_is_exact_near_squares():
    roots = [0, 1, 2, 3, 1000, 2**20 + 7, 2**26 - 1, 94906265]
    n = sorted({max(0, r * r + d) for r in roots for d in (-1, 0, 1)} | {2**53 - 1})
    got = intlm._isqrt(torch.tensor(n)).tolist()
    assert got == [math.isqrt(v) for v in n]


def test_arithmetic_shift_rounds_toward_minus_infinity():
    # requantisation relies on >> being floor division for negative numbers
    x = torch.tensor([-5, -4, -1, 1, 5])
    assert torch.equal(x >> 1, torch.tensor([-3, -2, -1, 0, 2]))
    assert torch.equal(intlm._rq(x, torch.tensor(1), 1), torch.tensor([-2, -2, 0, 1, 3]))


def test_float32_matmul_sums_stay_exact_at_the_bound():
    # the worst case the integer LM allows: 1040 products of 127 x 127 in any order
    n = 1040
    assert n * 127 * 127 < 2**24
    x = torch.full((1, n), 127.0)
    w = torch.full((n, 3), -127.0)
    assert intlm._matmul(x, w).tolist() == [[-n * 127 * 127] * 3]


def test_int8_and_float32_matmul_paths_agree(monkeypatch):
    lm = random_lm(TINY, seed=7)
    codes = torch.from_numpy(structured_codes(8, 30))
    with_int_mm = lm.forward(codes)
    monkeypatch.setattr(intlm, "USE_INT_MM", False)
    assert torch.equal(random_lm(TINY, seed=7).forward(codes), with_int_mm)


def test_inner_dimension_over_the_bound_is_refused():
    big = LMConfig(dim=32, layers=1, heads=4, ff=1100, window=4, max_codebooks=2)
    with pytest.raises(ValueError, match="2\\^24"):
        random_lm(big)


def _train_tiny(codes: torch.Tensor, steps: int = 40) -> CodesLM:
    """A few steps of sign-SGD (torch.optim would import torch._dynamo: seconds)."""
    torch.manual_seed(0)
    model = CodesLM(TINY)
    for _ in range(steps):
        model.zero_grad()
        bits_per_code(model(codes), codes).backward()
        with torch.no_grad():
            for p in model.parameters():
                p -= 3e-3 * p.grad.sign()
    return model.eval()


def test_integer_model_codes_almost_as_well_as_the_float_model():
    codes = torch.from_numpy(np.stack([structured_codes(4, 48, seed=s) for s in range(6)]))
    model = _train_tiny(codes)
    lm = quantize_lm(model, [codes[:3]])
    held_out = torch.from_numpy(structured_codes(4, 48, seed=99))
    with torch.no_grad():
        float_bits = bits_per_code(model(held_out[None]), held_out[None]).item()
    int_bits = code_bits(lm.forward(held_out), held_out).item() / held_out.numel()
    assert float_bits < 6.0  # the model learnt something …
    assert int_bits < float_bits * 1.02 + 0.02  # … and its integer twin keeps it


def test_model_arrays_round_trip():
    lm = random_lm(TINY, seed=5)
    again = IntLM(TINY, {k: v.numpy() for k, v in intlm.to_arrays(lm).items()})
    codes = torch.from_numpy(structured_codes(5, 10))
    assert torch.equal(lm.forward(codes), again.forward(codes))
    assert math.isclose(
        float(code_bits(lm.forward(codes), codes)), code_bits(again.forward(codes), codes).item()
    )
