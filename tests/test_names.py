"""Output names like flac and gzip: the rule (neucomp.names) and the CLI that uses it."""

from __future__ import annotations

import pytest
import soundfile as sf
from click.testing import CliRunner
from conftest import make_audio, write_audio

from neucomp import names
from neucomp.cli import main
from neucomp.errors import UsageError


@pytest.fixture
def run(tiny_model):
    runner = CliRunner()

    def invoke(*args):
        return runner.invoke(main, [str(a) for a in args], catch_exceptions=False)

    return invoke


@pytest.fixture
def three(tmp_path):
    """Three short WAVs in a folder of their own."""
    folder = tmp_path / "in"
    folder.mkdir()
    return [
        write_audio(folder / f"{n}.wav", make_audio(8000 // 4, 8000, seed=i), 8000)
        for i, n in enumerate("abc")
    ]


def test_the_rule(tmp_path):
    (tmp_path / "dir").mkdir()
    d = str(tmp_path / "dir")
    plan = names.plan
    assert plan(["song.flac"], "compress").pairs == [("song.flac", "song.ecdc")]
    assert plan(["x/song"], "compress").pairs == [("x/song", "x/song.ecdc")]
    assert plan(["song.ecdc"], "decompress").pairs == [("song.ecdc", "song.wav")]
    assert plan(["song.ecdc"], "decompress", "flac").pairs == [("song.ecdc", "song.flac")]
    assert plan(["-"], "compress").pairs == [("-", "-")]
    # The last argument is OUT unless it is named like an input.
    assert plan(["a.wav", "b.ecdc"], "compress").pairs == [("a.wav", "b.ecdc")]
    assert plan(["a.wav", "-"], "compress").pairs == [("a.wav", "-")]
    assert plan(["-", "-"], "decompress").pairs == [("-", "-")]
    assert plan(["a.ecdc", "b.flac"], "decompress").pairs == [("a.ecdc", "b.flac")]
    assert plan(["a.wav", "b.WAV", "c.mp3"], "compress").pairs == [
        ("a.wav", "a.ecdc"),
        ("b.WAV", "b.ecdc"),
        ("c.mp3", "c.ecdc"),
    ]
    assert plan(["a.ecdc", "b.ecdc"], "decompress").pairs == [
        ("a.ecdc", "a.wav"),
        ("b.ecdc", "b.wav"),
    ]
    assert plan(["a.wav", "b.flac", d], "compress").pairs == [
        ("a.wav", f"{d}/a.ecdc"),
        ("b.flac", f"{d}/b.ecdc"),
    ]
    assert plan(["a.wav", d], "compress").pairs == [("a.wav", f"{d}/a.ecdc")]
    assert plan([d, "out"], "compress").folders == (d, "out")


@pytest.mark.parametrize(
    ("paths", "mode", "message"),
    [
        ([], "compress", "no input"),
        (["DIR"], "compress", "a folder IN needs a folder OUT"),
        (["a.wav", "b.wav", "x.ecdc"], "compress", "2 inputs need an existing folder as OUT"),
        (["a.wav", "b.wav", "-"], "compress", "2 inputs need an existing folder"),
        (["-", "b.wav"], "compress", "- (stdin) can only be the one input"),
        (["a.wav", "a.flac"], "compress", "would both be written to 'a.ecdc'"),
        (["a.wav", "./a.wav"], "compress", "is given twice"),
        (["a.ecdc", "DIR", "b.ecdc"], "decompress", "is a folder"),
        (["a.wav", "nonesuch.mp3"], "compress", "compress writes .ecdc files, not '.mp3'"),
    ],
)
def test_what_the_rule_refuses(tmp_path, monkeypatch, paths, mode, message):
    monkeypatch.chdir(tmp_path)
    (tmp_path / "DIR").mkdir()
    for name in ("a.wav", "b.wav", "a.flac"):
        (tmp_path / name).touch()
    with pytest.raises(UsageError, match=message.replace("(", r"\(").replace(")", r"\)")):
        names.plan(paths, mode)


def test_outputs_go_beside_their_inputs(run, three):
    r = run("compress", *three)
    assert r.exit_code == 0, r.stderr
    assert len(r.stderr.strip().splitlines()) == 3  # one summary line per file
    ecdcs = [p.with_suffix(".ecdc") for p in three]
    assert all(p.is_file() for p in ecdcs)
    for p in three:
        p.unlink()
    r = run("decompress", "-q", *ecdcs)
    assert r.exit_code == 0 and r.stderr == ""
    assert [sf.info(str(p)).frames for p in three] == [2000, 2000, 2000]
    r = run("decompress", "-q", "--format", "flac", ecdcs[0])
    assert r.exit_code == 0 and sf.info(str(three[0].with_suffix(".flac"))).format == "FLAC"


def test_one_input_beside_itself_and_an_existing_folder_as_out(run, three, tmp_path):
    assert run("compress", "-q", three[0]).exit_code == 0
    assert three[0].with_suffix(".ecdc").is_file()
    out = tmp_path / "out"
    out.mkdir()
    assert run("compress", "-q", *three[1:], out).exit_code == 0
    assert sorted(p.name for p in out.iterdir()) == ["b.ecdc", "c.ecdc"]


def test_several_files_never_overwrite(run, three):
    """An existing output is refused with one line, its file untouched; the other files
    are converted; the exit code says something failed. -f overwrites."""
    taken = three[1].with_suffix(".ecdc")
    taken.write_bytes(b"precious")
    r = run("compress", "-q", *three)
    assert r.exit_code == 1
    assert r.stderr == f"neucomp: error: '{taken}' already exists (use -f to overwrite)\n"
    assert taken.read_bytes() == b"precious"
    assert three[0].with_suffix(".ecdc").is_file() and three[2].with_suffix(".ecdc").is_file()
    wavs_again = [p.with_suffix(".wav") for p in three]
    r = run("decompress", "-q", *[p.with_suffix(".ecdc") for p in (three[0], three[2])])
    assert r.exit_code == 1 and r.stderr.count("already exists") == 2  # the WAVs are there
    assert all(p.is_file() for p in wavs_again)
    r = run("compress", "-q", "-f", *three)
    assert r.exit_code == 0 and taken.read_bytes()[:4] == b"NCDC"


def test_single_file_keeps_its_own_exit_code(run, three):
    three[0].with_suffix(".ecdc").write_bytes(b"x")
    r = run("compress", three[0])
    assert r.exit_code == 3 and "already exists" in r.stderr


def test_format_must_agree_with_an_out_file(run, three, tmp_path):
    ecdc = three[0].with_suffix(".ecdc")
    assert run("compress", "-q", three[0]).exit_code == 0
    r = run("decompress", "--format", "flac", ecdc, tmp_path / "x.wav")
    assert r.exit_code == 6 and "--format flac contradicts OUT" in r.stderr
    r = run("decompress", "--format", "flac", ecdc, "-")
    assert r.exit_code == 6 and "stdout gets WAV" in r.stderr
