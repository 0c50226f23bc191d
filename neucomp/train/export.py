"""Turn a training checkpoint into a compact inference model file (models/*.pt)."""

from __future__ import annotations

from pathlib import Path

import torch

from neucomp.model import Codec, CodecConfig, save_model


def export_checkpoint(checkpoint: Path, out: Path) -> str:
    state = torch.load(checkpoint, map_location="cpu", weights_only=False)
    codec = Codec(CodecConfig.from_dict(state["config"]["model"]))
    codec.load_state_dict(state["model"])
    return save_model(codec, out)
