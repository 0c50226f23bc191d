"""`neucomp eval` end to end with a stand-in codec: files found, categories, every row."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf
from click.testing import CliRunner

from neucomp.errors import InputError
from neucomp.eval import cli, report, runner


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
    monkeypatch.setattr(runner, "neucomp_codec", lambda lm, model, postfilter: fake_codec)
    monkeypatch.setattr(cli, "_model_meta", lambda model: {"name": "fake"})
    out_json, out_md = tmp_path / "eval.json", tmp_path / "eval.md"
    args = [str(refs), "-b", "3,12", "--baselines", "none", "--no-visqol", "-q"]
    args += ["--json", str(out_json), "--markdown", str(out_md)]
    result = CliRunner().invoke(cli.eval_command, args)
    assert result.exit_code == 0, result.output
    doc = json.loads(out_json.read_text())
    assert len([r for r in doc["rows"] if r["codec"] == "neucomp"]) == 3 * 2
    # DNSMOS (on by default) adds a row for each speech file's own reference.
    from neucomp.eval import metrics

    n_refs = 0 if metrics.missing_for("dnsmos") else 2
    assert len([r for r in doc["rows"] if r["codec"] == "reference"]) == n_refs
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


# ------------------------------------------------------ speech metrics, DNSMOS, spectrograms


@pytest.fixture
def speech_refs(tmp_path: Path) -> Path:
    """Two real speech clips (cut from the shipped recording) and one synthetic music file."""
    audio, rate = sf.read(str(Path(__file__).parent / "data" / "sample.flac"), dtype="float32")
    root = tmp_path / "refs"
    (root / "speech").mkdir(parents=True)
    sf.write(str(root / "speech" / "a.flac"), audio[: 4 * rate], rate)
    sf.write(str(root / "speech" / "b.flac"), audio[5 * rate : 9 * rate], rate)
    _write(root / "music" / "m.wav", 1.0, 24000, 1)
    return root


def test_speech_files_get_pesq_and_stoi_every_file_lsd(speech_refs: Path) -> None:
    pytest.importorskip("pesq")
    pytest.importorskip("pystoi")
    files = runner.find_files([speech_refs])
    rows = runner.evaluate(files, [1.5, 6.0], [], fake_codec, use_visqol=False, progress=False)
    for row in rows:
        assert row.lsd_0_4k is not None and row.lsd_0_4k >= 0
        assert row.lsd_8_12k is not None
        if row.category == "speech":
            assert 1.0 <= row.pesq <= 4.7 and 0.0 <= row.stoi <= 1.0
        else:
            assert row.pesq is None and row.stoi is None
        assert row.dnsmos_ovrl is None  # off unless asked for
    by = {(Path(r.file).name, r.setting): r for r in rows}
    for name in ("a.flac", "b.flac"):
        coarse, fine = by[(name, 1.5)], by[(name, 6.0)]
        assert fine.pesq > coarse.pesq + 1.0
        assert fine.stoi > coarse.stoi
        assert fine.lsd_4_8k < coarse.lsd_4_8k


def test_dnsmos_scores_the_reference_and_every_decoding(speech_refs: Path) -> None:
    from neucomp.eval import metrics

    if metrics.missing_for("dnsmos"):
        pytest.skip("speechmos/onnxruntime/librosa not installed")
    files = [f for f in runner.find_files([speech_refs]) if f.path.name in ("a.flac", "m.wav")]
    use = runner.MetricSet(visqol=False, pesq=False, stoi=False, dnsmos=True)
    rows = runner.evaluate(files, [1.5, 6.0], [], fake_codec, progress=False, use=use)
    refs = [r for r in rows if r.codec == "reference"]
    assert [Path(r.file).name for r in refs] == ["a.flac"]  # speech files only
    ref = refs[0]
    assert ref.kbps is None and ref.si_snr is None
    assert all(1.0 <= getattr(ref, k) <= 5.0 for k in metrics.DNSMOS_KEYS)
    coded = {r.setting: r for r in rows if r.codec == "neucomp" and r.category == "speech"}
    assert coded[6.0].dnsmos_ovrl > coded[1.5].dnsmos_ovrl
    assert all(r.dnsmos_ovrl is None for r in rows if r.category == "music")
    md = report.markdown(rows)
    assert "| reference | – |" in md and "DNSMOS OVRL ↑" in md


def test_spectrogram_panels_pick_opus_at_matching_rates() -> None:
    ref = np.zeros(100, np.float32)
    decoded = [("neucomp", bw, ref) for bw in (3.0, 6.0, 12.0)]
    decoded += [("opus", br, ref) for br in (6.0, 12.0, 24.0)] + [("mp3", 32.0, ref)]
    labels = [label for label, _ in runner.spectrogram_panels(ref, decoded, "neucomp")]
    assert labels == [
        "reference",
        "neucomp 3 kbps",
        "neucomp 6 kbps",
        "neucomp 12 kbps",
        "opus 6 kbps",
        "opus 12 kbps",
    ]
    # No Opus rate equals a neucomp one: the nearest single one.
    decoded = [("neucomp", 1.5, ref), ("opus", 6.0, ref), ("opus", 24.0, ref)]
    labels = [label for label, _ in runner.spectrogram_panels(ref, decoded, "neucomp")]
    assert labels == ["reference", "neucomp 1.5 kbps", "opus 6 kbps"]


def test_eval_command_reports_speech_metrics_and_draws_spectrograms(
    speech_refs: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    pytest.importorskip("matplotlib")
    pytest.importorskip("pesq")
    from neucomp.eval import spectrogram

    monkeypatch.setattr(runner, "neucomp_codec", lambda lm, model, postfilter: fake_codec)
    monkeypatch.setattr(cli, "_model_meta", lambda model: {"name": "fake"})
    drawn: dict[str, list[str]] = {}
    real_write = spectrogram.write

    def spy(path, panels, rate, title=""):
        drawn[Path(path).name] = [label for label, _ in panels]
        real_write(path, panels, rate, title)

    monkeypatch.setattr(spectrogram, "write", spy)
    out_json, pictures = tmp_path / "eval.json", tmp_path / "pictures"
    args = [str(speech_refs), "-b", "3,12", "--baselines", "none", "--no-visqol", "--no-dnsmos"]
    args += ["-q", "--json", str(out_json), "--spectrograms", str(pictures)]
    result = CliRunner().invoke(cli.eval_command, args)
    assert result.exit_code == 0, result.output
    assert sorted(p.name for p in pictures.iterdir()) == [
        "music_m.png",
        "speech_a.png",
        "speech_b.png",
    ]
    assert drawn["speech_a.png"] == ["reference", "neucomp 3 kbps", "neucomp 12 kbps"]
    for heading in ("**speech**", "**all**"):
        header = result.output.split(heading, 1)[1].split("\n\n", 2)[1].splitlines()[0]
        assert "PESQ-wb ↑" in header and "STOI ↑" in header and "LSD 0–4k ↓" in header
    music = result.output.split("**music**", 1)[1].split("**all**", 1)[0]
    assert "PESQ" not in music and "LSD 4–8k ↓" in music
    doc = json.loads(out_json.read_text())
    assert doc["meta"]["pesq"]["mode"] == "wb" and "dnsmos" not in doc["meta"]
    speech = [r for r in doc["rows"] if r["category"] == "speech"]
    assert all(r["pesq"] is not None and r["lsd_0_4k"] is not None for r in speech)


def test_eval_command_skips_a_missing_metric_package_with_a_note(
    refs: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from neucomp.eval import metrics

    monkeypatch.setattr(runner, "neucomp_codec", lambda lm, model, postfilter: fake_codec)
    monkeypatch.setattr(cli, "_model_meta", lambda model: {"name": "fake"})
    monkeypatch.setattr(
        metrics, "missing_for", lambda m: f"{m} cannot be imported (ModuleNotFoundError)"
    )

    def unreachable(*args, **kwargs):
        raise AssertionError("a skipped metric was computed")

    for name in ("pesq_wb", "stoi", "dnsmos"):
        monkeypatch.setattr(metrics, name, unreachable)
    args = [str(refs), "-b", "6", "--baselines", "none", "--no-visqol", "-q"]
    result = CliRunner().invoke(cli.eval_command, args)
    assert result.exit_code == 0, result.output
    for name in ("PESQ", "STOI", "DNSMOS"):
        assert f"neucomp eval: {name} skipped: " in result.output
    assert "PESQ-wb ↑" not in result.output and "LSD 0–4k ↓" in result.output
