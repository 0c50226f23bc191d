"""Folder conversion: mirrored trees, skipping done files, failures listed, worker pools."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import soundfile as sf
from click.testing import CliRunner
from conftest import BIN, default_signals, make_audio, write_audio

from neucomp import batch
from neucomp.cli import main


@pytest.fixture
def tree(tmp_path) -> Path:
    """in/a.wav, in/sub/b.flac (stereo 16 kHz), in/sub/deeper/c.ogg, in/broken.wav
    (not audio), in/notes.txt and in/.hidden.wav (both ignored)."""
    root = tmp_path / "in"
    (root / "sub" / "deeper").mkdir(parents=True)
    write_audio(root / "a.wav", make_audio(12000, 24000), 24000)
    write_audio(root / "sub" / "b.flac", make_audio(8000, 16000, channels=2), 16000)
    write_audio(root / "sub" / "deeper" / "c.ogg", make_audio(22050, 44100), 44100)
    (root / "broken.wav").write_bytes(b"not really a wav file" * 30)
    (root / "notes.txt").write_text("ignored")
    write_audio(root / ".hidden.wav", make_audio(100, 8000), 8000)
    return root


def files_under(root: Path) -> list[str]:
    return sorted(str(p.relative_to(root)) for p in root.rglob("*") if p.is_file())


def test_plan_mirrors_the_tree(tree, tmp_path):
    tasks = batch.plan(tree, tmp_path / "out", "compress")
    assert [str(t.src.relative_to(tree)) for t in tasks] == [
        "a.wav", "broken.wav", "sub/b.flac", "sub/deeper/c.ogg",
    ]  # fmt: skip
    assert tasks[2].dst == tmp_path / "out" / "sub" / "b.ecdc"
    assert batch.output_name(Path("x.ecdc"), "decompress", "flac") == "x.flac"


def test_compress_and_decompress_a_folder(tiny_model, tree, tmp_path):
    runner = CliRunner()
    out, back = tmp_path / "out", tmp_path / "back"
    r = runner.invoke(main, ["compress", str(tree), str(out)])
    assert r.exit_code == 1  # one file failed, the others were converted
    assert files_under(out) == ["a.ecdc", "sub/b.ecdc", "sub/deeper/c.ecdc"]
    assert "compressed 3 files (1 failed)" in r.stderr
    assert "broken.wav: cannot read" in r.stderr and "not an audio file" in r.stderr

    # A second run skips what is done, and still reports the bad file.
    again = runner.invoke(main, ["compress", str(tree), str(out)])
    assert again.exit_code == 1 and "compressed 0 files (3 skipped, 1 failed)" in again.stderr

    r = runner.invoke(main, ["decompress", "--format", "flac", str(out), str(back)])
    assert r.exit_code == 0, r.stderr
    assert files_under(back) == ["a.flac", "sub/b.flac", "sub/deeper/c.flac"]
    info = sf.info(str(back / "sub" / "b.flac"))
    assert (info.samplerate, info.channels, info.frames) == (16000, 2, 8000)
    assert "decompressed 3 files" in r.stderr and "ratio" in r.stderr


def test_force_reconverts_and_quiet_prints_only_failures(tiny_model, tree, tmp_path):
    out = tmp_path / "out"
    runner = CliRunner()
    runner.invoke(main, ["compress", "-q", str(tree), str(out)])
    stamp = (out / "a.ecdc").stat().st_mtime_ns
    r = runner.invoke(main, ["compress", "-q", "-f", "-b", "3", str(tree), str(out)])
    assert r.exit_code == 1 and (out / "a.ecdc").stat().st_mtime_ns != stamp
    assert r.stderr.splitlines()[0] == "failed (1):"


def test_clashing_output_names(tiny_model, tmp_path):
    root = tmp_path / "in"
    root.mkdir()
    write_audio(root / "x.wav", make_audio(800, 8000), 8000)
    write_audio(root / "x.flac", make_audio(800, 8000), 8000)
    summary = batch.run_batch(root, tmp_path / "out", "compress", quiet=True)
    assert summary.converted == 1 and len(summary.failures) == 1
    assert "same output name" in summary.failures[0][1]


def test_missing_source_folder_and_bad_output_parent(tiny_model, tmp_path):
    runner = CliRunner()
    r = runner.invoke(main, ["compress", str(tmp_path / "nope"), str(tmp_path / "o")])
    assert r.exit_code == 2  # not a folder, so a single (missing) input file
    (tmp_path / "in").mkdir()
    r = runner.invoke(main, ["compress", str(tmp_path / "in"), str(tmp_path / "a" / "b")])
    assert r.exit_code == 3 and "does not exist" in r.stderr


def test_worker_processes(cli_env, tree, tmp_path):
    """--jobs 2 through the real executable: spawned workers, same results."""
    out = tmp_path / "out"
    p = subprocess.run(
        [str(BIN / "neucomp"), "compress", "--jobs", "2", str(tree), str(out)],
        env=cli_env,
        capture_output=True,
        text=True,
    )
    assert p.returncode == 1, p.stderr
    assert files_under(out) == ["a.ecdc", "sub/b.ecdc", "sub/deeper/c.ecdc"]
    assert "compressed 3 files (1 failed)" in p.stderr and "Traceback" not in p.stderr


def test_worker_batch_checks_options_in_a_worker(cli_env, tree, tmp_path):
    """With --jobs the first worker checks the options: a bad one is still one line,
    before anything is written, and said once."""
    out = tmp_path / "out"
    cmd = [str(BIN / "neucomp"), "compress", "--jobs", "2", "-b", "7", str(tree), str(out)]
    p = subprocess.run(cmd, env=cli_env, capture_output=True, text=True)
    assert p.returncode == 6
    assert p.stderr.startswith("neucomp: error: unsupported bandwidth 7 kbps") and "24" in p.stderr
    assert p.stderr.count("\n") == 1 and not out.exists()


PARENT_PROBE = """
import sys
from neucomp import batch
a = batch.run_batch(sys.argv[1], sys.argv[2], "compress", jobs=2, quiet=True)
b = batch.run_batch(sys.argv[2], sys.argv[3], "decompress", jobs=2, quiet=True)
print(a.converted, b.converted, "torch" in sys.modules)
"""


def test_parent_of_workers_never_imports_torch(cli_env, tree, tmp_path):
    """The workers load torch and the model, each at the same time; a parent that did
    too would add its own start-up in front of theirs (issue 12: --jobs 2 gave 1.3x)."""
    out, back = tmp_path / "out", tmp_path / "back"
    cmd = [sys.executable, "-c", PARENT_PROBE, str(tree), str(out), str(back)]
    p = subprocess.run(cmd, env=cli_env, capture_output=True, text=True)
    assert p.returncode == 0, p.stderr
    assert p.stdout.split() == ["3", "3", "False"]


def test_summary_lines():
    s = batch.Summary("compress", converted=2, skipped=1, seconds=125.0)
    s.input_bytes, s.output_bytes, s.wall = 2_000_000, 20_000, 3.2
    s.failures.append((Path("x.wav"), "boom"))
    assert s.lines() == [
        "compressed 2 files (1 skipped, 1 failed): 2 min 05 s of audio, 2.0 MB → 20.0 kB"
        " (ratio 100.0:1) in 3.2 s",
        "failed (1):",
        "  x.wav: boom",
    ]


@pytest.fixture
def long_tree(tmp_path) -> Path:
    """Four 40-s files: long enough that a batch is still working when a signal comes."""
    root = tmp_path / "long"
    root.mkdir()
    for i in range(4):
        write_audio(root / f"f{i}.wav", make_audio(16000 * 40, 16000, channels=2), 16000)
    return root


def start_batch(cli_env, src: Path, out: Path) -> subprocess.Popen:
    """`neucomp compress --jobs 2`, returned once a worker has its temp output open."""
    proc = subprocess.Popen(
        [str(BIN / "neucomp"), "compress", "-q", "--jobs", "2", str(src), str(out)],
        env=cli_env,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        preexec_fn=default_signals,
    )
    deadline = time.monotonic() + 120
    while not list(out.glob(".*.part")) and time.monotonic() < deadline:
        assert proc.poll() is None, proc.stderr.read().decode()
        time.sleep(0.05)
    assert list(out.glob(".*.part")), "no worker ever started writing"
    return proc


@pytest.mark.parametrize(("sig", "code"), [(signal.SIGTERM, 143), (signal.SIGHUP, 129)])
def test_signal_stops_the_workers_and_leaves_no_temp_file(cli_env, long_tree, tmp_path, sig, code):
    out = tmp_path / "out"
    proc = start_batch(cli_env, long_tree, out)
    proc.send_signal(sig)
    # The pipes reach EOF only when every process holding them (workers, forkserver) is
    # gone: a calling script or pipeline would otherwise hang.
    _, err = proc.communicate(timeout=30)
    assert proc.returncode == code, err.decode()
    assert err.decode() == f"neucomp: terminated by {signal.Signals(sig).name}\n"
    assert [p.name for p in out.rglob(".*")] == []


def test_workers_die_with_a_killed_parent(cli_env, long_tree, tmp_path):
    out = tmp_path / "out"
    proc = start_batch(cli_env, long_tree, out)
    start = time.monotonic()
    proc.kill()
    proc.communicate(timeout=30)  # EOF: the workers and the forkserver are gone too
    assert time.monotonic() - start < 20
    assert [p.name for p in out.rglob(".*")] == []  # the workers still cleaned up


def test_rerun_removes_stale_temp_files_it_owns(tiny_model, tmp_path):
    src, out = tmp_path / "in", tmp_path / "out"
    src.mkdir()
    out.mkdir()
    write_audio(src / "a.wav", make_audio(8000, 8000), 8000)
    write_audio(src / "b.wav", make_audio(8000, 8000), 8000)
    (out / "b.ecdc").write_bytes(b"done before")  # skipped, but its stale temp goes too
    gone = _dead_pid()
    stale = [out / f".a.ecdc.{gone}.abcd1234.part", out / f".b.ecdc.{gone}.abcd1234.part"]
    live = out / f".a.ecdc.{os.getpid()}.efgh5678.part"  # another run still writing
    for part in (*stale, live):
        part.write_bytes(b"partial")
    summary = batch.run_batch(src, out, "compress", quiet=True)
    assert (summary.converted, summary.skipped) == (1, 1)
    assert not any(p.exists() for p in stale) and live.exists()


def _dead_pid() -> int:
    proc = subprocess.Popen(["true"])
    proc.wait()
    return proc.pid


def test_shards_cover_the_tree_exactly_once(tiny_model, tmp_path):
    src, out = tmp_path / "in", tmp_path / "out"
    (src / "sub").mkdir(parents=True)
    names = [f"f{i}.wav" for i in range(8)] + [f"sub/g{i}.wav" for i in range(4)]
    for name in names:
        write_audio(src / name, make_audio(800, 8000), 8000)
    write_audio(src / "f0.flac", make_audio(800, 8000), 8000)  # clashes with f0.wav
    seen: list[str] = []
    clashes = 0
    for k in (1, 2, 3):
        before = set(files_under(out)) if out.exists() else set()
        summary = batch.run_batch(src, out, "compress", quiet=True, shard=(k, 3))
        new = set(files_under(out)) - before
        assert summary.converted == len(new)
        seen += new
        clashes += len(summary.failures)
    expected = sorted(n.replace(".wav", ".ecdc") for n in names)
    assert sorted(seen) == expected and clashes == 1  # each once; the clash in one shard
    again = batch.run_batch(src, out, "compress", quiet=True, shard=(2, 3))
    assert again.converted == 0 and again.skipped > 0  # resuming stays per file


@pytest.mark.parametrize("value", ["0/3", "4/3", "3", "a/b", "1/0"])
def test_bad_shard_is_one_line(tiny_model, tmp_path, value):
    r = CliRunner().invoke(main, ["compress", "--shard", value, str(tmp_path), str(tmp_path)])
    assert r.exit_code == 2 and r.stderr.count("\n") == 1
    assert r.stderr.startswith("neucomp: error: Invalid value for '--shard'")


def test_shard_needs_a_folder(tiny_model, tmp_path):
    src = write_audio(tmp_path / "a.wav", make_audio(800, 8000), 8000)
    r = CliRunner().invoke(main, ["compress", "--shard", "1/2", str(src), str(tmp_path / "a.ecdc")])
    assert r.exit_code == 6 and "--shard splits a folder IN" in r.stderr


def test_batch_reports_warnings(tiny_model, tmp_path):
    src = tmp_path / "in"
    src.mkdir()
    x = make_audio(8000, 8000)
    x[0, 4000] = float("nan")
    write_audio(src / "nan.wav", x, 8000, subtype="FLOAT")
    r = CliRunner().invoke(main, ["compress", "-q", str(src), str(tmp_path / "out")])
    assert r.exit_code == 0
    assert r.stderr == (
        f"warning: {src / 'nan.wav'}: input has 1 non-finite sample (NaN or inf), the first "
        "at 0.500 s: replaced with silence\n"
    )


_SERVER_SCRIPT = """
import multiprocessing, sys
from concurrent.futures import ProcessPoolExecutor
ctx = multiprocessing.get_context("forkserver")
ctx.set_forkserver_preload(sys.argv[1].split(","))
with ProcessPoolExecutor(1, mp_context=ctx) as pool:
    assert pool.submit(abs, -3).result() == 3
