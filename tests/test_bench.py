"""`make bench` helpers: honest peak-RSS measurement and the comparison table."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest

from neucomp.eval import bench


def test_peak_rss_is_the_commands_own(tmp_path: Path) -> None:
    # The bench process is big (torch is loaded); a small child must not inherit that.
    import torch  # noqa: F401

    small = bench.run_measured([sys.executable, "-c", "pass"], tmp_path)
    big = bench.run_measured(
        [
            sys.executable,
            "-c",
            "b = bytearray(300 * 1024 * 1024); b[::4096] = b'x' * len(b[::4096])",
        ],
        tmp_path,
    )
    assert small["peak_rss_mb"] < 100
    assert big["peak_rss_mb"] > small["peak_rss_mb"] + 250
    assert big["wall_s"] > 0


def test_failing_command_raises(tmp_path: Path) -> None:
    with pytest.raises(RuntimeError, match="failed"):
        bench.run_measured([sys.executable, "-c", "raise SystemExit(3)"], tmp_path)


def test_table_shows_change_against_previous_results() -> None:
    new = {
        "load_model_s": 0.5,
        "rtf": {"plain": {"encode": {"6": {"median": 12.0, "min": 11.0, "max": 13.5, "runs": 5}}}},
        "memory": {"600s": {"compress": {"peak_rss_mb": 300.0}}},
    }
    old = {"rtf": {"plain": {"encode": {"6": {"median": 10.0, "runs": 5}}}}}
    lines = bench.table(new, old).splitlines()
    rows = {line.split("|")[1].strip(): line for line in lines[2:]}
    assert set(rows) == {
        "load_model_s",
        "rtf.plain.encode.6.median",
        "memory.600s.compress.peak_rss_mb",
    }
    assert "| 12 (11–13.5) | 10 | +20.0 % |" in rows["rtf.plain.encode.6.median"]
    assert rows["load_model_s"].rstrip().endswith("| – | – |")


def test_source_is_looped_to_the_asked_length(tmp_path: Path) -> None:
    import numpy as np
    import soundfile as sf

    clip = tmp_path / "clip.flac"
    sf.write(str(clip), np.sin(np.arange(16000) / 5.0) * 0.3, 16000)
    audio, origin = bench.load_source(2.5, clip)
    assert len(audio) == int(2.5 * bench.RATE) and audio.dtype == np.float32
    assert str(clip) in origin and "looped" in origin


def test_dev_clips_are_taken_in_turn_from_each_category() -> None:
    clips = [Path(p) for p in ("m/1.flac", "m/2.flac", "m/3.flac", "s/1.flac", "x/1.flac")]
    order = [str(p) for p in bench._round_robin(clips)]
    assert order == ["m/1.flac", "s/1.flac", "x/1.flac", "m/2.flac", "m/3.flac"]


def test_48khz_rows_are_skipped_with_a_note_without_the_model(model_dir, monkeypatch) -> None:
    monkeypatch.setenv("NEUCOMP_MODEL_DIR", str(model_dir))  # the 24 kHz model only
    notes: list[str] = []
    assert bench.bench_hq(0.5, 1, "neucomp_48khz", None, notes) is None
    assert len(notes) == 1 and notes[0].startswith("48 kHz rows skipped: ")
    assert "neucomp_48khz.pt is missing" in notes[0]


def test_48khz_rows_time_plain_6_kbps_on_stereo(hq_model, tmp_path) -> None:
    import numpy as np
    import soundfile as sf

    clip = tmp_path / "song.flac"
    sf.write(str(clip), 0.1 * np.random.default_rng(0).standard_normal((44100, 2)), 44100)
    notes: list[str] = []
    rows = bench.bench_hq(1.5, 2, "neucomp_48khz", clip, notes)
    assert notes == [] and rows["model"]["name"] == "neucomp_48khz"
    for side in ("encode", "decode"):
        stats = rows["plain"][side]["6"]
        assert stats["runs"] == 2 and 0 < stats["min"] <= stats["median"] <= stats["max"]
    assert 6.0 < rows["plain"]["encode"]["6"]["kbps"] < 9.0
    assert "song.flac" in rows["source"]
    # A stereo source: two different channels at 48 kHz.
    audio, _ = bench.load_source(1.0, clip, 48000, 2)
    assert audio.shape == (2, 48000) and not np.array_equal(audio[0], audio[1])


def test_block_latency_is_from_its_write_to_its_last_sample_out() -> None:
    from neucomp.eval.live import _block_latencies

    written = [(100, 1.0), (200, 2.0), (300, 3.0), (400, 4.0)]
    arrivals = [(1.5, 150), (2.6, 250), (3.2, 300)]  # the last block never came out
    assert _block_latencies(written, arrivals) == pytest.approx([0.5, 0.6, 0.2])
