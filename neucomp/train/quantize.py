"""Float LM → integer LM (:class:`neucomp.coding.intlm.IntLM`): training-side only.

`quantize_lm` measures activation ranges on calibration codes and derives int8 weights,
fixed-point requantisation multipliers and the lookup tables the integer model stores;
`random_lm` is a seeded random-weight integer LM for tests and benchmarks.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import Tensor

from neucomp.coding.intlm import (
    ATT_EXP_ONE,
    GELU_HALF,
    LOGIT_STEP,
    NORM_SHIFT,
    OUT_EXP_ONE,
    Q8,
    RESID_BITS,
    IntLM,
)
from neucomp.nn.lm import CodesLM, LMConfig, alibi_slopes


def _mult_shift(real: Tensor | float, bits: int = 31) -> tuple[Tensor, int]:
    """Fixed-point multipliers (< 2^bits) and one shift for real multipliers ≥ 0."""
    real = torch.as_tensor(real, dtype=torch.float64)
    top = float(real.abs().max())
    shift = bits - math.ceil(math.log2(top)) if top > 0 else bits
    if round(top * 2.0**shift) >= 1 << bits:  # top a power of two (or just below one)
        shift -= 1
    if not 1 <= shift <= 62:
        raise ValueError(f"multiplier {top} out of range")
    return torch.round(real * 2.0**shift).long(), shift


def _quant_weight(w: Tensor) -> tuple[Tensor, Tensor]:
    """w [..., in, out] → int8 weights and the per-output-column scale."""
    scale = w.abs().amax(-2, keepdim=True).clamp(min=1e-12) / Q8
    return torch.round(w / scale).clamp(-Q8, Q8).to(torch.int8), scale.squeeze(-2)


def _amax(tensors: list[Tensor], per_channel: bool = False) -> Tensor:
    """Largest magnitude over a list of activations (of each last-dim channel if asked)."""
    if per_channel:
        flat = torch.cat([x.reshape(-1, x.shape[-1]) for x in tensors])
        return flat.abs().amax(0).double().clamp(min=1e-8)
    return torch.stack([x.abs().max() for x in tensors]).max().double().clamp(min=1e-8)


def _channel_scale(acts: list[Tensor]) -> Tensor:
    """Per-channel int8 scale of activations; near-dead channels get a bounded multiplier."""
    scale = _amax(acts, per_channel=True) / Q8
    return scale.clamp(min=float(scale.max()) / 256)


def _exp_table(one: int) -> Tensor:
    """round(one * exp(-i * LOGIT_STEP)) until it reaches 0 (last entry 0)."""
    n = math.ceil(math.log(2 * one) / LOGIT_STEP) + 2
    vals = torch.round(one * torch.exp(-torch.arange(n, dtype=torch.float64) * LOGIT_STEP))
    return vals.long()


@torch.no_grad()
def quantize_lm(model: CodesLM, calibration: list[Tensor]) -> IntLM:
    """Integer twin of `model`; activation ranges measured on calibration codes [B, K, T]."""
    model = model.eval()
    c = model.config
    probe: dict[str, list[Tensor]] = {}
    for codes in calibration:
        model(codes, probe)
    per_layer = {k: v for k, v in probe.items() if k not in ("resid", "norm_f")}
    n_cal = len(calibration)

    def layer_acts(name: str, layer: int) -> list[Tensor]:
        return [per_layer[name][i * c.layers + layer] for i in range(n_cal)]

    s_x = _amax(probe["resid"]) / 2**RESID_BITS
    a: dict[str, Tensor] = {}

    def norm(name: str, weight: Tensor, acts: list[Tensor]) -> Tensor:
        """Integer RMSNorm multipliers; returns the per-channel scale of its int8 output."""
        scale = _channel_scale(acts)
        real = 2.0**NORM_SHIFT * weight.double() * math.sqrt(c.dim) / scale
        # A channel the residual stream all but lost, with a norm gain grown to make up
        # for it, can need a multiplier past the integer norm's 2^24 (its products must
        # stay under 2^62): that norm then keeps fewer fixed-point bits (stored beside it).
        extra = max(0, math.ceil(math.log2(float(real.abs().max()) / (2**24 - 1))))
        if extra > NORM_SHIFT:
            raise ValueError(f"{name}: a norm gain too large for the integer LM")
        if extra:
            a[name.replace("_mult", "_shift")] = torch.tensor(NORM_SHIFT - extra)
        a[name] = torch.round(real / 2.0**extra).long()
        return scale

    def linear(name: str, w_in_out: Tensor, in_scale: Tensor, out_scale: Tensor) -> None:
        """int8 weights with the input scale folded in; requantisation to out_scale."""
        wq, ws = _quant_weight(w_in_out.double() * in_scale.reshape(-1, 1))
        a[name + "_w"] = wq
        a[name + "_mult"], shift = _mult_shift(ws / out_scale)
        a[name + "_shift"] = torch.tensor(shift)

    hd = c.dim // c.heads
    dist = torch.arange(c.window, dtype=torch.float64)
    slopes = torch.tensor(alibi_slopes(c.heads), dtype=torch.float64)[:, None]
    for i, block in enumerate(model.blocks):
        p = f"l{i}."
        in1 = norm(p + "norm1_mult", block.norm1.weight, layer_acts("norm1", i))
        s_q, s_k, s_v = (_amax(layer_acts(n, i)) / Q8 for n in ("q", "k", "v"))
        out_scales = torch.cat([s.expand(c.dim) for s in (s_q, s_k, s_v)])
        linear(p + "qkv", block.qkv.weight.t(), in1, out_scales)
        a[p + "att_mult"], shift = _mult_shift(s_q * s_k / math.sqrt(hd) / LOGIT_STEP)
        a[p + "att_shift"] = torch.tensor(shift)
        a[p + "alibi"] = torch.round(slopes * dist / LOGIT_STEP).long()
        linear(p + "proj", block.proj.weight.t(), s_v, s_x)
        in2 = norm(p + "norm2_mult", block.norm2.weight, layer_acts("norm2", i))
        step = _amax(layer_acts("pre", i)) / GELU_HALF  # fc1 output → GELU table index
        linear(p + "fc1", block.fc1.weight.t(), in2, step)
        gelu = F.gelu(torch.arange(-GELU_HALF, GELU_HALF + 1, dtype=torch.float64) * step)
        s_g = gelu.abs().max() / Q8
        a[p + "gelu"] = torch.round(gelu / s_g).clamp(-Q8, Q8).long()
        linear(p + "fc2", block.fc2.weight.t(), s_g, s_x)

    emb = model.emb.weight.double()
    row_scale = emb.abs().amax(1).clamp(min=1e-12) / Q8
    a["emb"] = torch.round(emb / row_scale[:, None]).to(torch.int8)
    a["emb_mult"], emb_shift = _mult_shift(row_scale / s_x)
    a["emb_shift"] = torch.tensor(emb_shift)

    in_f = norm("norm_f_mult", model.norm.weight, probe["norm_f"])
    if c.intra:  # head k input: int8 at per-channel scale s_h of h + W norm(c_k)
        s_c = norm("intra_norm_mult", model.intra_norm.weight, probe["intra_c"])
        s_h = _channel_scale(probe["intra_h"])
        wq, ws = _quant_weight(model.intra_proj.weight.t().double() * s_c.reshape(-1, 1))
        a["intra_w"] = wq
        mults, shift = _mult_shift(torch.cat([in_f / s_h, ws / s_h]))
        a["intra_hmult"], a["intra_mult"] = mults[: c.dim], mults[c.dim :]
        a["intra_shift"] = torch.tensor(shift)
        in_f = s_h
    linear("head", model.heads.weight.t(), in_f, torch.tensor(LOGIT_STEP, dtype=torch.float64))
    a["head_bias"] = torch.round(model.heads.bias.double() / LOGIT_STEP).long()
    a["start"] = torch.round(model.start.double() / s_x).long()
    a["k_emb"] = torch.round(model.k_emb.weight.double() / s_x).long()
    a["att_exp"] = _exp_table(ATT_EXP_ONE)
    a["out_exp"] = _exp_table(OUT_EXP_ONE)
    return IntLM(c, a)


def random_lm(config: LMConfig, seed: int = 0, spread: float = 0.2) -> IntLM:
    """A seeded random-weight integer LM (tests, benchmarks): peaked, non-uniform tables."""
    gen = torch.Generator().manual_seed(seed)
    with torch.random.fork_rng():
        torch.manual_seed(seed)
        model = CodesLM(config)
    with torch.no_grad():
        for p in model.parameters():
            p.add_(torch.randn(p.shape, generator=gen) * spread)
    k = config.max_codebooks
    calib = [torch.randint(0, config.card, (2, k, 2 * config.window), generator=gen)]
    return quantize_lm(model, calib)


def _gelu_step(table: Tensor) -> float:
    """The fc1-output step that made a GELU lookup table (`quantize_lm`'s `step`).

    The table holds round(GELU(i * step) / s_g) for i in -GELU_HALF..GELU_HALF with
    s_g = max|GELU| / 127, so its shape (where it crosses zero, how deep its dip goes)
    fixes the step; a log-grid search, then a finer one, finds a step that rebuilds it.
    """
    i = torch.arange(-GELU_HALF, GELU_HALF + 1, dtype=torch.float64)
    target = table.double()

    def error(step: float) -> float:
        g = F.gelu(i * step)
        rebuilt = torch.round(g / (g.abs().max() / Q8)).clamp(-Q8, Q8)
        return float(((rebuilt - target) ** 2).sum())

    best = min(torch.logspace(-6, 1, 400, dtype=torch.float64).tolist(), key=error)
    fine = torch.linspace(best / 1.05, best * 1.05, 400, dtype=torch.float64).tolist()
    return min(fine, key=error)


@torch.no_grad()
def dequantize_lm(lm: IntLM) -> CodesLM:
    """A float `CodesLM` that computes what the integer `lm` does, up to its rounding:
    the inverse of `quantize_lm`, so that training can warm-start from a shipped `.lm`
    file (it holds only the integer model).

    Every integer scale is folded back into float weights. The residual stream keeps the
    integer one's shape at a size set by the embeddings (RMSNorm does not see it); each
    RMSNorm's weight becomes its multiplier over 2^NORM_SHIFT * sqrt(dim), so its output
    is the integer model's int8 value; each linear layer's weight is its int8 matrix
    times its requantisation multiplier; the attention scale is split evenly between q
    and k; logits come back from 1/64-nat steps to nats.
    """
    c = lm.config
    a = lm.arrays
    model = CodesLM(c)
    emb = a["emb"].double() * a["emb_mult"].double()[:, None] / 2.0 ** int(a["emb_shift"])
    # The residual's unit is free (RMSNorm divides it out) but not its size: too small a
    # residual drowns in the norms' eps. Embeddings at CodesLM's initial size (std 0.02)
    # put it where the float model trained.
    s_x = 0.02 / float(emb.pow(2).mean().sqrt().clamp(min=1e-12))
    root = math.sqrt(c.dim)

    def real(name: str) -> Tensor:
        """[in, out] float weight of an integer linear layer, output in its int units."""
        w = a[name + "_w"].double()
        return w * (a[name + "_mult"].double() / 2.0 ** int(a[name + "_shift"]))

    def norm_weight(mult_key: str) -> Tensor:
        shift = int(a.get(mult_key.replace("_mult", "_shift"), NORM_SHIFT))
        return a[mult_key].double() / (2.0**shift * root)

    hd = c.dim // c.heads
    for i, block in enumerate(model.blocks):
        p = f"l{i}."
        block.norm1.weight.copy_(norm_weight(p + "norm1_mult"))
        qkv = real(p + "qkv")  # [dim, 3 dim] → q, k, v in their int8 units
        att = float(a[p + "att_mult"]) / 2.0 ** int(a[p + "att_shift"])
        qk = math.sqrt(att * LOGIT_STEP * math.sqrt(hd))  # q·k/sqrt(hd) in nats
        qkv[:, : 2 * c.dim] *= qk
        block.qkv.weight.copy_(qkv.t())
        block.proj.weight.copy_((real(p + "proj") * s_x).t())
        block.norm2.weight.copy_(norm_weight(p + "norm2_mult"))
        step = _gelu_step(a[p + "gelu"])
        g = F.gelu(torch.arange(-GELU_HALF, GELU_HALF + 1, dtype=torch.float64) * step)
        s_g = float(g.abs().max()) / Q8
        block.fc1.weight.copy_((real(p + "fc1") * step).t())
        block.fc2.weight.copy_((real(p + "fc2") * s_x / s_g).t())

    model.emb.weight.copy_(emb * s_x)
    model.start.copy_(a["start"].double() * s_x)
    model.k_emb.weight.copy_(a["k_emb"].double() * s_x)
    norm_f = norm_weight("norm_f_mult")
    if c.intra:
        shift = 2.0 ** int(a["intra_shift"])
        norm_f = norm_f * a["intra_hmult"].double() / shift  # h in the units of head input
        model.intra_norm.weight.copy_(norm_weight("intra_norm_mult"))
        w = a["intra_w"].double() * a["intra_mult"].double() / shift
        model.intra_proj.weight.copy_(w.t())
    model.norm.weight.copy_(norm_f)
    model.heads.weight.copy_((real("head") * LOGIT_STEP).t())
    model.heads.bias.copy_(a["head_bias"].double() * LOGIT_STEP)
    return model