"""


@pytest.mark.skipif(
    "forkserver" not in __import__("multiprocessing").get_all_start_methods(),
    reason="no forkserver",
)
@pytest.mark.parametrize("fast_exit", [False, True])
def test_worker_server_leaves_without_interpreter_teardown(tmp_path, fast_exit):
    # An atexit hook preloaded before neucomp.worker_server stands for the ~0.5 s of
    # torch teardown: it runs when the server exits normally, and never with the fast
    # exit. The caller reads stderr to EOF, so it also waits for the server, as a pipe does.
    (tmp_path / "marker.py").write_text(
        "import atexit, os\natexit.register(lambda: open(os.environ['MARK'], 'w').close())\n"
    )
    mark = tmp_path / "torn_down"
    preload = "marker,neucomp.worker_server" if fast_exit else "marker"
    env = {
        **os.environ,
        "MARK": str(mark),
        "PYTHONPATH": os.pathsep.join([str(tmp_path), *sys.path]),
    }
    r = subprocess.run(
        [sys.executable, "-c", _SERVER_SCRIPT, preload], env=env, capture_output=True, timeout=60
    )
    assert r.returncode == 0, r.stderr
    assert mark.exists() != fast_exit


def test_worker_server_module_is_inert_elsewhere():
    from neucomp import worker_server

    assert not worker_server._inside_forkserver()


def test_batch_preloads_the_fast_exit_last():
    assert batch.WORKER_PRELOAD[-1] == "neucomp.worker_server"
