"""The overfit test's own behaviour: crops from every clip it is given, mean scores."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import soundfile as sf
from conftest import build_model_file

from neucomp.train import overfit

RATE = 24000


def _voice(freq: float, seconds: float = 1.0) -> np.ndarray:
    t = np.arange(int(seconds * RATE)) / RATE
    env = 0.5 * (1 + np.sin(2 * np.pi * 4 * t))  # a syllable rate, so PESQ sees speech
    return (0.2 * env * np.sign(np.sin(2 * np.pi * freq * t))).astype(np.float32)


def test_several_clips_train_together_and_score_as_means(tmp_path: Path) -> None:
    (tmp_path / "m").mkdir()
    model = build_model_file(tmp_path / "m")
    clips = tmp_path / "clips"
    clips.mkdir()
    for freq in (150.0, 220.0):
        sf.write(clips / f"v{int(freq)}.flac", _voice(freq), RATE)
    common = ["--init", str(model), "--steps", "2", "--eval-every", "2", "--batch", "2"]

    def log_of(*clip: Path) -> list[dict]:
        out = tmp_path / f"{len(list(tmp_path.glob('*.json')))}.json"
        overfit.main(["--clip", *map(str, clip), *common, "--json", str(out)])
        return json.loads(out.read_text())["log"]

    low, high = log_of(clips / "v150.flac"), log_of(clips / "v220.flac")
    pair = log_of(clips)  # the folder: both clips
    assert [r["step"] for r in pair] == [0, 2]
    assert {"pesq", "stoi", "lsd_0_4k", "si_snr"} <= set(pair[0])
    # Step 0 is the same warm-started model: the pair's scores are the two clips' means.
    for key in ("lsd_0_4k", "si_snr", "stoi"):
        assert np.isclose(pair[0][key], (low[0][key] + high[0][key]) / 2, rtol=1e-5), key
    assert all(np.isfinite(r["lsd_0_4k"]) for r in pair)


def test_the_balancer_trains_with_the_rvq_bypassed(tmp_path: Path) -> None:
    # With --n-q 0 there is no commitment term; the balanced backward must not need one.
    (tmp_path / "m").mkdir()
    model = build_model_file(tmp_path / "m")
    clip = tmp_path / "v.flac"
    sf.write(clip, _voice(180.0), RATE)
    out = tmp_path / "log.json"
    args = ["--clip", str(clip), "--init", str(model), "--steps", "2", "--eval-every", "2"]
    overfit.main([*args, "--batch", "2", "--n-q", "0", "--balancer", "--json", str(out)])
    log = json.loads(out.read_text())["log"]
    assert [r["step"] for r in log] == [0, 2]
    assert log[1]["lsd_0_4k"] != log[0]["lsd_0_4k"]  # the weights moved
