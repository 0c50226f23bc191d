"""The 48 kHz model's own entropy coders, made by the real training commands.

`python -m neucomp.train lm --config configs/lm48.json` and `python -m neucomp.eval.coders
tables --codec 48khz` run here on a tiny stereo corpus against the tiny random-weight
48 kHz model: its `.lm` and `.fct` land beside it, and `--coder lm` / the default fast
coder then code its stereo streams bit-exactly; files of one model are refused for the
other, in one line.
"""

from __future__ import annotations

import io
import json
import shutil
from pathlib import Path

import numpy as np
import pytest
from click.testing import CliRunner
from conftest import HQ_NAME, build_hq_model_file, build_model_file, make_audio, write_audio

import neucomp
from neucomp.cli import main as cli_main
from neucomp.coding.base import CoderId
from neucomp.container import EcdcReader
from neucomp.data.manifest import write_manifest
from neucomp.registry import read_lm

REPO = Path(__file__).resolve().parents[1]
RATE = 48000


def _corpus(root: Path) -> Path:
    """Three short stereo music files (44.1 and 48 kHz) and their manifest; the LM
    trainer holds out every file whose path hashes to 0 mod 20, so one of them does."""
    from neucomp.train.lmcodes import _is_val

    root.mkdir(parents=True)
    names = [f"track{i}.flac" for i in range(100)]
    held_out = next(n for n in names if _is_val(n))
    chosen = [n for n in names if not _is_val(n)][:2] + [held_out]
    rows = []
    for i, (name, rate) in enumerate(zip(chosen, [48000, 44100, 48000], strict=True)):
        write_audio(root / name, make_audio(int(1.5 * rate), rate, 2, seed=i), rate)
        rows.append(
            {
                "path": name,
                "package": f"pkg{i}",
                "category": "music",
                "duration_s": 1.5,
                "bandwidth_hz": 20000.0,
                "orig_rate": rate,
                "orig_channels": 2,
                "language": "",
            }
        )
    write_manifest(root / "manifest.tsv", rows)
    return root / "manifest.tsv"


@pytest.fixture(scope="module")
def coders_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Both tiny models, the 48 kHz one with an LM and tables from the real commands."""
    pytest.importorskip("neucomp.coding.range")
    from neucomp.eval import coders
    from neucomp.train import lm as train_lm

    tmp = tmp_path_factory.mktemp("hq_coders")
    folder = tmp / "models"
    folder.mkdir()
    build_model_file(folder)
    build_hq_model_file(folder)
    manifest = _corpus(tmp / "corpus")
    # configs/lm48.json, shrunk to seconds of work.
    cfg = json.loads((REPO / "configs" / "lm48.json").read_text())
    cfg.update(
        train_crops=4,
        val_crops=2,
        crop_s=0.5,
        steps=2,
        batch=2,
        warmup=1,
        calib_crops=2,
        deveval=str(tmp / "no-deveval.tsv"),
        model={"dim": 16, "layers": 1, "heads": 2, "ff": 32, "window": 8, "intra": True},
    )
    config = tmp / "lm48.json"
    config.write_text(json.dumps(cfg))
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("NEUCOMP_MODEL_DIR", str(folder))
        mp.setattr(coders, "RUN_DIR", tmp / "fastcoder")
        argv = ["--config", str(config), "--codec", "48khz", "--corpus", str(manifest)]
        train_lm.main([*argv, "--run-dir", str(tmp / "lm48")])
        coders.main(["tables", "--codec", "48khz", "--corpus", str(manifest), "--contexts", "8:4"])
    return folder


@pytest.fixture
def installed(coders_dir: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    monkeypatch.setenv("NEUCOMP_MODEL_DIR", str(coders_dir))
    return coders_dir


def _header(data: bytes):
    return EcdcReader(io.BytesIO(data)).header


def test_the_commands_make_files_for_the_48khz_model(installed: Path) -> None:
    from neucomp.coding.tables import Tables
    from neucomp.registry import load_model

    model = load_model(HQ_NAME)
    assert read_lm(installed / f"{HQ_NAME}.lm").codec_hash == model.weights_hash
    tables = Tables.load(installed / f"{HQ_NAME}.fct")
    assert tables.codec_hash.hex() == model.weights_hash
    card = (installed / f"{HQ_NAME}.lm.md").read_text()
    assert f"code LM for `{HQ_NAME}`" in card
    assert "| 8 | 6 |" in card  # 8 codebooks are 6 kbps at 75 frames/s
    # The 24 kHz model got none: its coders stay its own.
    assert not (installed / "neucomp_24khz.lm").exists()


@pytest.mark.parametrize("bandwidth", [3.0, 6.0, 12.0, 24.0])
def test_lm_and_fast_coder_are_bit_exact_on_stereo(installed: Path, bandwidth: float) -> None:
    x = make_audio(RATE // 2 + 17, RATE, 2)
    plain = neucomp.compress(x, RATE, bandwidth, model="48khz", coder="plain")
    fast = neucomp.compress(x, RATE, bandwidth, model="48khz")  # the default: its tables
    lm = neucomp.compress(x, RATE, bandwidth, model="48khz", coder="lm")
    assert (_header(fast).coder, _header(lm).coder) == (CoderId.FAST, CoderId.LM)
    reference, rate = neucomp.decompress(plain)
    assert rate == RATE and reference.shape == x.shape
    for data in (fast, lm):
        assert _header(data).model_name == HQ_NAME
        np.testing.assert_array_equal(neucomp.decompress(data)[0], reference)


def test_info_names_the_model_and_its_coder(installed: Path, tmp_path: Path) -> None:
    song = write_audio(tmp_path / "song.flac", make_audio(RATE // 4, RATE, 2), RATE)
    out = tmp_path / "song.ecdc"
    runner = CliRunner()
    assert (
        runner.invoke(cli_main, ["compress", "-q", "--hq", "--lm", str(song), str(out)]).exit_code
        == 0
    )
    r = runner.invoke(cli_main, ["info", "--json", str(out)])
    fields = json.loads(r.stdout)
    assert fields["model_name"] == HQ_NAME and fields["coder"] == "lm"
    assert (fields["model_sample_rate"], fields["model_channels"]) == (48000, 2)
    assert fields["lm_hash"] == read_lm(installed / f"{HQ_NAME}.lm").hash.hex()
    r = runner.invoke(cli_main, ["info", str(out)])
    table = dict(line.split(None, 1) for line in r.stdout.splitlines())
    assert table["model_name"] == HQ_NAME and table["model_channels"] == "2"


def _swapped(src: Path, dst: Path, suffix: str) -> None:
    """A models folder where each model has the other's `suffix` file."""
    shutil.copytree(src, dst)
    (dst / f"{HQ_NAME}{suffix}").rename(dst / f"neucomp_24khz{suffix}")


