"""The `neucomp` command line, through click's runner and as real processes with pipes."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf
from click.testing import CliRunner
from conftest import (
    BIN,
    build_model_file,
    chunk_spans,
    default_signals,
    make_audio,
    pipe_wav_bytes,
    write_audio,
)

import neucomp
from neucomp import __version__
from neucomp.cli import main

NEUCOMP = str(BIN / "neucomp")


@pytest.fixture
def run(tiny_model):
    """Invoke the CLI in-process; returns click's Result (stdout and stderr separate)."""
    runner = CliRunner()

    def invoke(*args: str, input: bytes | None = None):
        return runner.invoke(main, [str(a) for a in args], input=input, catch_exceptions=False)

    return invoke


@pytest.fixture
def song(tmp_path) -> Path:
    """A short stereo 44.1 kHz WAV."""
    return write_audio(tmp_path / "song.wav", make_audio(44100 // 2, 44100, 2), 44100)


@pytest.fixture
def ecdc(run, song, tmp_path) -> Path:
    out = tmp_path / "song.ecdc"
    assert run("compress", "-q", song, out).exit_code == 0
    return out


def leftovers(folder: Path) -> list[str]:
    """Temp files a failed run might have left behind."""
    return [p.name for p in folder.iterdir() if p.name.startswith(".")]


def assert_one_line_error(result, code: int, pattern: str) -> None:
    lines = result.stderr.strip().splitlines()
    assert result.exit_code == code, result.stderr
    assert len(lines) == 1 and lines[0].startswith("neucomp: error: "), result.stderr
    assert pattern in lines[0], lines[0]
    assert "Traceback" not in result.stderr


# ------------------------------------------------------------------------ happy paths


def test_compress_decompress_round_trip(run, song, tmp_path):
    out = tmp_path / "song.ecdc"
    r = run("compress", song, out)
    assert r.exit_code == 0 and r.stdout == ""
    assert "song.wav: 0.5 s, 44100 Hz, 2 ch → " in r.stderr and "kbps" in r.stderr
    back = tmp_path / "back.flac"
    r = run("decompress", out, back)
    assert r.exit_code == 0 and "→" in r.stderr
    info = sf.info(str(back))
    assert (info.samplerate, info.channels, info.frames, info.format) == (44100, 2, 22050, "FLAC")
    assert run("decompress", "-q", "--float", out, tmp_path / "f.wav").stderr == ""
    assert sf.info(str(tmp_path / "f.wav")).subtype == "FLOAT"


def test_decompress_postfilter_switch(run, tmp_path, tiny_model):
    src = write_audio(tmp_path / "a.wav", make_audio(24000 * 2, 24000), 24000)
    out = tmp_path / "a.ecdc"
    assert run("compress", "-q", src, out).exit_code == 0
    for flag, name in (("--postfilter", "on.wav"), ("--no-postfilter", "off.wav"), (None, "d.wav")):
        args = ["decompress", "-q", "--float", out, tmp_path / name]
        assert run(*(args[:2] + [flag] + args[2:] if flag else args)).exit_code == 0
    on, off, default = (sf.read(str(tmp_path / n))[0] for n in ("on.wav", "off.wav", "d.wav"))
    assert np.array_equal(off, default) and not np.allclose(on, off, atol=1e-3)
    want, _ = neucomp.decompress(out.read_bytes(), postfilter=False)
    np.testing.assert_allclose(off, want[0], atol=1e-6)


def test_compress_content_sets_the_speech_flags_that_info_counts(run, tmp_path, tiny_model):
    src = write_audio(tmp_path / "a.wav", make_audio(24000 * 12, 24000), 24000)
    counts = {}
    for content in ("speech", "other", "auto"):
        out = tmp_path / f"{content}.ecdc"
        assert run("compress", "-q", "--content", content, src, out).exit_code == 0
        fields = json.loads(run("info", "--json", out).stdout)
        counts[content] = (fields["speech_chunks"], fields["chunks"])
    assert counts["speech"] == (2, 2) and counts["other"] == (0, 2)
    assert counts["auto"] == (0, 2)  # tones, not speech
    assert "speech_chunks" in run("info", tmp_path / "speech.ecdc").stdout
    bad = run("compress", "-q", "--content", "music", src, tmp_path / "x.ecdc")
    assert bad.exit_code == 2 and "'music' is not one of" in bad.output
    assert not (tmp_path / "x.ecdc").exists()


@pytest.mark.parametrize("bandwidth", ["1.5", "3", "6", "12", "24"])
def test_every_bandwidth_gives_its_bitrate(run, tmp_path, bandwidth):
    src = write_audio(tmp_path / "a.wav", make_audio(24000 * 2, 24000), 24000)
    out = tmp_path / "a.ecdc"
    assert run("compress", "-q", "-b", bandwidth, src, out).exit_code == 0
    fields = json.loads(run("info", "--json", out).stdout)
    assert fields["payload_kbps"] == pytest.approx(float(bandwidth))
    assert fields["num_codebooks"] == {"1.5": 2, "3": 4, "6": 8, "12": 16, "24": 32}[bandwidth]


def test_info_text_and_json(run, ecdc):
    text = run("info", ecdc)
    assert text.exit_code == 0
    assert "original_sample_rate  44100" in text.stdout and "coder" in text.stdout
    fields = json.loads(run("info", "--json", ecdc).stdout)
    assert fields["original_samples"] == 22050 and fields["original_channels"] == 2
    assert fields["file_bytes"] == ecdc.stat().st_size


def test_output_into_existing_folder(run, song, tmp_path):
    folder = tmp_path / "out"
    folder.mkdir()
    assert run("compress", "-q", song, folder).exit_code == 0
    assert (folder / "song.ecdc").is_file()


def test_force_overwrites(run, song, ecdc):
    before = ecdc.read_bytes()
    assert run("compress", "-q", "-f", "-b", "3", song, ecdc).exit_code == 0
    assert ecdc.read_bytes() != before


def test_non_finite_input_is_a_warning_not_damage(run, tmp_path):
    x = make_audio(24000, 24000)
    x[0, 12000:12005] = np.nan
    src = write_audio(tmp_path / "nan.wav", x, 24000, subtype="FLOAT")
    r = run("compress", "-q", src, tmp_path / "nan.ecdc")
    assert r.exit_code == 0
    assert r.stderr == (
        "neucomp: warning: input has 5 non-finite samples (NaN or inf), the first at "
        "0.500 s: replaced with silence\n"
    )


def test_unsupported_input_rate_is_one_line(run, tmp_path):
    src = write_audio(tmp_path / "low.wav", make_audio(500, 500), 500)
    r = run("compress", src, tmp_path / "low.ecdc")
    assert_one_line_error(r, 2, "sample rate of 500 Hz (supported: 1000 to 384000 Hz)")
    assert not (tmp_path / "low.ecdc").exists() and leftovers(tmp_path) == []


def test_version_and_help(run):
    assert __version__ in run("--version").stdout
    helptext = run("--help").stdout
    for command in ("compress", "decompress", "info", "eval"):
        assert command in helptext


@pytest.mark.parametrize(
    ("ext", "fmt", "subtype", "rate"),
    [
        ("wav", "WAV", "PCM_U8", 8000),
        ("wav", "WAV", "PCM_16", 16000),
        ("wav", "WAV", "PCM_24", 22050),
        ("wav", "WAV", "PCM_32", 44100),
        ("wav", "WAV", "FLOAT", 48000),
        ("flac", "FLAC", "PCM_24", 96000),
        ("ogg", "OGG", "VORBIS", 44100),
        ("opus", "OGG", "OPUS", 48000),
        ("mp3", "MP3", "MPEG_LAYER_III", 44100),
        ("aiff", "AIFF", "PCM_16", 22050),
    ],
)
def test_every_input_format(run, tmp_path, ext, fmt, subtype, rate):
    src = write_audio(tmp_path / f"in.{ext}", make_audio(rate // 5, rate, 2), rate,
                      format=fmt, subtype=subtype)  # fmt: skip
    frames = sf.info(str(src)).frames  # what a reader sees (lossy codecs pad)
    assert run("compress", "-q", src, tmp_path / "x.ecdc").exit_code == 0
    assert run("decompress", "-q", tmp_path / "x.ecdc", tmp_path / "out.wav").exit_code == 0
    info = sf.info(str(tmp_path / "out.wav"))
    assert (info.samplerate, info.channels, info.frames) == (rate, 2, frames)


# -------------------------------------------------------------------------- bad input


def test_missing_input(run, tmp_path):
    r = run("compress", tmp_path / "nope.wav", tmp_path / "x.ecdc")
    assert_one_line_error(r, 2, "no such file")
    assert list(tmp_path.iterdir()) == []


@pytest.mark.parametrize(
    ("content", "message"),
    [(b"hello, I am text\n" * 20, "not an audio file"), (b"", "contains no audio samples")],
)
def test_not_audio_and_empty(run, tmp_path, content, message):
    src = tmp_path / "bad.wav"
    src.write_bytes(content)
    r = run("compress", src, tmp_path / "bad.ecdc")
    assert_one_line_error(r, 2, message)
    assert not (tmp_path / "bad.ecdc").exists() and leftovers(tmp_path) == []


def test_zero_sample_wav(run, tmp_path):
    src = write_audio(tmp_path / "empty.wav", np.zeros((1, 0), np.float32), 16000)
    assert_one_line_error(run("compress", src, tmp_path / "e.ecdc"), 2, "no audio samples")
    assert not (tmp_path / "e.ecdc").exists()


def test_unsupported_bandwidth(run, song, tmp_path):
    r = run("compress", "-b", "5", song, tmp_path / "x.ecdc")
    assert_one_line_error(r, 6, "unsupported bandwidth 5 kbps")
    assert not (tmp_path / "x.ecdc").exists()


def test_output_exists_and_folder_missing(run, song, ecdc, tmp_path):
    before = ecdc.read_bytes()
    assert_one_line_error(run("compress", song, ecdc), 3, "already exists (use -f")
    assert ecdc.read_bytes() == before
    r = run("compress", song, tmp_path / "missing" / "x.ecdc")
    assert_one_line_error(r, 3, "does not exist")
    r = run("decompress", ecdc, tmp_path / "missing" / "x.wav")
    assert_one_line_error(r, 3, "does not exist")


def test_folder_input_needs_folder_output(run, tmp_path):
    r = run("compress", tmp_path, "-")
    assert_one_line_error(r, 6, "needs a folder OUT")


def test_unsupported_output_extension(run, ecdc, tmp_path):
    r = run("decompress", ecdc, tmp_path / "x.mp3")
    assert_one_line_error(r, 6, "unsupported output format")


def _damage(data: bytes, how: str) -> bytes:
    b = bytearray(data)
    if how == "magic":
        b[:4] = b"RIFF"
    elif how == "version":
        b[4] = 9
    elif how == "truncated":
        b = b[: len(b) - 30]
    elif how == "flipped":
        b[len(b) // 2] ^= 0x10
    return bytes(b)


@pytest.mark.parametrize(
    ("how", "message"),
    [
        ("magic", "bad magic"),
        ("version", "unsupported .ecdc version 9"),
        ("truncated", "truncated"),
        ("flipped", "checksum mismatch"),
    ],
)
def test_damaged_ecdc(run, ecdc, tmp_path, how, message):
    bad = tmp_path / "bad.ecdc"
    bad.write_bytes(_damage(ecdc.read_bytes(), how))
    out = tmp_path / "bad.wav"
    assert_one_line_error(run("decompress", bad, out), 4, message)
    assert not out.exists() and leftovers(tmp_path) == []
    assert run("info", bad).exit_code == 4


def _forge(data: bytes, offset: int, fmt: str, value: int, header: bool) -> bytes:
    """Replace one header (or end-record) field and recompute that part's CRC."""
    import struct
    import zlib

    b = bytearray(data)
    header_end = struct.unpack_from("<H", b, 6)[0]
    start, end = (0, header_end) if header else (len(b) - 24, len(b))
    # The checks are chained: the end record's starts from the last chunk's stored one.
    chain = 0
    if not header:
        _, check_at, width, _ = chunk_spans(data)[-1]
        chain = int.from_bytes(b[check_at : check_at + width], "little")
    struct.pack_into(fmt, b, start + offset, value)
    struct.pack_into("<I", b, end - 4, zlib.crc32(bytes(b[start : end - 4]), chain))
    return bytes(b)


@pytest.mark.parametrize(
    ("offset", "fmt", "value", "header", "message"),
    [
        (18, "<I", 2**31, True, "original sample rate must be in [1000, 384000]"),
        (18, "<I", 2**32 - 1, True, "original sample rate must be in"),
        (22, "<H", 1024, True, "original channels must be in [1, 64], got 1024"),
        (22, "<H", 2**16 - 1, True, "original channels must be in"),
        (12, "<Q", 2**32, False, "claims 4294967296 samples at 44100 Hz"),
        (12, "<Q", 2**64 - 1, False, "does not match"),
        (4, "<Q", 2**40, False, "more than the"),
    ],
)
def test_hostile_fields_are_one_line_format_errors(
    run, ecdc, tmp_path, offset, fmt, value, header, message
):
    bad = tmp_path / "bad.ecdc"
    bad.write_bytes(_forge(ecdc.read_bytes(), offset, fmt, value, header))
    out = tmp_path / "bad.wav"
    assert_one_line_error(run("decompress", bad, out), 4, message)
    assert not out.exists() and leftovers(tmp_path) == []


def test_salvage_flag_decodes_around_damage(run, ecdc, tmp_path):
    bad = tmp_path / "bad.ecdc"
    bad.write_bytes(_damage(ecdc.read_bytes(), "flipped"))
    r = run("decompress", "--salvage", bad, tmp_path / "ok.wav")
    assert r.exit_code == 0 and "neucomp: warning: checksum mismatch" in r.stderr
    assert sf.info(str(tmp_path / "ok.wav")).frames == 22050


def test_unknown_model_and_other_weights(run, song, tmp_path):
    other = tmp_path / "other"
    other.mkdir()
    foreign = build_model_file(other, name="other_model")
    impostor = build_model_file(other, seed=3)  # default name, different weights
    a, b = tmp_path / "a.ecdc", tmp_path / "b.ecdc"
    assert run("compress", "-q", "--model", foreign, song, a).exit_code == 0
    assert run("compress", "-q", "--model", impostor, song, b).exit_code == 0
    r = run("decompress", a, tmp_path / "a.wav")
    assert_one_line_error(r, 5, "needs model 'other_model' with weights")
    r = run("decompress", b, tmp_path / "b.wav")
    assert_one_line_error(r, 5, "different weights of model 'neucomp_24khz'")
    r = run("decompress", "-q", "--model", foreign, a, tmp_path / "a.wav")  # given by path
    assert r.exit_code == 0 and (tmp_path / "a.wav").is_file()
    (tmp_path / "a.wav").unlink()
    r = run("compress", "--model", "nonesuch", song, tmp_path / "c.ecdc")
    assert_one_line_error(r, 5, "'nonesuch' is not installed")
    assert sorted(p.name for p in tmp_path.glob("*.*")) == ["a.ecdc", "b.ecdc", "song.wav"]


def test_debug_shows_the_exception(tiny_model, tmp_path, monkeypatch):
    runner = CliRunner()
    r = runner.invoke(main, ["--debug", "compress", str(tmp_path / "nope.wav"), "x.ecdc"])
    assert r.exit_code != 0 and type(r.exception).__name__ == "InputError"
    monkeypatch.setenv("NEUCOMP_DEBUG", "1")
    r = runner.invoke(main, ["compress", str(tmp_path / "nope.wav"), "x.ecdc"])
    assert type(r.exception).__name__ == "InputError"


# ---------------------------------------------------------------- real processes


def sh(command: str, env: dict, cwd: Path, **kw) -> subprocess.CompletedProcess:
    return subprocess.run(
        ["bash", "-o", "pipefail", "-c", command], env=env, cwd=cwd, capture_output=True, **kw
    )


def test_pipe_from_a_sizeless_wav_stream(cli_env, tmp_path):
    """`ffmpeg -f wav - | neucomp compress - - | neucomp decompress - out.wav`."""
    x = make_audio(48000 + 123, 48000, channels=2)
    (tmp_path / "pipe.wav").write_bytes(pipe_wav_bytes(x, 48000))
    p = sh(
        f"cat pipe.wav | {NEUCOMP} compress - - | {NEUCOMP} decompress - out.wav",
        cli_env,
        tmp_path,
    )
    assert p.returncode == 0, p.stderr.decode()
    info = sf.info(str(tmp_path / "out.wav"))
    assert (info.samplerate, info.channels, info.frames) == (48000, 2, 48123)


def test_stdout_and_stdin_files(cli_env, tmp_path):
    write_audio(tmp_path / "a.flac", make_audio(16000, 16000), 16000)
    p = sh(
        f"{NEUCOMP} compress -q - a.ecdc < a.flac && {NEUCOMP} decompress -q a.ecdc - > b.wav"
        f" && {NEUCOMP} info --json - < a.ecdc",
        cli_env,
        tmp_path,
    )
    assert p.returncode == 0 and p.stderr == b"", p.stderr.decode()
    assert json.loads(p.stdout)["original_samples"] == 16000
    y, sr = sf.read(str(tmp_path / "b.wav"))
    assert (sr, y.shape) == (16000, (16000,))


def test_process_error_is_one_line(cli_env, tmp_path):
    (tmp_path / "x.ecdc").write_bytes(b"NCDC" + b"\x07" * 40)
    p = sh(f"{NEUCOMP} decompress x.ecdc y.wav", cli_env, tmp_path)
    err = p.stderr.decode()
    assert p.returncode == 4 and err.count("\n") == 1 and "Traceback" not in err, err
    assert err.startswith("neucomp: error: unsupported .ecdc version 7")
    assert sorted(os.listdir(tmp_path)) == ["x.ecdc"]


def test_python_dash_m(cli_env, tmp_path):
    p = subprocess.run(
        [sys.executable, "-m", "neucomp", "--version"], env=cli_env, capture_output=True
    )
    assert p.returncode == 0 and __version__ in p.stdout.decode()


@pytest.mark.parametrize(
    ("sig", "code", "message"),
    [
        (signal.SIGINT, 130, b"neucomp: interrupted\n"),
        (signal.SIGTERM, 143, b"neucomp: terminated by SIGTERM\n"),
        (signal.SIGHUP, 129, b"neucomp: terminated by SIGHUP\n"),
    ],
)
@pytest.mark.parametrize("command", ["compress", "decompress"])
def test_signals_leave_no_temp_file(cli_env, tmp_path, command, sig, code, message):
    # The input arrives through a pipe that stays open, so the run is still going (with
    # its temp output in place) when the signal comes, however fast the machine is.
    if command == "compress":
        data, out = pipe_wav_bytes(make_audio(8000 * 30, 8000), 8000), "long.ecdc"
    else:
        x = make_audio(8000 * 30, 8000)
        data = subprocess.run(
            [NEUCOMP, "compress", "-", "-"],
            input=pipe_wav_bytes(x, 8000),
            env=cli_env,
            capture_output=True,
            check=True,
        ).stdout[:-100]  # without its end, the decoder waits for more
        out = "long.wav"
    proc = subprocess.Popen(
        [NEUCOMP, command, "-", str(tmp_path / out)],
        env=cli_env,
        stdin=subprocess.PIPE,
        stderr=subprocess.PIPE,
        preexec_fn=default_signals,
    )
    proc.stdin.write(data)
    proc.stdin.flush()
    deadline = time.monotonic() + 60
    while not leftovers(tmp_path) and proc.poll() is None and time.monotonic() < deadline:
        time.sleep(0.02)
    assert leftovers(tmp_path), "the temp output never appeared"
    proc.send_signal(sig)
    _, err = proc.communicate(timeout=60)
    assert proc.returncode == code, err.decode()
    assert err == message
    assert os.listdir(tmp_path) == []


def test_nohup_keeps_sighup_ignored(cli_env, tmp_path):
    src = write_audio(tmp_path / "a.wav", make_audio(8000, 8000), 8000)
    p = sh(
        f"trap '' HUP; {NEUCOMP} compress -q a.wav a.ecdc & pid=$!; kill -HUP $pid; wait $pid",
        cli_env,
        tmp_path,
    )
    assert p.returncode == 0, p.stderr.decode()
    assert (tmp_path / "a.ecdc").exists() and src.exists()


def test_lm_flag(run, tiny_lm, song, tmp_path, monkeypatch):
    out = tmp_path / "lm.ecdc"
    assert run("compress", "-q", "--lm", song, out).exit_code == 0
    assert json.loads(run("info", "--json", out).stdout)["coder"] == "lm"
    assert run("decompress", "-q", out, tmp_path / "lm.wav").exit_code == 0
    assert sf.info(str(tmp_path / "lm.wav")).frames == 22050
    # Without the LM installed, both directions say what is missing.
    bare = tmp_path / "bare"
    bare.mkdir()
    (bare / "neucomp_24khz.pt").write_bytes((tiny_lm.parent / "neucomp_24khz.pt").read_bytes())
    monkeypatch.setenv("NEUCOMP_MODEL_DIR", str(bare))
    r = run("compress", "--lm", song, tmp_path / "x.ecdc")
    assert_one_line_error(r, 5, "the LM for model 'neucomp_24khz' is not installed")
    r = run("decompress", out, tmp_path / "x.wav")
    assert_one_line_error(r, 5, "the LM for model 'neucomp_24khz' with hash")
    assert not (tmp_path / "x.ecdc").exists() and not (tmp_path / "x.wav").exists()


def test_system_errors_are_one_line(run, song, tmp_path, monkeypatch):
    from neucomp import api

    def disk_full(*args, **kwargs):
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(api, "compress_file", disk_full)
    r = run("compress", song, tmp_path / "x.ecdc")
    assert_one_line_error(r, 1, "No space left on device")


# ------------------------------------------------------------- input and output checks


def test_output_that_is_the_input_is_refused(run, song, tmp_path):
    before = song.read_bytes()
    # An audio name is an input, never OUT: the same input twice is refused as such.
    assert_one_line_error(run("compress", "-f", song, song), 6, f"'{song}' is given twice")
    os.link(song, tmp_path / "same.ecdc")
    r = run("compress", "-f", song, tmp_path / "same.ecdc")
    assert_one_line_error(r, 3, "is the input file itself")
    assert song.read_bytes() == before


def test_compress_refuses_an_audio_name_for_ecdc_bytes(run, song, tmp_path):
    r = run("compress", song, tmp_path / "out.mp3")
    assert_one_line_error(r, 6, "compress writes .ecdc files, not '.mp3' audio")
    assert not (tmp_path / "out.mp3").exists()


def test_folder_in_refuses_a_file_like_out(run, song, tmp_path):
    r = run("compress", tmp_path, tmp_path / "out.ecdc")
    assert_one_line_error(r, 6, "needs a folder OUT, not the file name")
    assert not (tmp_path / "out.ecdc").exists()


def test_empty_folder_is_an_error(run, tmp_path):
    (tmp_path / "empty").mkdir()
    r = run("compress", tmp_path / "empty", tmp_path / "out")
    assert_one_line_error(r, 2, "no input files (.wav, .flac")
    assert not (tmp_path / "out").exists()
    r = run("decompress", tmp_path / "empty", tmp_path / "out")
    assert_one_line_error(r, 2, "no input files (.ecdc)")


def test_truncated_wav_is_refused(run, tmp_path):
    full = write_audio(tmp_path / "full.wav", make_audio(24000 * 10, 24000), 24000)
    cut = tmp_path / "cut.wav"
    cut.write_bytes(full.read_bytes()[: 44 + 2 * 24000])
    r = run("compress", cut, tmp_path / "cut.ecdc")
    assert_one_line_error(
        r, 2, "cut.wav' is truncated: its header says 10.0 s (240000 frames), but it holds 1.0 s"
    )
    assert run("compress", "-q", full, tmp_path / "full.ecdc").exit_code == 0


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["compress", "--threads", "0", "a.wav", "b.ecdc"], "Invalid value for '--threads'"),
        (["compress"], "Missing argument 'IN... [OUT]'"),
        (["decompress", "--format", "mp3", "a", "b"], "Invalid value for '--format'"),
        (["--bogus"], "No such option '--bogus'"),
        (["squash"], "No such command 'squash'"),
    ],
)
def test_click_usage_errors_are_one_line(run, args, message):
    assert_one_line_error(run(*args), 2, message)


def test_read_only_file_system_is_named(run, song, tmp_path, monkeypatch):
    class ReadOnly:
        f_flag = os.ST_RDONLY

    monkeypatch.setattr(os, "access", lambda *a, **kw: False)
    monkeypatch.setattr(os, "statvfs", lambda path: ReadOnly())
    r = run("compress", song, tmp_path / "x.ecdc")
    assert_one_line_error(r, 3, f"cannot write to folder '{tmp_path}': read-only file system")


def test_outputs_get_the_mode_open_would_give(run, song, tmp_path):
    before = os.umask(0o027)
    try:
        out = tmp_path / "song.ecdc"
        assert run("compress", "-q", song, out).exit_code == 0
        assert out.stat().st_mode & 0o777 == 0o640
        back = tmp_path / "back.wav"
        assert run("decompress", "-q", out, back).exit_code == 0
        assert back.stat().st_mode & 0o777 == 0o640
        os.umask(0o002)
        out.chmod(0o604)  # -f keeps an existing file's mode, as open() does
        assert run("compress", "-q", "-f", song, out).exit_code == 0
        assert out.stat().st_mode & 0o777 == 0o604
        assert run("compress", "-q", song, tmp_path / "new.ecdc").exit_code == 0
        assert (tmp_path / "new.ecdc").stat().st_mode & 0o777 == 0o664
    finally:
        os.umask(before)


def test_full_disk_is_one_line(run, ecdc, tmp_path, monkeypatch):
    """libsndfile's callbacks must not print 'Exception ignored from cffi callback'."""
    import contextlib
    import errno
    import io

    from neucomp import api

    class FullDisk(io.BytesIO):
        def write(self, data) -> int:
            if self.tell() + len(data) > 60:  # past the first header bytes
                raise OSError(errno.ENOSPC, "No space left on device")
            return super().write(data)

    @contextlib.contextmanager
    def full_output(target, force=False, stream_stdout=False):
        yield FullDisk()

    monkeypatch.setattr(api, "atomic_output", full_output)
    for fmt in ("wav", "flac"):
        r = run("decompress", ecdc, tmp_path / f"out.{fmt}")
        assert_one_line_error(r, 1, "No space left on device")


def test_a_lost_termination_still_ends_the_run_cleanly(tmp_path):
    """If the Terminated exception is lost (swallowed by some library), the run still
    ends after the grace time, and its temp output is removed."""
    script = f"""
import time
from neucomp import signals
from neucomp.audio.writers import atomic_output
signals.GRACE_S = 1.0
signals.raise_terminated = lambda signum, frame: None  # every exception lost
with signals.terminate_as_exception():
    with atomic_output({str(tmp_path / "out.ecdc")!r}) as fp:
        print("writing", flush=True)
        time.sleep(60)
"""
    proc = subprocess.Popen(
        [sys.executable, "-c", script], stdout=subprocess.PIPE, stderr=subprocess.PIPE
    )
    assert proc.stdout.readline() == b"writing\n" and leftovers(tmp_path)
    proc.send_signal(signal.SIGTERM)
    _, err = proc.communicate(timeout=30)
    assert proc.returncode == 143 and err == b"neucomp: terminated by SIGTERM\n", err
    assert os.listdir(tmp_path) == []


@pytest.mark.parametrize("threads", [None, 2])
def test_cli_runs_torch_on_the_threads_asked_for(tmp_path, cli_env, threads) -> None:
    """The CLI applies --threads (default 1) once torch has loaded: two threads ran
    10–20× slower on 2-core machines, and float results depend on the thread count."""
    wav = write_audio(tmp_path / "in.wav", make_audio(12000), 24000)
    ecdc, out = tmp_path / "x.ecdc", tmp_path / "out.wav"
    flag = [] if threads is None else ["--threads", str(threads)]
    commands = [
        ["compress", str(wav), str(ecdc), *flag],
        ["decompress", str(ecdc), str(out), *flag],
    ]
    script = (
        "import json, sys\n"
        "from neucomp.cli import main\n"
        "for args in json.loads(sys.argv[1]):\n"
        "    try:\n"
        "        main(args)\n"
        "    except SystemExit as e:\n"
        "        assert not e.code, e.code\n"
        "    import torch\n"
        "    print(torch.get_num_threads())\n"
    )
    env = {k: v for k, v in cli_env.items() if k not in ("OMP_NUM_THREADS", "MKL_NUM_THREADS")}
    run = subprocess.run(
        [sys.executable, "-c", script, json.dumps(commands)],
        env=env,
        capture_output=True,
        text=True,
    )
    assert run.returncode == 0, run.stderr
    assert run.stdout.split() == [str(threads or 1)] * 2
