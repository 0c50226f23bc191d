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


def _source_state(source: str | Path) -> tuple[dict[str, torch.Tensor], dict | None]:
    """The weights in ``source`` and its codec config (None where it has none)."""
    from neucomp import registry

    payload = torch.load(source, map_location="cpu", weights_only=True)
    if isinstance(payload, dict) and payload.get("format") == registry.MODEL_FILE_FORMAT:
        # An inference model file: verified, fp16 → float, buffers rebuilt.
        codec = registry.load_model(source, cached=False)
        return codec.state_dict(), codec.config.to_dict()
    model = (payload.get("config") or {}).get("model")  # a codec run's checkpoint
    return payload["model"], model if isinstance(model, dict) and model else None


def _extra_stages(ours: dict, theirs: dict) -> int:
    """How many SEANet stages our codec has in front of the source's (0: the same body).

    A 48 kHz model built as the 24 kHz one plus a ×2 stage at the audio end (ratios
    [2] + theirs, half the base width) has every other layer of the source at the
    same shape: encoder layers shifted back by one stage, decoder layers in place up to
    the source's last stage. Those are then copied too (see warm_start)."""
    a, b = ours.get("seanet", {}), theirs.get("seanet", {})
    for config in (ours, theirs):
        if (
            config.get("encoder", "seanet") != "seanet"
            or config.get("decoder", "seanet") != "seanet"
        ):
            return 0
    ra, rb = list(a.get("ratios", [2, 4, 5, 8])), list(b.get("ratios", [2, 4, 5, 8]))
    extra = len(ra) - len(rb)
    same_units = a.get("n_residual_layers", 1) == b.get("n_residual_layers", 1)
    if extra <= 0 or ra[extra:] != rb or not same_units:
        return 0
    if a.get("base_width", 32) * 2**extra != b.get("base_width", 32):
        return 0
    return extra


def _remap_stages(
    state: dict[str, torch.Tensor], extra: int, per_stage: int, decoder_layers: int
) -> dict[str, torch.Tensor]:
    """Source keys renamed to our layer indices when we have ``extra`` stages more (each
    ``per_stage`` layers): encoder layers move back, the decoder's last two (activation
    and output conv, after the stages) move back likewise; everything else stays."""
    shift = extra * per_stage
    out: dict[str, torch.Tensor] = {}
    for key, value in state.items():
        part, sep, rest = key.partition(".layers.")
        index, dot, tail = rest.partition(".")
        if not sep or not index.isdigit() or part not in ("encoder", "decoder"):
            out[key] = value
            continue
        i = int(index)
        if part == "encoder" and i == 0:  # the source's input conv: no counterpart
            continue
        if part == "encoder" or i >= decoder_layers - 2:
            i += shift
        out[f"{part}.layers.{i}{dot}{tail}"] = value
    return out


def warm_start(model: nn.Module, source: str | Path) -> list[str]:
    """Start ``model`` from the weights in ``source``, an inference model file (fp16,
    weight norm folded) or a training checkpoint (``{"model": state_dict}``).

    Every tensor whose name and shape match is copied; a weight-normed weight is
    assigned, which splits it back into norm and direction. A codec with one more SEANet
    stage than the source (the 48 kHz model from the 24 kHz one) gets the source's
    stages at their shifted places. Modules that keep running statistics of their
    weights (the RVQ's codebook usage) then restart them from the copied weights.
    Optimisers (and a discriminator) start afresh, so this is a warm start, not an exact
    resume. Returns the names of the tensors left as they were.
    """
    from torch.nn.utils import parametrize

    state, their_config = _source_state(source)
    own_config = getattr(getattr(model, "config", None), "to_dict", None)
    if their_config is not None and own_config is not None:
        ours = own_config()
        extra = _extra_stages(ours, their_config)
        if extra:
            per_stage = ours["seanet"].get("n_residual_layers", 1) + 2
            theirs = len(model.decoder.layers) - extra * per_stage
            state = _remap_stages(state, extra, per_stage, theirs)
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
