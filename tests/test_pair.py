"""The paired ship decision: clip-by-clip changes between two `neucomp eval --json` runs."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from neucomp.eval.__main__ import main as eval_main
from neucomp.eval.pair import pair, verdict


def _write(path: Path, rows: list[dict]) -> Path:
    path.write_text(json.dumps({"meta": {}, "rows": rows, "summary": {}}))
    return path


def _runs(shift: dict[str, float], n: int = 12, seed: int = 0) -> tuple[list[dict], list[dict]]:
    """A base run and a candidate that differs from it by `shift` per metric, plus noise."""
    rng = np.random.default_rng(seed)
    base, cand = [], []
    for i in range(n):
        speech = i % 2 == 0
        row = {
            "file": f"clip{i}.flac",
            "codec": "neucomp",
            "setting": 6.0,
            "pesq": float(rng.uniform(1.5, 2.0)) if speech else None,
            "stoi": float(rng.uniform(0.7, 0.9)) if speech else None,
            "lsd_0_4k": float(rng.uniform(11, 14)),
            "lsd_4_8k": float(rng.uniform(11, 14)),
            "lsd_8_12k": float(rng.uniform(12, 15)),
            "visqol_audio": float(rng.uniform(3, 3.6)),
        }
        new = dict(row)
        for key, delta in shift.items():
            if new[key] is not None:
                new[key] += delta + float(rng.normal(0, abs(delta) / 4))
        base.append(row)
        cand.append(new)
    # an Opus row in the same file must not be paired with neucomp's
    base.append({**base[0], "codec": "opus", "pesq": 4.0})
    return base, cand


BETTER = {"pesq": 0.1, "stoi": 0.01, "lsd_0_4k": -0.5, "lsd_4_8k": -0.5, "lsd_8_12k": -0.5}


def test_a_candidate_better_everywhere_beats_the_base(tmp_path: Path, capsys) -> None:
    base, cand = _runs(BETTER)
    a, b = _write(tmp_path / "a.json", base), _write(tmp_path / "b.json", cand)
    assert eval_main(["pair", str(a), str(b), "--labels", "shipped,new"]) == 0
    out = capsys.readouterr().out
    assert "verdict: new beats shipped" in out
    assert "| PESQ-wb |" in out and "6/6 |" in out  # PESQ on the 6 speech clips only


def test_speech_no_better_means_no_ship(tmp_path: Path) -> None:
    base, cand = _runs({**BETTER, "pesq": -0.05})
    beats, reasons = verdict(pair({r["file"]: r for r in base[:-1]}, {r["file"]: r for r in cand}))
    assert not beats and reasons == ["PESQ-wb not better by more than one standard error"]


def test_a_lower_visqol_blocks_the_ship() -> None:
    base, cand = _runs({**BETTER, "visqol_audio": -0.2})
    beats, reasons = verdict(pair({r["file"]: r for r in base[:-1]}, {r["file"]: r for r in cand}))
    assert not beats and reasons == ["ViSQOL audio worse by more than one standard error"]


def test_paired_statistics_are_per_clip(tmp_path: Path) -> None:
    base, cand = _runs({"lsd_0_4k": -1.0})
    stats = {
        s.key: s for s in pair({r["file"]: r for r in base[:-1]}, {r["file"]: r for r in cand})
    }
    diffs = [c["lsd_0_4k"] - b["lsd_0_4k"] for b, c in zip(base, cand, strict=False)]
    assert stats["lsd_0_4k"].diff == pytest.approx(np.mean(diffs))
    assert stats["lsd_0_4k"].stderr == pytest.approx(np.std(diffs, ddof=1) / np.sqrt(12))
    assert stats["lsd_0_4k"].better == 12 and stats["pesq"].n == 6
    assert stats["pesq"].diff == 0 and stats["pesq"].better == 0  # unchanged: not better


def test_several_bandwidths_need_a_choice(tmp_path: Path) -> None:
    base, cand = _runs(BETTER)
    both = base + [{**r, "setting": 24.0} for r in base]
    a, b = _write(tmp_path / "a.json", both), _write(tmp_path / "b.json", cand)
    with pytest.raises(SystemExit, match="several settings"):
        eval_main(["pair", str(a), str(b)])
    assert eval_main(["pair", str(a), str(b), "--setting", "6"]) == 0
