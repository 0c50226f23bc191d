"""The level sweep: a level-independent codec gives a flat row, a level-dependent one not."""

from __future__ import annotations

import numpy as np
import pytest

from neucomp.eval.levels import level_sweep

pytest.importorskip("pesq")
pytest.importorskip("pystoi")


def _speechlike(seconds: float = 3.0, rate: int = 24000) -> np.ndarray:
    rng = np.random.default_rng(0)
    t = np.arange(int(seconds * rate)) / rate
    envelope = 0.5 * (1 + np.sin(2 * np.pi * 3 * t))
    voiced = sum(np.sin(2 * np.pi * 150 * k * t) / k for k in range(1, 20))
    return (envelope * voiced + 0.01 * rng.standard_normal(t.size)).astype(np.float32)


def test_identity_is_flat_and_noise_floor_is_not() -> None:
    clip = _speechlike()
    levels = (-45.0, -25.0)
    identity = level_sweep([clip], lambda x, r, bw: (x, r, 0), 6.0, levels)
    assert identity["spread"] is not None and identity["spread"] < 0.05

    def fixed_noise(x, r, bw):  # a codec with an absolute noise floor hurts quiet input
        return x + 3e-4 * np.random.default_rng(1).standard_normal(x.size), r, 0

    noisy = level_sweep([clip], fixed_noise, 6.0, levels)
    assert noisy["levels"][-45.0]["pesq"] < noisy["levels"][-25.0]["pesq"] - 0.3
    assert noisy["spread"] > 0.3


def test_eval_tools_run_as_subcommands_of_one_entry(capsys) -> None:
    from neucomp.eval.__main__ import main

    assert main(["no-such-tool"]) == 2
    with pytest.raises(SystemExit) as exit_info:
        main(["levels", "--help"])
    assert exit_info.value.code == 0
    assert "python -m neucomp.eval.levels" in capsys.readouterr().out
