"""Spectrogram sheets: one PNG per clip, every decoding a panel, all on one dB scale."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from neucomp.eval import spectrogram

RATE = 24000


def _tone(freq: float, level: float = 0.3, seconds: float = 1.0) -> np.ndarray:
    t = np.arange(int(seconds * RATE)) / RATE
    noise = 1e-3 * np.random.default_rng(0).standard_normal(len(t))
    return (level * np.sin(2 * np.pi * freq * t) + level * noise).astype(np.float32)


def _panels_in(path: Path) -> list[tuple[int, float]]:
    """(width in px, mean brightness) of each wide coloured block across the image's middle
    row: the spectrogram panels (white gaps between them, the colour bar is narrow)."""
    import matplotlib.image

    img = matplotlib.image.imread(str(path))[..., :3]
    row = img[img.shape[0] // 2]
    coloured = np.abs(row - 1.0).max(axis=1) > 0.02
    blocks, start = [], None
    for i, c in enumerate([*coloured, False]):
        if c and start is None:
            start = i
        elif not c and start is not None:
            if i - start > 100:
                blocks.append((i - start, float(row[start:i].mean())))
            start = None
    return blocks


def test_power_db_peaks_at_the_tone() -> None:
    spec = spectrogram.power_db(_tone(3000.0), RATE)
    assert spec.shape[0] == spectrogram.N_FFT // 2 + 1
    peak_bin = int(np.argmax(spec[:, spec.shape[1] // 2]))
    assert peak_bin * RATE / spectrogram.N_FFT == pytest.approx(3000.0, abs=RATE / 1024)


def test_sheet_has_one_panel_per_signal_on_one_scale(tmp_path: Path) -> None:
    pytest.importorskip("matplotlib")
    loud, quiet = _tone(1000.0), _tone(1000.0, level=0.003)  # 40 dB apart
    path = tmp_path / "sub" / "clip.png"
    spectrogram.write(path, [("reference", loud), ("a", quiet), ("b", loud)], RATE, "clip")
    assert path.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    blocks = _panels_in(path)
    assert len(blocks) == 3
    # One dB scale: the quiet copy is drawn darker, the loud one like the reference.
    (_, ref), (_, a), (_, b) = blocks
    assert a < ref - 0.05
    assert b == pytest.approx(ref, abs=0.01)


def test_sheet_width_follows_the_panel_count(tmp_path: Path) -> None:
    pytest.importorskip("matplotlib")
    x = _tone(500.0, seconds=0.3)
    spectrogram.write(tmp_path / "five.png", [(str(i), x) for i in range(5)], RATE)
    assert len(_panels_in(tmp_path / "five.png")) == 5
    with pytest.raises(ValueError):
        spectrogram.write(tmp_path / "none.png", [], RATE)


def test_compare_draws_each_model_on_the_same_clip(tmp_path: Path, capsys) -> None:
    """`python -m neucomp.eval spectrogram`: the reference plus one panel per model, each
    model really coding the clip (two different weights give two different scores)."""
    import soundfile as sf
    from conftest import build_model_file

    from neucomp.eval import compare

    (tmp_path / "dev" / "music").mkdir(parents=True)
    sf.write(tmp_path / "dev" / "music" / "a.flac", _tone(440.0, seconds=2.0), RATE)
    for seed in (0, 1):
        (tmp_path / f"m{seed}").mkdir()
    models = [str(build_model_file(tmp_path / f"m{seed}", seed=seed)) for seed in (0, 1)]
    out = tmp_path / "sheet.png"
    argv = [str(tmp_path / "dev"), *models, "--out", str(out), "--category", "music"]
    assert compare.main([*argv, "--labels", "A,B", "--seconds", "1"]) == 0
    lines = [ln for ln in capsys.readouterr().out.splitlines() if ln.startswith(("A:", "B:"))]
    assert len(lines) == 2 and all("lsd_0_4k" in ln for ln in lines)
    assert lines[0].split(":")[1] != lines[1].split(":")[1]
    assert len(_panels_in(out)) == 3
    with pytest.raises(SystemExit, match="2 labels for 1 models"):
        compare.main([str(tmp_path / "dev"), models[0], "--out", str(out), "--labels", "A,B"])


def test_compare_labels_carry_the_scores() -> None:
    from neucomp.eval.compare import panel_label

    label = panel_label("P8 6 kbps", {"pesq": 2.081, "stoi": 0.7172, "lsd_0_4k": 12.71})
    assert label == "P8 6 kbps\nPESQ 2.08 STOI 0.717\nLSD 12.7"
    assert panel_label("x", {"lsd_0_4k": 1.0, "lsd_12_20k": float("nan")}) == "x\nLSD 1.0"
