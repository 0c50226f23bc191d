"""What codec and LM training share: the one learning-rate schedule and the one warm
start. Both are pure functions of their inputs, so a resumed run replays them exactly."""

from __future__ import annotations

import math
from pathlib import Path

import torch
from torch import nn


def lr_schedule(
    step: int,
    lr: float,
    *,
    warmup: int = 0,
    decay_start: int = 0,
    decay_steps: int = 0,
    final_ratio: float = 0.1,
) -> float:
    """The learning rate of ``step``: a linear warm-up over ``warmup`` steps, then ``lr``
    until ``decay_start``, then a half cosine down to ``lr * final_ratio`` over
    ``decay_steps`` steps, and that from then on (``decay_steps`` 0: no decay)."""
    if step < warmup:
        return lr * (step + 1) / warmup
    if decay_steps <= 0 or step < decay_start:
        return lr
    progress = min(1.0, (step - decay_start) / decay_steps)
    return lr * (final_ratio + (1 - final_ratio) * 0.5 * (1 + math.cos(math.pi * progress)))


def _source_state(source: str | Path) -> dict[str, torch.Tensor]:
    from neucomp import registry

    payload = torch.load(source, map_location="cpu", weights_only=True)
    if isinstance(payload, dict) and payload.get("format") == registry.MODEL_FILE_FORMAT:
        # An inference model file: verified, fp16 → float, buffers rebuilt.
        return registry.load_model(source, cached=False).state_dict()
    return payload["model"]  # a training checkpoint (an LM run's ckpt.pt)


def warm_start(model: nn.Module, source: str | Path) -> list[str]:
    """Start ``model`` from the weights in ``source``, an inference model file (fp16,
    weight norm folded) or a training checkpoint (``{"model": state_dict}``).

    Every tensor whose name and shape match is copied; a weight-normed weight is
    assigned, which splits it back into norm and direction. Modules that keep running
    statistics of their weights (the RVQ's codebook usage) then restart them from the
    copied weights. Optimisers (and a discriminator) start afresh, so this is a warm
    start, not an exact resume. Returns the names of the tensors left as they were.
    """
    from torch.nn.utils import parametrize

    state = _source_state(source)
    own = model.state_dict()
    fresh = sorted(k for k, v in own.items() if k not in state or state[k].shape != v.shape)
    with torch.no_grad():
        for name, module in model.named_modules():
            prefix = f"{name}." if name else ""
            if parametrize.is_parametrized(module, "weight"):
                w = state.get(prefix + "weight")
                if w is not None and w.shape == module.weight.shape:
                    module.weight = w.to(module.weight)
            tensors = [
                *module.named_parameters(recurse=False),
                *module.named_buffers(recurse=False),
            ]
            for tname, tensor in tensors:
                value = state.get(prefix + tname)
                if value is not None and value.shape == tensor.shape:
                    tensor.copy_(value)
        for module in model.modules():
            if hasattr(module, "restart_statistics"):
                module.restart_statistics()
    return fresh
