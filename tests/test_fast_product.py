"""The fast coder in the product (issue 14): `--coder plain|fast|lm`, the default coder,
coder 2 in the header, the table file's checks, pipes, batch and `info`.

The tiny random-weight model gets its own models folder here, with tables trained on
its own codes: the session's shared folder (conftest) has no tables, so every other
test sees the default fall back to plain packing, as a model without tables does.
"""

from __future__ import annotations

import io
import json
import os
import shutil
import subprocess
import warnings
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf
from click.testing import CliRunner
from conftest import BIN, DEFAULT_NAME, build_model_file, make_audio, write_audio

import neucomp
from neucomp import BANDWIDTHS
from neucomp.cli import main as cli_main
from neucomp.coding.base import CoderId
from neucomp.container import EcdcReader, EcdcWriter
from neucomp.errors import CorruptDataError, ModelError

NEUCOMP = str(BIN / "neucomp")
CODER_BYTE = 5  # docs/FORMAT.md: header byte 5 is the coder
HASH_SLICE = slice(56, 88)  # the coder hash (the LM's, or the table file's for coder 2)


def _train_tables(model_path: Path, out: Path, codec_hash: str | None = None) -> Path:
    """Tables for the tiny model, from its own codes of a few seconds of test audio."""
    import torch

    from neucomp.coding.tables import train_tables
    from neucomp.registry import load_model

    codec = load_model(model_path, cached=False)
    audio = np.concatenate([make_audio(24000 * 2, seed=s) for s in range(3)], axis=1)
    with torch.inference_mode():
        codes = codec.encode(torch.from_numpy(audio)[None], codec.config.n_codebooks)[0].numpy()
    train_tables(codes, codec_hash or codec.weights_hash, n_ctx=4, n_ctx0=8).save(out)
    return out


@pytest.fixture(scope="session")
def fast_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A models folder with the tiny model and its tables (so the default is fast)."""
    folder = tmp_path_factory.mktemp("fast_models")
    model = build_model_file(folder)
    _train_tables(model, folder / f"{DEFAULT_NAME}.fct")
    return folder


@pytest.fixture(scope="session")
def foreign_tables(tmp_path_factory: pytest.TempPathFactory, fast_dir: Path) -> Path:
    """A valid table file trained for other codec weights (another seed)."""
    folder = tmp_path_factory.mktemp("foreign")
    other = build_model_file(folder, seed=1)
    return _train_tables(other, folder / "other.fct")


@pytest.fixture
def fast_model(fast_dir: Path, monkeypatch: pytest.MonkeyPatch):
    from neucomp import registry

    monkeypatch.setenv("NEUCOMP_MODEL_DIR", str(fast_dir))
    return registry.load_model()


@pytest.fixture
def run(fast_model):
    runner = CliRunner()

    def invoke(*args, input: bytes | None = None):
        return runner.invoke(cli_main, [str(a) for a in args], input=input, catch_exceptions=False)

    return invoke


@pytest.fixture
def env(fast_dir: Path) -> dict[str, str]:
    env = dict(os.environ, NEUCOMP_MODEL_DIR=str(fast_dir))
    env.pop("NEUCOMP_DEBUG", None)
    return env


def one_line_error(result, code: int, pattern: str) -> None:
    lines = result.stderr.strip().splitlines()
    assert result.exit_code == code, result.stderr
    assert len(lines) == 1 and lines[0].startswith("neucomp: error: "), result.stderr
    assert pattern in lines[0], lines[0]
    assert "Traceback" not in result.stderr


def tables_hash(folder: Path) -> bytes:
    from neucomp.coding.tables import Tables

    return Tables.load(folder / f"{DEFAULT_NAME}.fct").hash


def chunk_codes(data: bytes, coder) -> list[np.ndarray]:
    reader = EcdcReader(io.BytesIO(data))
    k = reader.header.num_codebooks
    return [coder.decode(c.payload, k, c.num_frames) for c in reader.iter_chunks()]


def rewrite_payloads(data: bytes, change) -> bytes:
    """The stream with chunk i's payload replaced by change(i, payload), every CRC valid."""
    reader = EcdcReader(io.BytesIO(data))
    chunks = list(reader.iter_chunks())
    out = io.BytesIO()
    writer = EcdcWriter(out, reader.header)
    for i, c in enumerate(chunks):
        writer.write_chunk(c.num_frames, change(i, c.payload), c.gain_db)
    writer.finish(reader.trailer)
    return out.getvalue()