@pytest.mark.parametrize(("suffix", "coder"), [(".lm", "lm"), (".fct", "fast")])
def test_a_coder_file_of_the_other_model_is_refused(
    coders_dir: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, suffix: str, coder: str
) -> None:
    folder = tmp_path / "models"
    _swapped(coders_dir, folder, suffix)
    monkeypatch.setenv("NEUCOMP_MODEL_DIR", str(folder))
    song = write_audio(tmp_path / "song.wav", make_audio(RATE // 4, RATE, 2), RATE)
    runner = CliRunner()
    r = runner.invoke(cli_main, ["compress", "--coder", coder, str(song), str(tmp_path / "a.ecdc")])
    lines = r.stderr.strip().splitlines()
    assert r.exit_code == 5 and len(lines) == 1 and lines[0].startswith("neucomp: error: ")
    assert f"neucomp_24khz{suffix}" in lines[0] and "trained for codec weights" in lines[0]
    # The 48 kHz model, now without its file: one line naming what is missing.
    r = runner.invoke(
        cli_main, ["compress", "--hq", "--coder", coder, str(song), str(tmp_path / "b.ecdc")]
    )
    assert r.exit_code == 5 and f"for model '{HQ_NAME}'" in r.stderr
    assert "is not installed" in r.stderr or "are not installed" in r.stderr
    assert len(r.stderr.strip().splitlines()) == 1
    if coder == "fast":  # the default coder then falls back: silently for the 48 kHz
        r = runner.invoke(cli_main, ["compress", "--hq", str(song), str(tmp_path / "c.ecdc")])
        assert r.exit_code == 0 and "warning" not in r.stderr
        assert _header((tmp_path / "c.ecdc").read_bytes()).coder == CoderId.PLAIN
        # … and with a warning for the 24 kHz model, whose table file is the wrong one.
        r = runner.invoke(cli_main, ["compress", str(song), str(tmp_path / "d.ecdc")])
        assert r.exit_code == 0 and "neucomp: warning:" in r.stderr and "plain" in r.stderr


def test_a_stream_coded_with_the_lm_needs_that_lm(
    coders_dir: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("NEUCOMP_MODEL_DIR", str(coders_dir))
    x = make_audio(RATE // 4, RATE, 2)
    data = neucomp.compress(x, RATE, 6.0, model="48khz", coder="lm")
    folder = tmp_path / "models"
    shutil.copytree(coders_dir, folder)
    (folder / f"{HQ_NAME}.lm").unlink()
    monkeypatch.setenv("NEUCOMP_MODEL_DIR", str(folder))
    ecdc = tmp_path / "a.ecdc"
    ecdc.write_bytes(data)
    r = CliRunner().invoke(cli_main, ["decompress", str(ecdc), str(tmp_path / "a.wav")])
    assert r.exit_code == 5 and f"the LM for model '{HQ_NAME}' with hash" in r.stderr
    assert not (tmp_path / "a.wav").exists()
