"""`neucomp eval --model 48khz`: every codec fed and scored in stereo at 48 kHz, with the
top band and the stereo image measured."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf
from click.testing import CliRunner
from conftest import HQ_NAME

from neucomp.eval import baselines as B
from neucomp.eval import cli, runner

HQ = runner.Domain(48000, 2)


def _write(path: Path, seconds: float, rate: int, channels: int, seed: int = 0) -> Path:
    """Noise with a tone, panned: the left louder, the right delayed (a real image)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(seed)
    n = int(seconds * rate)
    t = np.arange(n) / rate
    x = 0.2 * np.sin(2 * np.pi * 440 * t) + 0.05 * rng.standard_normal(n)
    sides = [x, 0.5 * np.roll(x, 50) + 0.02 * rng.standard_normal(n)][:channels]
    sf.write(str(path), np.stack(sides, axis=1), rate)
    return path


@pytest.fixture
def refs(tmp_path: Path) -> Path:
    _write(tmp_path / "music" / "wide.flac", 0.6, 44100, 2)
    _write(tmp_path / "music" / "full.wav", 0.6, 48000, 2, seed=1)
    _write(tmp_path / "speech" / "voice.wav", 0.6, 16000, 1, seed=2)
    return tmp_path


def keeps_stereo(audio: np.ndarray, rate: int, bandwidth: float) -> tuple[np.ndarray, int, int]:
    """Stand-in: adds a little noise, keeps both sides."""
    assert audio.shape[0] == 2 and rate == 48000
    noise = 1e-3 * np.random.default_rng(0).standard_normal(audio.shape)
    return audio + noise, rate, int(bandwidth * 125 * audio.shape[1] / rate)


def mono_codec(audio: np.ndarray, rate: int, bandwidth: float) -> tuple[np.ndarray, int, int]:
    """Stand-in that collapses the image: the mix on both sides."""
    y, rate, n = keeps_stereo(audio, rate, bandwidth)
    return np.repeat(y.mean(axis=0, keepdims=True), 2, axis=0), rate, n


def test_the_domain_is_the_models() -> None:
    from conftest import tiny_hq_config

    assert runner.Domain.of(tiny_hq_config()) == HQ
    assert runner.Domain(24000, 1) == runner.DEFAULT_DOMAIN
    assert "stereo at 48 kHz" in runner.table_note(HQ)
    assert "mono" in runner.TABLE_NOTE and runner.table_note() == runner.TABLE_NOTE


def test_stereo_rows_measure_the_image_and_the_top_band(refs: Path) -> None:
    files = runner.find_files([refs])
    kw = {"use_visqol": False, "progress": False, "domain": HQ}
    kept = runner.evaluate(files, [6.0], [], keeps_stereo, **kw)
    lost = runner.evaluate(files, [6.0], [], mono_codec, **kw)
    by_kept = {Path(r.file).name: r for r in kept}
    by_lost = {Path(r.file).name: r for r in lost}
    for name in ("wide.flac", "full.wav"):
        k, m = by_kept[name], by_lost[name]
        assert k.lsd_12_20k is not None and k.side_lsd is not None and k.ild_error is not None
        # The collapsed image is far off; the kept one is not.
        assert k.ild_error < 0.5 < 3 < m.ild_error
        assert k.side_lsd < m.side_lsd - 20
        assert k.seconds == pytest.approx(0.6, abs=1e-3)
    # A mono reference goes in as L = R: a codec that keeps it so loses nothing of it.
    assert by_lost["voice.wav"].ild_error == pytest.approx(0.0, abs=1e-6)
    # Mono scoring has none of the stereo metrics, nor the band above its Nyquist.
    mono = runner.evaluate(
        files, [6.0], [], lambda a, r, b: (a, r, 100), progress=False, use_visqol=False
    )
    assert all(r.side_lsd is None and r.lsd_12_20k is None for r in mono)


@pytest.mark.skipif(bool(B.missing_tools("opus")), reason="opus-tools not installed")
def test_eval_command_with_the_48khz_model(
    refs: Path, tmp_path: Path, hq_model, monkeypatch: pytest.MonkeyPatch
) -> None:
    pytest.importorskip("matplotlib")
    from neucomp.eval import spectrogram

    rates: list[int] = []
    real_write = spectrogram.write

    def spy(path, panels, rate, title=""):
        rates.append(rate)
        assert all(np.asarray(x).shape[0] == 2 for _, x in panels)
        real_write(path, panels, rate, title)

    monkeypatch.setattr(spectrogram, "write", spy)
    monkeypatch.setattr(B, "DEFAULT_BITRATES", {"opus": (6,), "mp3": (32,)})
    out_json, pictures = tmp_path / "eval.json", tmp_path / "pictures"
    args = [str(refs / "music"), "--model", "48khz", "--baselines", "opus", "--no-visqol", "-q"]
    args += ["--json", str(out_json), "--spectrograms", str(pictures)]
    result = CliRunner().invoke(cli.eval_command, args)
    assert result.exit_code == 0, result.output
    doc = json.loads(out_json.read_text())
    assert (doc["meta"]["rate"], doc["meta"]["channels"]) == (48000, 2)
    assert doc["meta"]["model"]["name"] == HQ_NAME and doc["meta"]["bandwidths"] == [3, 6, 12, 24]
    settings = sorted({r["setting"] for r in doc["rows"] if r["codec"] == "neucomp"})
    assert settings == [3.0, 6.0, 12.0, 24.0]  # the model's own bandwidths by default
    assert {r["codec"] for r in doc["rows"]} == {"neucomp", "opus"}
    assert all(r["side_lsd"] is not None and r["lsd_12_20k"] is not None for r in doc["rows"])
    header = result.output.split("**all**", 1)[1].split("\n\n", 2)[1].splitlines()[0]
    assert "LSD 12–20k ↓" in header and "side LSD ↓" in header and "ILD err dB ↓" in header
    assert "stereo at 48 kHz" in result.output
    assert rates == [48000, 48000] and len(list(pictures.iterdir())) == 2


def test_eval_command_refuses_a_bandwidth_the_model_lacks(refs: Path, hq_model) -> None:
    args = [str(refs / "music"), "--model", "48khz", "-b", "1.5", "--baselines", "none"]
    result = CliRunner().invoke(cli.eval_command, [*args, "--no-visqol", "-q"])
    assert result.exit_code != 0
    assert "1.5 kbps for model 'neucomp_48khz' (it offers 3, 6, 12, 24)" in str(result.exception)