# ---------------------------------------------------------------------------- Python API


@pytest.mark.parametrize("bandwidth", BANDWIDTHS)
def test_api_fast_round_trip_every_bandwidth_odd_length(fast_model, fast_dir, bandwidth):
    from neucomp.coding.packing import PlainCoder
    from neucomp.registry import fast_coder

    x = make_audio(24000 * 11 + 37, 24000)  # two chunks, the second short and odd
    fast = neucomp.compress(x, 24000, bandwidth, coder="fast")
    plain = neucomp.compress(x, 24000, bandwidth, coder="plain")
    assert fast[CODER_BYTE] == 2 and plain[CODER_BYTE] == 0
    assert fast[HASH_SLICE] == tables_hash(fast_dir) and plain[HASH_SLICE] == bytes(32)
    # The same codes, only coded differently: exactly what plain packing holds.
    fc, pc = chunk_codes(fast, fast_coder(fast_model)), chunk_codes(plain, PlainCoder())
    assert len(fc) == len(pc) == 2
    for a, b in zip(fc, pc, strict=True):
        np.testing.assert_array_equal(a, b)
    y_fast, rate = neucomp.decompress(fast)
    y_plain, _ = neucomp.decompress(plain)
    assert rate == 24000 and y_fast.shape == (1, x.shape[1])
    np.testing.assert_array_equal(y_fast, y_plain)


def test_default_is_fast_when_tables_are_installed(fast_model):
    x = make_audio(24000 + 1, 24000)
    default = neucomp.compress(x, 24000)
    assert default[CODER_BYTE] == int(CoderId.FAST) == 2
    assert default == neucomp.compress(x, 24000, coder="fast")
    # The older flag keeps its meaning: lm=False was always plain packing.
    assert neucomp.compress(x, 24000, lm=False) == neucomp.compress(x, 24000, coder="plain")
    with pytest.raises(neucomp.errors.UsageError, match="contradicts"):
        neucomp.compress(x, 24000, coder="fast", lm=True)
    with pytest.raises(neucomp.errors.UsageError, match="unknown coder 'zstd'"):
        neucomp.compress(x, 24000, coder="zstd")


def test_default_is_plain_without_tables(tiny_model):
    x = make_audio(24000 + 1, 24000)
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # silently: no tables is no fault
        default = neucomp.compress(x, 24000)
    assert default[CODER_BYTE] == 0
    assert default == neucomp.compress(x, 24000, coder="plain")
    with pytest.raises(ModelError, match="fast-coder tables for model 'neucomp_24khz' are not"):
        neucomp.compress(x, 24000, coder="fast")


# ------------------------------------------------------------------------------- CLI


