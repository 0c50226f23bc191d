"""What codec and LM training share: the one learning-rate schedule and the one warm
start. Both are pure functions of their inputs, so a resumed run replays them exactly."""

from __future__ import annotations

import math
from pathlib import Path

import torch
from torch import nn

from neucomp.train.widen import widen_state, width_factor


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

    if Path(source).suffix == ".lm":
        # A shipped code LM holds only its integer twin: its float equivalent.
        from neucomp.train.quantize import dequantize_lm

        return dequantize_lm(registry.read_lm(source).lm).state_dict(), None
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


def _layer_roles(seanet: dict, part: str) -> list[tuple[str, int, int]]:
    """What each layer of a SEANet encoder or decoder is, in order: (kind, stage, unit),
    so that two bodies with different numbers of residual units per stage can be lined up
    (see SEANetEncoder / SEANetDecoder for the order)."""
    stages = len(seanet.get("ratios", [2, 4, 5, 8]))
    units = seanet.get("n_residual_layers", 1)
    lstm = [("lstm", -1, 0)] if seanet.get("lstm_layers", 2) else []
    roles: list[tuple[str, int, int]] = [("in", -1, 0)]
    if part == "decoder":
        roles += lstm
    for k in range(stages):
        res = [("res", k, j) for j in range(units)]
        if part == "encoder":
            roles += [*res, ("act", k, 0), ("resample", k, 0)]
        else:
            roles += [("act", k, 0), ("resample", k, 0), *res]
    if part == "encoder":
        roles += lstm
    return roles + [("act", stages, 0), ("out", stages, 0)]


def _remap_residual_units(
    state: dict[str, torch.Tensor], ours: dict, theirs: dict
) -> dict[str, torch.Tensor]:
    """Source keys renamed to our layer indices when we have more residual units per
    stage than the source (same stages and widths): each source layer goes to the layer
    with the same role; our extra units have no source and start as identities."""
    out: dict[str, torch.Tensor] = {}
    index_of = {}
    for part in ("encoder", "decoder"):
        mine = {role: i for i, role in enumerate(_layer_roles(ours, part))}
        for i, role in enumerate(_layer_roles(theirs, part)):
            index_of[(part, i)] = mine[role]
    for key, value in state.items():
        part, sep, rest = key.partition(".layers.")
        index, dot, tail = rest.partition(".")
        if sep and index.isdigit() and (part, int(index)) in index_of:
            key = f"{part}.layers.{index_of[(part, int(index))]}{dot}{tail}"
        out[key] = value
    return out


def _deeper_units(ours: dict, theirs: dict) -> bool:
    """True when our SEANet body is the source's with more residual units per stage."""
    a, b = dict(ours.get("seanet", {})), dict(theirs.get("seanet", {}))
    if any(c.get(k, "seanet") != "seanet" for c in (ours, theirs) for k in ("encoder", "decoder")):
        return False
    more = a.pop("n_residual_layers", 1) > b.pop("n_residual_layers", 1)
    # An inference file has weight norm folded; unit 0 has dilation 1 whatever the base.
    for key in ("weight_norm", "dilation_base"):
        a.pop(key, None)
        b.pop(key, None)
    return more and a == b


def _zero_new_units(model: nn.Module, state: dict[str, torch.Tensor]) -> None:
    """Make residual units that got no source weights identities (their last conv's
    weight-norm gain 0), so that a deeper warm start computes what the source did; the
    gain still gets a gradient, so the unit starts learning at once."""
    from neucomp.nn.seanet import ResidualUnit

    for name, module in model.named_modules():
        if not isinstance(module, ResidualUnit):
            continue
        conv = module.conv2.conv
        prefix = f"{name}.conv2.conv."
        if any(k.startswith(prefix) for k in state):
            continue
        with torch.no_grad():
            if hasattr(conv, "parametrizations"):
                conv.parametrizations.weight.original0.zero_()
            else:
                conv.weight.zero_()
            if conv.bias is not None:
                conv.bias.zero_()


def warm_start(model: nn.Module, source: str | Path) -> list[str]:
    """Start ``model`` from the weights in ``source``, an inference model file (fp16,
    weight norm folded), a training checkpoint (``{"model": state_dict}``) or, for the
    code LM, a shipped ``.lm`` file (its integer weights turned back into float ones).

    Every tensor whose name and shape match is copied; a weight-normed weight is
    assigned, which splits it back into norm and direction. A codec with one more SEANet
    stage than the source (the 48 kHz model from the 24 kHz one) gets the source's
    stages at their shifted places, and one with more residual units per stage gets the
    source's units in their places and its extra ones as identities (the output is
    unchanged), and one at k times the source's base width gets each source channel
    tiled k times (:mod:`neucomp.train.widen`; the output is unchanged). Modules that
    keep running statistics of their weights (the RVQ's codebook usage) then restart
    them from the copied weights.
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
        deeper = _deeper_units(ours, their_config)
        if deeper:
            state = _remap_residual_units(state, ours["seanet"], their_config["seanet"])
        if width_factor(ours, their_config) > 1:
            state = widen_state(model, state)
    else:
        deeper = False
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
    if deeper:
        _zero_new_units(model, state)
    return fresh
