"""Warm start into a wider codec: every channel of the source becomes k channels.

A SEANet at base width k·C is started from one at width C so that it computes exactly
the same function (Net2WiderNet, Chen et al. 2016): each of the source's channels is
tiled k times, and a layer reading a widened input splits each source weight among
the k copies of its input, with shares that sum to one. Elementwise activations, the
residual skips and the LSTM's gates all commute with this tiling, so every widened
activation is k copies of the source's. The shares are random, not 1/k: identical
shares would give the copies identical gradients, and they would never come apart.
"""

from __future__ import annotations

import torch
from torch import nn


def width_factor(ours: dict, theirs: dict) -> int:
    """k where our SEANet is the source's at k times its base width, else 1.

    Anything else (a narrower model, a non-integer factor, or a SEANet that differs in
    more than width, like the 48 kHz model started from the 24 kHz one) is not a
    widening: the warm start then copies only the tensors whose shapes agree.
    """
    a, b = ours.get("seanet", {}), theirs.get("seanet", {})
    if not a or not b or a.get("base_width") == b.get("base_width"):
        return 1
    # Weight norm only reparametrises the same weights, so it may differ.
    free = {"base_width", "weight_norm"}
    same_elsewhere = all(a.get(key) == b.get(key) for key in (set(a) | set(b)) - free)
    k, rest = divmod(a["base_width"], b["base_width"])
    if rest or k < 2 or not same_elsewhere:
        return 1
    return k


def _tile(t: torch.Tensor, dim: int, k: int, blocks: int = 1) -> torch.Tensor:
    """Repeat ``t`` k times along ``dim``; with ``blocks`` (an LSTM's 4 gates stacked
    along that dim), tile inside each block so the gates stay in their places."""
    shape = list(t.shape)
    split = t.reshape(*shape[:dim], blocks, shape[dim] // blocks, *shape[dim + 1 :])
    tiled = torch.cat([split] * k, dim=dim + 1)
    return tiled.reshape(*shape[:dim], shape[dim] * k, *shape[dim + 1 :])


def _split_shares(t: torch.Tensor, dim: int, k: int, jitter: float, gen: torch.Generator):
    """Random positive shares for the k copies along ``dim`` that sum to one per source
    weight (so the widened layer's output is unchanged)."""
    shape = list(t.shape)
    old = shape[dim] // k
    noise = 1 + jitter * (2 * torch.rand(shape, generator=gen) - 1)
    grouped = noise.reshape(*shape[:dim], k, old, *shape[dim + 1 :])
    return (grouped / grouped.sum(dim=dim, keepdim=True)).reshape(shape)


def _widen(
    t: torch.Tensor,
    target: torch.Size,
    out_dim: int | None,
    in_dim: int | None,
    blocks: int,
    jitter: float,
    gen: torch.Generator,
) -> torch.Tensor:
    for dim in (out_dim, in_dim):
        if dim is None or target[dim] == t.shape[dim]:
            continue
        k = target[dim] // t.shape[dim]
        t = _tile(t, dim, k, blocks if dim == out_dim else 1)
        if dim == in_dim:
            t = t * _split_shares(t, dim, k, jitter, gen)
    if t.shape != target:
        raise ValueError(f"cannot widen a tensor of shape {tuple(t.shape)} to {tuple(target)}")
    return t


def widen_state(
    model: nn.Module, state: dict[str, torch.Tensor], *, jitter: float = 0.2, seed: int = 0
) -> dict[str, torch.Tensor]:
    """``state`` (plain weights of the narrower source) with every conv, transposed conv
    and LSTM tensor widened to ``model``'s shapes; other tensors pass through."""
    gen = torch.Generator().manual_seed(seed)
    out = dict(state)
    for name, module in model.named_modules():
        prefix = f"{name}." if name else ""
        if isinstance(module, nn.ConvTranspose1d):
            dims = {"weight": (1, 0, 1), "bias": (0, None, 1)}  # weight is [in, out, k]
        elif isinstance(module, nn.Conv1d):
            dims = {"weight": (0, 1, 1), "bias": (0, None, 1)}
        elif isinstance(module, nn.LSTM):
            dims = {}
            for layer in range(module.num_layers):
                for kind in ("ih", "hh"):
                    dims[f"weight_{kind}_l{layer}"] = (0, 1, 4)
                    dims[f"bias_{kind}_l{layer}"] = (0, None, 4)
        else:
            continue
        for tname, (out_dim, in_dim, blocks) in dims.items():
            key = prefix + tname
            if key not in state:
                continue
            target = getattr(module, tname).shape
            if state[key].shape != target:
                out[key] = _widen(state[key], target, out_dim, in_dim, blocks, jitter, gen)
    return out
