"""The LM trainer: exact resume, warm start from another run's checkpoint."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch

from neucomp.nn.lm import CodesLM, LMConfig
from neucomp.train import lm as train_lm
from neucomp.train.common import warm_start

TINY = LMConfig(dim=32, layers=1, heads=2, ff=64, window=16, max_codebooks=4, card=16)


def _cfg(run: Path, steps: int) -> dict:
    return {
        **train_lm.DEFAULTS,
        "run_dir": str(run),
        "steps": steps,
        "batch": 2,
        "warmup": 2,
        "k_choices": [2, 4],
        "max_heads": 2,
        "ckpt_every": 1,
    }


def _codes() -> np.ndarray:
    rng = np.random.default_rng(0)
    return rng.integers(0, TINY.card, size=(6, TINY.max_codebooks, 24)).astype(np.int16)


def _fresh() -> CodesLM:
    torch.manual_seed(0)
    return CodesLM(TINY)


def test_resumed_training_equals_an_uninterrupted_run(tmp_path: Path) -> None:
    straight = _fresh()
    assert train_lm.train(straight, _codes(), _cfg(tmp_path / "a", 4), tmp_path / "a", "h") == 4

    first = _fresh()
    train_lm.train(first, _codes(), _cfg(tmp_path / "b", 2), tmp_path / "b", "h")
    resumed = _fresh()
    train_lm.train(resumed, _codes(), _cfg(tmp_path / "b", 4), tmp_path / "b", "h")
    other = resumed.state_dict()
    for name, a in straight.state_dict().items():
        b = other[name]
        assert torch.equal(a, b), name


def test_checkpoint_of_another_codec_is_not_resumed(tmp_path: Path) -> None:
    run = tmp_path / "run"
    train_lm.train(_fresh(), _codes(), _cfg(run, 2), run, "codec-a")
    other = _fresh()
    before = {k: v.clone() for k, v in other.state_dict().items()}
    cfg = _cfg(run, 0)  # no steps: whatever the model holds now came from loading
    train_lm.train(other, _codes(), cfg, run, "codec-b")
    assert all(torch.equal(before[k], v) for k, v in other.state_dict().items())


def test_warm_start_copies_matching_tensors_only(tmp_path: Path) -> None:
    source = _fresh()
    with torch.no_grad():
        for p in source.parameters():
            p.add_(1.0)
    torch.save({"model": source.state_dict()}, tmp_path / "ckpt.pt")
    wider = LMConfig(**{**TINY.to_dict(), "max_codebooks": 6})  # embeddings and heads grow
    target = CodesLM(wider)
    fresh_emb = target.emb.weight.detach().clone()
    warm_start(target, tmp_path / "ckpt.pt")
    assert torch.equal(target.blocks[0].qkv.weight, source.blocks[0].qkv.weight)
    assert torch.equal(target.start, source.start)
    assert torch.equal(target.emb.weight, fresh_emb)  # shape changed: left as initialised


def test_intra_model_warm_started_from_a_plain_one_starts_equal(tmp_path: Path) -> None:
    source = _fresh()
    with torch.no_grad():
        for p in source.parameters():
            p.add_(0.1 * torch.randn(p.shape))
    torch.save({"model": source.state_dict()}, tmp_path / "ckpt.pt")
    intra = CodesLM(LMConfig(**{**TINY.to_dict(), "intra": True}))
    warm_start(intra, tmp_path / "ckpt.pt")
    codes = torch.from_numpy(_codes()[:2].astype(np.int64))
    with torch.no_grad():  # intra_proj is fresh, i.e. zero: the same predictions
        assert torch.equal(intra.eval()(codes), source.eval()(codes))
    train_lm.train(intra, _codes(), _cfg(tmp_path / "run", 2), tmp_path / "run", "h")
    assert intra.intra_proj.weight.abs().sum() > 0  # and training moves it


def test_lm_schedule_warms_up_then_cools_down_to_a_tenth() -> None:
    from neucomp.train.common import lr_schedule

    lm = {"warmup": 10, "decay_start": 10, "decay_steps": 90}  # what train() asks for
    assert lr_schedule(0, 1.0, **lm) == pytest.approx(0.1)  # linear warm-up
    assert lr_schedule(9, 1.0, **lm) == lr_schedule(10, 1.0, **lm) == 1.0
    assert lr_schedule(55, 1.0, **lm) == pytest.approx(0.55)  # half way down the cosine
    assert lr_schedule(100, 1.0, **lm) == lr_schedule(10**6, 1.0, **lm) == pytest.approx(0.1)