@pytest.mark.parametrize("bandwidth", BANDWIDTHS)
def test_cli_fast_round_trip_and_decode_without_flags(run, tmp_path, bandwidth):
    src = write_audio(tmp_path / "a.wav", make_audio(44100 // 3 + 7, 44100, 2), 44100)
    out = tmp_path / "a.ecdc"
    r = run("compress", "-q", "--coder", "fast", "-b", bandwidth, src, out)
    assert r.exit_code == 0, r.stderr
    data = out.read_bytes()
    assert data[CODER_BYTE] == 2
    plain = tmp_path / "p.ecdc"
    assert run("compress", "-q", "--coder", "plain", "-b", bandwidth, src, plain).exit_code == 0
    assert plain.read_bytes()[CODER_BYTE] == 0
    if bandwidth >= 6:  # a few frames of random-weight codes: tables pay off from 8 books
        assert len(data) < plain.stat().st_size
    assert run("decompress", "-q", out, tmp_path / "a.out.wav").exit_code == 0
    assert run("decompress", "-q", plain, tmp_path / "p.out.wav").exit_code == 0
    y, rate = sf.read(str(tmp_path / "a.out.wav"), always_2d=True)
    z, _ = sf.read(str(tmp_path / "p.out.wav"), always_2d=True)
    assert rate == 44100 and y.shape == (44100 // 3 + 7, 2)
    np.testing.assert_array_equal(y, z)


def test_cli_default_writes_coder_2_and_info_shows_it(run, fast_dir, tmp_path):
    src = write_audio(tmp_path / "a.wav", make_audio(24000, 24000), 24000)
    out = tmp_path / "a.ecdc"
    r = run("compress", src, out)
    assert r.exit_code == 0 and "warning" not in r.stderr, r.stderr
    assert out.read_bytes()[CODER_BYTE] == 2
    fields = json.loads(run("info", "--json", out).stdout)
    assert fields["coder"] == "fast" and fields["lm_hash"] is None
    assert fields["tables_hash"] == tables_hash(fast_dir).hex()
    text = run("info", out).stdout.splitlines()
    assert [line.split() for line in text if line.startswith("coder ")] == [["coder", "fast"]]


def test_lm_alias_still_works(run, fast_model, fast_dir, tmp_path, monkeypatch):
    from neucomp import registry
    from neucomp.nn.lm import CodesLM, LMConfig
    from neucomp.train.quantize import quantize_lm

    pytest.importorskip("neucomp.coding.range")
    import torch

    lm_dir = tmp_path / "models"
    shutil.copytree(fast_dir, lm_dir)
    monkeypatch.setenv("NEUCOMP_MODEL_DIR", str(lm_dir))
    torch.manual_seed(0)
    lm = CodesLM(LMConfig(dim=16, layers=1, heads=2, ff=32, window=8))
    lm_int = quantize_lm(lm, [torch.randint(0, 1024, (2, 8, 16))])
    registry.save_lm(lm_int, registry.lm_path(DEFAULT_NAME), fast_model.weights_hash)
    src = write_audio(tmp_path / "a.wav", make_audio(24000 + 5, 24000), 24000)
    assert run("compress", "-q", "-b", 3, "--lm", src, tmp_path / "a.ecdc").exit_code == 0
    r = run("compress", "-q", "-b", 3, "--coder", "lm", src, tmp_path / "b.ecdc")
    assert r.exit_code == 0
    data = (tmp_path / "a.ecdc").read_bytes()
    assert data[CODER_BYTE] == 1 and data == (tmp_path / "b.ecdc").read_bytes()
    assert run("decompress", "-q", tmp_path / "a.ecdc", tmp_path / "a.out.wav").exit_code == 0
    r = run("compress", "--lm", "--coder", "fast", src, tmp_path / "c.ecdc")
    assert r.exit_code == 2 and "contradicts" in r.stderr and "Traceback" not in r.stderr
    assert not (tmp_path / "c.ecdc").exists()


def test_tables_of_another_codec_are_refused(run, fast_dir, foreign_tables, tmp_path, monkeypatch):
    src = write_audio(tmp_path / "a.wav", make_audio(24000, 24000), 24000)
    good = tmp_path / "good.ecdc"
    assert run("compress", "-q", "--coder", "fast", src, good).exit_code == 0
    bad_dir = tmp_path / "models"
    bad_dir.mkdir()
    shutil.copy(fast_dir / f"{DEFAULT_NAME}.pt", bad_dir)
    shutil.copy(foreign_tables, bad_dir / f"{DEFAULT_NAME}.fct")
    monkeypatch.setenv("NEUCOMP_MODEL_DIR", str(bad_dir))
    r = run("compress", "--coder", "fast", src, tmp_path / "x.ecdc")
    one_line_error(r, 5, "tables were trained for codec weights")
    assert not (tmp_path / "x.ecdc").exists()
    # Decoding a fast stream needs the tables that made it.
    r = run("decompress", good, tmp_path / "x.wav")
    one_line_error(r, 5, "tables were trained for codec weights")
    assert not (tmp_path / "x.wav").exists()
    # The default still compresses, with plain packing, and says why.
    r = run("compress", src, tmp_path / "d.ecdc")
    assert r.exit_code == 0
    warning = [line for line in r.stderr.splitlines() if "warning" in line]
    assert len(warning) == 1 and "compressed with plain packing instead" in warning[0]
    assert (tmp_path / "d.ecdc").read_bytes()[CODER_BYTE] == 0


def test_missing_or_different_tables_when_decoding(run, fast_dir, tmp_path, monkeypatch):
    src = write_audio(tmp_path / "a.wav", make_audio(24000, 24000), 24000)
    good = tmp_path / "good.ecdc"
    assert run("compress", "-q", src, good).exit_code == 0
    bare = tmp_path / "bare"
    bare.mkdir()
    shutil.copy(fast_dir / f"{DEFAULT_NAME}.pt", bare)
    monkeypatch.setenv("NEUCOMP_MODEL_DIR", str(bare))
    r = run("decompress", good, tmp_path / "x.wav")
    one_line_error(r, 5, "fast-coder tables for model 'neucomp_24khz' with hash")
    r = run("compress", "--coder", "fast", src, tmp_path / "x.ecdc")
    one_line_error(r, 5, "are not installed")
    # Other tables for the same weights (retrained): a stream names the ones it needs.
    _train_tables(bare / f"{DEFAULT_NAME}.pt", bare / f"{DEFAULT_NAME}.fct")
    data = (bare / f"{DEFAULT_NAME}.fct").read_bytes()
    from neucomp.coding.tables import Tables

    t = Tables.from_bytes(data)
    f0 = t.freqs[1].copy()
    f0[0, 0] += 1
    f0[0, 1] -= 1  # still a valid table, a different file
    Tables(t.codec_hash, (t.freqs[0], f0, *t.freqs[2:]), t.ctx, t.card).save(
        bare / f"{DEFAULT_NAME}.fct"
    )
    r = run("decompress", good, tmp_path / "x.wav")
    one_line_error(r, 5, "coded with different fast-coder tables")


@pytest.mark.parametrize(
    ("how", "message"),
    [
        ("flip", "payload"),
        ("cut", "payload"),
        ("pad", "payload"),
        ("zero", "payload"),
    ],
)
def test_damaged_fast_payload_is_the_clean_error(run, tmp_path, how, message):
    src = write_audio(tmp_path / "a.wav", make_audio(24000 * 11, 24000), 24000)
    out = tmp_path / "a.ecdc"
    assert run("compress", "-q", "--coder", "fast", src, out).exit_code == 0

    def change(i: int, p: bytes) -> bytes:
        if i != 0:
            return p
        if how == "flip":
            return p[:8] + bytes([p[8] ^ 0x40]) + p[9:]
        if how == "cut":
            return p[:-4]
        if how == "pad":
            return p + bytes(4)
        return bytes(len(p))

    bad = tmp_path / "bad.ecdc"
    bad.write_bytes(rewrite_payloads(out.read_bytes(), change))
    r = run("decompress", bad, tmp_path / "x.wav")
    one_line_error(r, 4, message)
    assert "chunk 0" in r.stderr and not (tmp_path / "x.wav").exists()
    with pytest.raises(CorruptDataError):
        neucomp.decompress(bad.read_bytes())
    # --salvage makes the damaged chunk silence and keeps the other.
    r = run("decompress", "--salvage", bad, tmp_path / "s.wav")
    assert r.exit_code == 0 and "warning" in r.stderr
    assert sf.info(str(tmp_path / "s.wav")).frames == 24000 * 11


def test_truncated_fast_file_is_the_clean_error(run, tmp_path):
    src = write_audio(tmp_path / "a.wav", make_audio(24000 * 3, 24000), 24000)
    out = tmp_path / "a.ecdc"
    assert run("compress", "-q", src, out).exit_code == 0
    data = out.read_bytes()
    assert data[CODER_BYTE] == 2
    cut = tmp_path / "cut.ecdc"
    cut.write_bytes(data[: len(data) - 40])
    r = run("decompress", cut, tmp_path / "x.wav")
    assert r.exit_code != 0 and "Traceback" not in r.stderr
    assert len(r.stderr.strip().splitlines()) == 1


# ------------------------------------------------------------------------ pipes, batch


def test_pipes_with_fast(env, tmp_path):
    write_audio(tmp_path / "a.flac", make_audio(16000 + 3, 16000, 2), 16000)
    p = subprocess.run(
        f"{NEUCOMP} compress -q --coder fast - - < a.flac > a.ecdc && "
        f"{NEUCOMP} decompress -q - - < a.ecdc > b.wav && {NEUCOMP} info --json - < a.ecdc",
        shell=True,
        env=env,
        cwd=tmp_path,
        capture_output=True,
    )
    assert p.returncode == 0 and p.stderr == b"", p.stderr.decode()
    assert json.loads(p.stdout)["coder"] == "fast"
    assert (tmp_path / "a.ecdc").read_bytes()[CODER_BYTE] == 2
    y, rate = sf.read(str(tmp_path / "b.wav"), always_2d=True)
    assert rate == 16000 and y.shape == (16003, 2)


@pytest.mark.parametrize("jobs", [1, 2])
def test_batch_with_fast(run, tmp_path, jobs):
    src = tmp_path / "in"
    (src / "sub").mkdir(parents=True)
    write_audio(src / "a.wav", make_audio(24000 + 11, 24000), 24000)
    write_audio(src / "sub" / "b.flac", make_audio(16000, 16000, 2), 16000)
    r = run("compress", "-q", "-j", jobs, "--coder", "fast", src, tmp_path / "out")
    assert r.exit_code == 0, r.stderr
    coded = sorted((tmp_path / "out").rglob("*.ecdc"))
    assert [p.relative_to(tmp_path / "out").as_posix() for p in coded] == [
        "a.ecdc",
        "sub/b.ecdc",
    ]
    assert all(p.read_bytes()[CODER_BYTE] == 2 for p in coded)
    r = run("decompress", "-q", "-j", jobs, tmp_path / "out", tmp_path / "dec")
    assert r.exit_code == 0, r.stderr
    assert sf.info(str(tmp_path / "dec" / "a.wav")).frames == 24011
    assert sf.info(str(tmp_path / "dec" / "sub" / "b.wav")).frames == 16000


@pytest.mark.parametrize("jobs", [1, 2])
def test_batch_default_falls_back_to_plain_once(fast_dir, foreign_tables, env, tmp_path, jobs):
    """Refused tables: a folder is still compressed, with plain packing, and the reason is
    given once for the batch (with --jobs, by the worker that checked the options)."""
    models = tmp_path / "models"
    models.mkdir()
    shutil.copy(fast_dir / f"{DEFAULT_NAME}.pt", models)
    shutil.copy(foreign_tables, models / f"{DEFAULT_NAME}.fct")
    src, out = tmp_path / "in", tmp_path / "out"
    src.mkdir()
    for i in range(3):
        write_audio(src / f"f{i}.wav", make_audio(8000, 16000, seed=i), 16000)
    cmd = [NEUCOMP, "compress", "-q", "-j", str(jobs), str(src), str(out)]
    p = subprocess.run(
        cmd, env=dict(env, NEUCOMP_MODEL_DIR=str(models)), capture_output=True, text=True
    )
    assert p.returncode == 0, p.stderr
    lines = p.stderr.splitlines()
    assert len(lines) == 1 and lines[0].startswith("neucomp: warning: ")
    assert "compressed with plain packing instead" in lines[0]
    coded = sorted(out.glob("*.ecdc"))
    assert len(coded) == 3 and all(f.read_bytes()[CODER_BYTE] == 0 for f in coded)


def test_batch_fast_without_tables_fails_once(run, fast_dir, tmp_path, monkeypatch):
    bare = tmp_path / "bare"
    bare.mkdir()
    shutil.copy(fast_dir / f"{DEFAULT_NAME}.pt", bare)
    monkeypatch.setenv("NEUCOMP_MODEL_DIR", str(bare))
    src = tmp_path / "in"
    src.mkdir()
    write_audio(src / "a.wav", make_audio(8000, 24000), 24000)
    r = run("compress", "--coder", "fast", src, tmp_path / "out")
    one_line_error(r, 5, "are not installed")
    assert run("compress", "-q", src, tmp_path / "out").exit_code == 0  # default: plain
    assert (tmp_path / "out" / "a.ecdc").read_bytes()[CODER_BYTE] == 0


def test_lm_size_reports_the_fast_coder(fast_model, tmp_path, capsys):
    from neucomp.eval import lmsize

    (tmp_path / "speech").mkdir()
    write_audio(tmp_path / "speech" / "a.wav", make_audio(12000, 16000), 16000)
    out = tmp_path / "sizes.json"
    assert lmsize.main([str(tmp_path), "--bandwidth", "6", "--json", str(out)]) == 0
    cell = json.loads(out.read_text())["6"]["speech"]
    ref = lmsize.load_reference(tmp_path / "speech" / "a.wav", lmsize.EVAL_RATE)
    sizes = {c: len(neucomp.compress(ref, lmsize.EVAL_RATE, 6, coder=c)) for c in ("plain", "fast")}
    assert cell == {**sizes, "files": 1}  # no LM installed in this folder: no lm column
    assert f"| 6 | fast | {lmsize.saving(cell, 'fast'):.1f} %" in capsys.readouterr().out
