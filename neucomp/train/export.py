"""Turn a training checkpoint into a compact inference model file (models/*.pt)."""

from __future__ import annotations

from pathlib import Path

import torch

from neucomp.model import Codec, CodecConfig
from neucomp.registry import save_model


def export_checkpoint(checkpoint: Path, out: Path) -> str:
    state = torch.load(checkpoint, map_location="cpu", weights_only=False)
    codec = Codec(CodecConfig.from_dict(state["config"]["model"]))
    codec.load_state_dict(state["model"])
    return save_model(codec, out)


def same_codes(a: Codec, b: Codec) -> bool:
    """True when two codecs turn audio into the same codes: equal encoder and RVQ
    weights (the decoders may differ)."""

    def coding_keys(state: dict) -> list[str]:
        # EMA statistics are training state, not part of what maps audio to codes.
        return [
            k
            for k in state
            if k.startswith(("encoder.", "quantizer."))
            and not k.endswith(("cluster_size", "embed_sum", "initialized"))
        ]

    sa, sb = a.state_dict(), b.state_dict()
    keys = coding_keys(sa)
    if keys != coding_keys(sb):
        return False
    return a.config.seanet == b.config.seanet and all(torch.equal(sa[k], sb[k]) for k in keys)


def _same_code_pair(old_codec: Path, new_codec: Path, coder: str):
    """Both codecs, loaded, or ValueError when they do not give the same codes."""
    from neucomp.registry import load_model

    old, new = load_model(old_codec, cached=False), load_model(new_codec, cached=False)
    if not same_codes(old, new):
        raise ValueError(f"{new_codec} codes audio differently from {old_codec}: retrain {coder}")
    return old, new


def rebind_lm(lm_path: Path, old_codec: Path, new_codec: Path, out: Path) -> bytes:
    """Re-issue an LM file for a codec whose decoder changed but whose codes did not.

    An LM file names the codec weights it was trained for, so a new decoder on the same
    frozen encoder and RVQ needs its LM re-issued: the same integer weights, bound to the
    new codec hash. Refused (ValueError) when the two codecs do not give the same codes.
    """
    from neucomp.registry import read_lm, save_lm

    coder = read_lm(lm_path)
    old, new = _same_code_pair(old_codec, new_codec, "the LM")
    coder.check_codec(old.weights_hash)
    card = dict(coder.card, rebound_from_codec=old.weights_hash)
    return save_lm(coder.lm, out, new.weights_hash, card)


def rebind_tables(tables_path: Path, old_codec: Path, new_codec: Path, out: Path) -> bytes:
    """The fast coder's tables re-issued as `rebind_lm` re-issues the LM: the same tables,
    bound to the new codec hash (ValueError when the codes differ)."""
    import dataclasses

    from neucomp.coding.tables import Tables

    old, new = _same_code_pair(old_codec, new_codec, "the tables")
    tables = Tables.load(tables_path, old.weights_hash)
    rebound = dataclasses.replace(tables, codec_hash=bytes.fromhex(new.weights_hash))
    return rebound.save(out)


def graft_speech_decoder(base: Path, speech: Path, out: Path) -> str:
    """A model file with `base`'s encoder, RVQ and decoder, and `speech`'s decoder as its
    speech decoder (the one for chunks the encoder flags as speech). The two must give
    the same codes (ValueError otherwise); a speech decoder `base` has already is
    replaced. `base` and its predecessors become the new model's predecessors: it
    decodes their streams (the chunks its general decoder serves exactly as before, the
    flagged ones with the new speech decoder), and their LM and table files serve it
    unchanged."""
    old, new = _same_code_pair(base, speech, "the speech decoder")
    config = CodecConfig.from_dict(old.config.to_dict())
    config.speech_decoder = True
    config.predecessors = list(dict.fromkeys([old.weights_hash, *old.config.predecessors]))
    codec = Codec(config)
    state = {k: v for k, v in old.state_dict().items() if not k.startswith("speech_decoder.")}
    state.update({f"speech_decoder.{k}": v for k, v in new.decoder.state_dict().items()})
    codec.load_state_dict(state)
    return save_model(codec, out)


def fork_checkpoint(checkpoint: Path, run_dir: Path, fresh_disc: bool = False) -> Path:
    """Copy a training checkpoint into a new run folder, where `python -m neucomp.train
    --set run_dir=…` resumes it; `fresh_disc` drops the discriminator and its optimiser
    (for a GAN phase with another discriminator than the one the checkpoint carries)."""
    state = torch.load(checkpoint, map_location="cpu", weights_only=False)
    if fresh_disc:
        state.pop("disc", None)
        state.pop("opt_d", None)
    run_dir.mkdir(parents=True, exist_ok=True)
    out = run_dir / "last.pt"
    from neucomp.audio.writers import atomic_write

    with atomic_write(out) as fp:
        torch.save(state, fp)
    return out
