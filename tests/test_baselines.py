"""Opus / MP3 baselines: aligned round trips, honest sizes, and clear skips without tools."""

from __future__ import annotations

import shutil

import numpy as np
import pytest

from neucomp.audio.signal import resample
from neucomp.eval import baselines as B
from neucomp.eval.metrics import MissingDependencyError, kbps, si_snr

RATE = 24000
SECONDS = 2.0


def _chirp() -> np.ndarray:
    """A 2 s rising sweep (200 Hz → 4 kHz): any misalignment wrecks its SI-SNR."""
    t = np.arange(int(SECONDS * RATE)) / RATE
    freq = 200 * np.exp(np.log(20) * t / SECONDS)
    x = 0.4 * np.sin(2 * np.pi * np.cumsum(freq) / RATE) * np.minimum(1, t * 10)
    return x.astype(np.float32)


needs_opus = pytest.mark.skipif(bool(B.missing_tools("opus")), reason="opus-tools not installed")
needs_lame = pytest.mark.skipif(bool(B.missing_tools("mp3")), reason="lame not installed")


@needs_opus
def test_opus_round_trip_is_aligned_and_sized() -> None:
    x = _chirp()
    out = B.round_trip(x, RATE, B.Baseline("opus", 24))
    assert out.audio.shape == x.shape and out.audio.dtype == np.float32
    assert si_snr(x, out.audio) > 25
    # Shifting by a few samples must make it worse: the output is sample-aligned.
    assert si_snr(x[:-3], out.audio[3:]) < si_snr(x, out.audio) - 3
    assert 18 < kbps(out.n_bytes, SECONDS) < 45


@needs_lame
@pytest.mark.parametrize("bitrate", [32, 64])
def test_mp3_round_trip_is_aligned_and_sized(bitrate: int) -> None:
    # At 32 kbps lame resamples to 22.05 kHz and writes no LAME tag, so the encoder
    # delay is ours to remove; at 64 kbps lame's decoder removes it.
    x = _chirp()
    out = B.round_trip(x, RATE, B.Baseline("mp3", bitrate))
    assert out.audio.shape == x.shape
    assert si_snr(x, out.audio) > 25
    assert kbps(out.n_bytes, SECONDS) == pytest.approx(bitrate, rel=0.1)


def test_lame_tag_detection() -> None:
    assert B.has_lame_tag(b"\xff\xfb\x90\x00" + bytes(32) + b"Info" + bytes(100))
    assert not B.has_lame_tag(b"\xff\xf3\x40\xc4" + bytes(300))


def test_missing_tools_skip_with_a_message(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(shutil, "which", lambda name: None)
    plan, notes = B.plan_baselines(["opus", "mp3"])
    assert plan == []
    assert len(notes) == 2
    assert "opus-tools" in notes[0] and "lame" in notes[1]
    with pytest.raises(MissingDependencyError):
        B.round_trip(_chirp(), RATE, B.Baseline("opus", 12))


def test_plan_lists_every_bitrate(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(shutil, "which", lambda name: f"/usr/bin/{name}")
    plan, notes = B.plan_baselines(["opus", "mp3"])
    assert notes == []
    assert [b.label for b in plan] == [
        "opus 6 kbps",
        "opus 12 kbps",
        "opus 24 kbps",
        "mp3 32 kbps",
        "mp3 64 kbps",
    ]
    with pytest.raises(ValueError):
        B.plan_baselines(["aac"])


@needs_opus
def test_opus_rows_get_the_speech_scores_and_lsd(tmp_path) -> None:
    """Baselines are scored like neucomp: PESQ/STOI on speech rise with the bitrate, and
    Opus 6 kbps (coded at 8 kHz bandwidth or less) loses most above 4 kHz."""
    pytest.importorskip("pesq")
    pytest.importorskip("pystoi")
    from pathlib import Path

    import soundfile as sf

    from neucomp.eval import runner

    audio, rate = sf.read(str(Path(__file__).parent / "data" / "sample.flac"), dtype="float32")
    (tmp_path / "speech").mkdir()
    sf.write(str(tmp_path / "speech" / "s.flac"), audio[: 4 * rate], rate)
    files = runner.find_files([tmp_path])
    plan = [B.Baseline("opus", 6), B.Baseline("opus", 24)]
    rows = runner.evaluate(files, [], plan, None, use_visqol=False, progress=False)
    by = {r.setting: r for r in rows}
    assert set(by) == {6.0, 24.0} and all(r.codec == "opus" for r in rows)
    assert by[24.0].pesq > by[6.0].pesq + 0.5 and by[24.0].stoi > by[6.0].stoi
    assert by[6.0].lsd_4_8k > by[24.0].lsd_4_8k + 3


def _stereo_chirp(rate: int = 48000) -> np.ndarray:
    """[2, T]: the chirp on the left, a quieter delayed copy on the right."""
    x = resample(_chirp(), RATE, rate)
    return np.stack([x, 0.5 * np.roll(x, 240)]).astype(np.float32)


@needs_opus
def test_opus_codes_stereo_as_stereo() -> None:
    from neucomp.eval.metrics import ild_error

    x = _stereo_chirp()
    out = B.round_trip(x, 48000, B.Baseline("opus", 64))
    assert out.audio.shape == x.shape and out.audio.dtype == np.float32
    # Each side comes back as itself, at its own level: the balance survives.
    assert si_snr(x[0], out.audio[0]) > 20 and si_snr(x[1], out.audio[1]) > 20
    assert ild_error(x, out.audio, 48000) < 1.0
    assert 50 < kbps(out.n_bytes, SECONDS) < 80  # one bitrate for both channels
    # At 6 kbps libopus gives up the image: both sides the same (6 dB off on the right).
    low = B.round_trip(x, 48000, B.Baseline("opus", 6)).audio
    assert np.allclose(low[0], low[1], atol=1e-3) and ild_error(x, low, 48000) > 5


@needs_lame
def test_mp3_codes_stereo_as_joint_stereo() -> None:
    x = _stereo_chirp()
    out = B.round_trip(x, 48000, B.Baseline("mp3", 64))
    assert out.audio.shape == x.shape
    assert si_snr(x[0], out.audio[0]) > 15 and si_snr(x[1], out.audio[1]) > 15
    assert kbps(out.n_bytes, SECONDS) == pytest.approx(64, rel=0.1)
