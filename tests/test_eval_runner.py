"""`neucomp eval` end to end with a stand-in codec: files found, categories, every row."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf
from click.testing import CliRunner

from neucomp.errors import InputError
from neucomp.eval import cli, runner


def _write(path: Path, seconds: float, rate: int, channels: int) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    t = np.arange(int(seconds * rate)) / rate
    x = 0.3 * np.sin(2 * np.pi * 330 * t) * (1 + 0.5 * np.sin(2 * np.pi * 2 * t))
    sf.write(str(path), np.stack([x] * channels, axis=1), rate)


@pytest.fixture
def refs(tmp_path: Path) -> Path:
    _write(tmp_path / "speech" / "s1.wav", 1.0, 16000, 1)
    _write(tmp_path / "speech" / "nested" / "s2.flac", 1.2, 22050, 1)
    _write(tmp_path / "music" / "m1.wav", 1.0, 44100, 2)
    (tmp_path / "music" / "notes.txt").write_text("not audio")
    _write(tmp_path / ".scratch" / "speech" / "raw.wav", 0.5, 16000, 1)
    return tmp_path


def fake_codec(audio: np.ndarray, rate: int, bandwidth: float) -> tuple[np.ndarray, int, int]:
    """Stand-in for neucomp: coarser quantisation at lower bandwidth, output at 48 kHz."""
    import soxr

    step = 2.0 ** -(bandwidth + 2)
    decoded = np.round(audio / step) * step
    n_bytes = int(bandwidth * 1000 / 8 * len(audio) / rate)
    return soxr.resample(decoded, rate, 48000)[None, :], 48000, n_bytes


def test_find_files_walks_folders_and_names_categories(refs: Path) -> None:
    files = runner.find_files([refs])
    assert [(f.path.name, f.category) for f in files] == [
        ("m1.wav", "music"),
        ("s2.flac", "speech"),  # speech/nested/ sorts before speech/s1.wav
        ("s1.wav", "speech"),
    ]
    single = runner.find_files([refs / "music" / "m1.wav"])
    assert [f.category for f in single] == ["music"]
    with pytest.raises(InputError):
        runner.find_files([refs / "missing.wav"])
    (refs / "empty").mkdir()
    with pytest.raises(InputError, match="no audio files"):
        runner.find_files([refs / "empty"])


def test_evaluate_gives_a_row_per_file_and_bandwidth(refs: Path) -> None:
    files = runner.find_files([refs])
    rows = runner.evaluate(files, [1.5, 6.0], [], fake_codec, use_visqol=False, progress=False)
    assert [(Path(r.file).name, r.setting) for r in rows] == [
        (f.path.name, bw) for f in files for bw in (1.5, 6.0)
    ]
    by = {(Path(r.file).name, r.setting): r for r in rows}
    assert by[("s1.wav", 6.0)].kbps == pytest.approx(6.0, rel=0.01)
    assert by[("s2.flac", 1.5)].seconds == pytest.approx(1.2, abs=1e-3)
    # More bandwidth, finer quantisation: better on both metrics.
    assert by[("m1.wav", 6.0)].si_snr > by[("m1.wav", 1.5)].si_snr + 20
    assert by[("m1.wav", 6.0)].mel_distance < by[("m1.wav", 1.5)].mel_distance


def test_eval_command_writes_table_json_and_plot(
    refs: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(runner, "neucomp_codec", lambda lm, model: fake_codec)
    monkeypatch.setattr(cli, "_model_meta", lambda model: {"name": "fake"})
    out_json, out_md = tmp_path / "eval.json", tmp_path / "eval.md"
    args = [str(refs), "-b", "3,12", "--baselines", "none", "--no-visqol", "-q"]
    args += ["--json", str(out_json), "--markdown", str(out_md)]
    result = CliRunner().invoke(cli.eval_command, args)
    assert result.exit_code == 0, result.output
    doc = json.loads(out_json.read_text())
    assert len(doc["rows"]) == 3 * 2
    assert doc["meta"]["model"] == {"name": "fake"} and doc["meta"]["rate"] == 24000
    for heading in ("**speech** (2 files)", "**music** (1 file)", "**all** (3 files)"):
        assert heading in result.output
    assert out_md.read_text() in result.output


def test_eval_command_with_the_real_codec(refs: Path, tiny_model) -> None:
    wav = refs / "music" / "m1.wav"
    result = CliRunner().invoke(
        cli.eval_command, [str(wav), "-b", "1.5,6", "--baselines", "none", "--no-visqol", "-q"]
    )
    assert result.exit_code == 0, result.output
    table = [line for line in result.output.splitlines() if line.startswith("| neucomp |")]
    kbps = [float(line.split("|")[3]) for line in table]
    # Actual rates: the nominal ones plus the container's header and framing.
    assert len(kbps) == 2 and 1.5 < kbps[0] < kbps[1] and 6.0 <= kbps[1] < 9.0


def test_eval_command_rejects_bad_options(refs: Path) -> None:
    result = CliRunner().invoke(cli.eval_command, [str(refs), "-b", "six"])
    assert isinstance(result.exception, cli.UsageError)
    result = CliRunner().invoke(cli.eval_command, [str(refs), "--baselines", "aac"])
    assert isinstance(result.exception, cli.UsageError)


def test_eval_module_imports_without_torch() -> None:
    import subprocess
    import sys

    code = (
        "import sys, neucomp.eval.cli; print('torch' in sys.modules, 'matplotlib' in sys.modules)"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.split() == ["False", "False"]


def test_visqol_has_no_answer_for_silence_or_tiny_clips() -> None:
    pytest.importorskip("visqol")
    silence = np.zeros(runner.EVAL_RATE, np.float32)
    assert runner.score(silence, silence, "speech", use_visqol=True)["visqol_audio"] is None
    tiny = np.full(100, 0.1, np.float32)
    assert runner.score(tiny, tiny, "music", use_visqol=True)["visqol_audio"] is None
