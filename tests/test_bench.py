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


def test_block_latency_is_from_its_write_to_its_last_sample_out() -> None:
    from neucomp.eval.live import _block_latencies

    written = [(100, 1.0), (200, 2.0), (300, 3.0), (400, 4.0)]
    arrivals = [(1.5, 150), (2.6, 250), (3.2, 300)]  # the last block never came out
    assert _block_latencies(written, arrivals) == pytest.approx([0.5, 0.6, 0.2])
