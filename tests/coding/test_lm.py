"""The code LM: float model shape/causality, integer twin exactness and fidelity."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from neucomp.coding import intlm
from neucomp.coding.intlm import FREQ_BITS, IntLM, code_bits
from neucomp.nn.lm import CodesLM, LMConfig, bits_per_code
from neucomp.train import quantize
from neucomp.train.quantize import quantize_lm, random_lm

TINY = LMConfig(dim=32, layers=2, heads=4, ff=64, window=6, max_codebooks=8)
TINY_INTRA = LMConfig(dim=32, layers=2, heads=4, ff=64, window=6, max_codebooks=8, intra=True)
both = pytest.mark.parametrize("config", [TINY, TINY_INTRA], ids=["plain", "intra"])


def step_all(lm: IntLM, codes: torch.Tensor) -> torch.Tensor:
    """Tables [K, T, card] through `step`, frame by frame (and code by code with intra)."""
    state = lm.start(codes.shape[0])
    return torch.stack(
        [
            lm.step(state, codes[:, t - 1] if t else None, lambda k, _, t=t: int(codes[k, t]))
            for t in range(codes.shape[1])
        ],
        1,
    )


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


def test_intra_float_model_sees_earlier_codes_of_the_frame_only():
    torch.manual_seed(0)
    model = CodesLM(TINY_INTRA).eval()
    with torch.no_grad():  # intra_proj starts at zero: make it bite
        model.intra_proj.weight.normal_(0, 0.3)
    codes = torch.randint(0, 1024, (2, 5, 12))
    base = model(codes)
    changed = codes.clone()
    changed[:, 2, 7] = (changed[:, 2, 7] + 1) % 1024
    out = model(changed)
    assert torch.equal(out[:, :, :7], base[:, :, :7])  # earlier frames
    assert torch.equal(out[:, :3, 7], base[:, :3, 7])  # codes 0..2 of the frame itself
    assert not torch.allclose(out[:, 3:, 7], base[:, 3:, 7])  # codes 3.. see code 2
    heads = torch.tensor([1, 3, 4])  # the training path: a subset of the heads
    assert torch.allclose(model(codes, heads=heads), base[:, heads], atol=1e-5)


def test_intra_lm_starts_as_the_plain_lm():
    torch.manual_seed(0)
    plain = CodesLM(TINY).eval()
    torch.manual_seed(0)
    intra = CodesLM(TINY_INTRA).eval()
    codes = torch.randint(0, 1024, (1, 4, 9))
    assert torch.equal(plain(codes), intra(codes))


@both
@pytest.mark.parametrize("k", [1, 3, 8])
def test_step_path_equals_full_forward_exactly(config, k):
    lm = random_lm(config, seed=k)
    codes = torch.from_numpy(structured_codes(k, 3 * config.window + 5, seed=k))  # compacts
    assert torch.equal(step_all(lm, codes), lm.forward(codes))


def test_intra_tables_follow_the_chosen_codes():
    lm = random_lm(TINY_INTRA, seed=2, spread=0.5)
    codes = torch.from_numpy(structured_codes(4, 5))
    other = codes.clone()
    other[1, 3] = (other[1, 3] + 1) % 1024
    a, b = lm.forward(codes), lm.forward(other)
    assert torch.equal(a[:2, :4], b[:2, :4]) and torch.equal(a[:, :3], b[:, :3])
    assert not torch.equal(a[2:, 3], b[2:, 3])
    with pytest.raises(ValueError, match="choose"):
        lm.step(lm.start(4), None)
    with pytest.raises(ValueError, match="out of range"):
        lm.step(lm.start(4), None, lambda k, f: 1024)


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


@both
def test_int8_and_float32_matmul_paths_agree(monkeypatch, config):
    lm = random_lm(config, seed=7)
    codes = torch.from_numpy(structured_codes(8, 30))
    with_int_mm = lm.forward(codes)
    monkeypatch.setattr(intlm, "USE_INT_MM", False)
    assert torch.equal(random_lm(config, seed=7).forward(codes), with_int_mm)


def test_multipliers_stay_below_their_bound_at_powers_of_two():
    for bits in (16, 31):
        for top in (1.0, 0.25, 3.0, 1 - 2.0**-40):
            mult, shift = quantize._mult_shift(torch.tensor([top, top / 3]), bits)
            assert mult.max() < 1 << bits and mult.max() >= 1 << (bits - 1)
            assert abs(mult[0] / 2.0**shift - top) <= 2.0 ** -(shift + 1)


def test_inner_dimension_over_the_bound_is_refused():
    big = LMConfig(dim=32, layers=1, heads=4, ff=1100, window=4, max_codebooks=2)
    with pytest.raises(ValueError, match="2\\^24"):
        random_lm(big)


def _train_tiny(codes: torch.Tensor, config: LMConfig = TINY, steps: int = 40) -> CodesLM:
    """A few steps of sign-SGD (torch.optim would import torch._dynamo: seconds)."""
    torch.manual_seed(0)
    model = CodesLM(config)
    for _ in range(steps):
        model.zero_grad()
        bits_per_code(model(codes), codes).backward()
        with torch.no_grad():
            for p in model.parameters():
                p -= 3e-3 * p.grad.sign()
    return model.eval()


def _tiny_bits(config: LMConfig) -> tuple[float, float]:
    """Held-out bits per code of a briefly trained float model and of its integer twin."""
    codes = torch.from_numpy(np.stack([structured_codes(4, 48, seed=s) for s in range(6)]))
    model = _train_tiny(codes, config)
    lm = quantize_lm(model, [codes[:3]])
    held_out = torch.from_numpy(structured_codes(4, 48, seed=99))
    with torch.no_grad():
        float_bits = bits_per_code(model(held_out[None]), held_out[None]).item()
    int_bits = code_bits(lm.forward(held_out), held_out).item() / held_out.numel()
    return float_bits, int_bits


@both
def test_integer_model_codes_almost_as_well_as_the_float_model(config):
    float_bits, int_bits = _tiny_bits(config)
    assert float_bits < 6.5  # the model learnt something (uniform: 10 bits) …
    assert abs(int_bits - float_bits) < float_bits * 0.02 + 0.02  # … and its twin keeps it


@both
def test_model_arrays_round_trip(config):
    lm = random_lm(config, seed=5)
    again = IntLM(config, {k: v.numpy() for k, v in intlm.to_arrays(lm).items()})
    codes = torch.from_numpy(structured_codes(5, 10))
    assert torch.equal(lm.forward(codes), again.forward(codes))
    assert math.isclose(
        float(code_bits(lm.forward(codes), codes)), code_bits(again.forward(codes), codes).item()
    )


@both
def test_dequantized_model_computes_what_the_integer_one_does(config, tmp_path):
    # A shipped .lm holds only integers; training warm-starts from its float equivalent.
    from neucomp import registry
    from neucomp.train.common import warm_start
    from neucomp.train.quantize import dequantize_lm

    codes = torch.from_numpy(np.stack([structured_codes(4, 48, seed=s) for s in range(6)]))
    trained = _train_tiny(codes, config)
    lm = quantize_lm(trained, [codes[:3]])
    held_out = torch.from_numpy(structured_codes(4, 48, seed=99))
    with torch.no_grad():
        logits = trained(held_out[None])
        back = dequantize_lm(lm)(held_out[None])
    int_bits = code_bits(lm.forward(held_out), held_out).item() / held_out.numel()
    back_bits = bits_per_code(back, held_out[None]).item()
    assert abs(back_bits - int_bits) < 0.01 * int_bits
    # the same distributions, not merely the same average (logits up to a per-row shift)
    spread = (logits - logits.mean(-1, keepdim=True)).std().item()
    diff = (back - back.mean(-1, keepdim=True)) - (logits - logits.mean(-1, keepdim=True))
    assert diff.abs().mean().item() < 0.05 * spread
    # and a .lm file warm-starts a float model to that function
    registry.save_lm(lm, tmp_path / "x.lm", "00" * 32)
    fresh = CodesLM(config)
    assert warm_start(fresh, tmp_path / "x.lm") == []
    with torch.no_grad():
        assert torch.allclose(fresh.eval()(held_out[None]), back, atol=1e-5)


def test_a_norm_with_fewer_fixed_point_bits_computes_the_same():
    """A norm whose gain would need a multiplier past 2^24 keeps fewer fixed-point bits
    (its `_shift` array); the integer arithmetic is otherwise the same."""
    x = torch.randint(-(1 << 20), 1 << 20, (5, 32))
    mult = torch.randint(-(1 << 20), 1 << 20, (32,)) * 4
    assert torch.equal(intlm._Norm(mult)(x), intlm._Norm(mult // 4, torch.tensor(6))(x))
    with pytest.raises(ValueError, match="shift"):
        intlm._Norm(mult, torch.tensor(intlm.NORM_SHIFT + 1))


def test_quantizing_a_model_with_a_huge_norm_gain_stores_its_shift(tmp_path):
    from neucomp import registry

    codes = torch.from_numpy(np.stack([structured_codes(4, 48, seed=s) for s in range(4)]))
    model = _train_tiny(codes, TINY, steps=5)
    with torch.no_grad():  # a channel the residual stream all but lost, its gain grown
        for table in (model.emb, model.k_emb):
            table.weight[:, 3] *= 1e-6
        model.start[3] *= 1e-6
        model.blocks[0].norm1.weight[3] = 10.0
    lm = quantize_lm(model, [codes[:2]])
    assert "l0.norm1_shift" in lm.arrays and "l1.norm1_shift" not in lm.arrays
    assert int(lm.arrays["l0.norm1_shift"]) < intlm.NORM_SHIFT
    registry.save_lm(lm, tmp_path / "x.lm", "00" * 32)
    again = registry.read_lm(tmp_path / "x.lm").lm
    held_out = torch.from_numpy(structured_codes(4, 48, seed=99))
    assert torch.equal(lm.forward(held_out), again.forward(held_out))
