"""`make lm-size`: whole-file sizes of --lm against plain packing, per bandwidth/category."""

from __future__ import annotations

import io
import json
from pathlib import Path

import pytest
from conftest import make_audio, write_audio

import neucomp
from neucomp.container import EcdcReader
from neucomp.eval import lmsize


def test_sizes_are_whole_files_summed_per_category(tiny_model, tiny_lm, tmp_path: Path, capsys):
    for category, seconds in (("speech", 0.5), ("music", 0.3)):
        (tmp_path / category).mkdir()
        write_audio(tmp_path / category / "a.wav", make_audio(int(seconds * 16000), 16000), 16000)
    out = tmp_path / "sizes.json"
    assert lmsize.main([str(tmp_path), "--bandwidth", "3", "--json", str(out)]) == 0

    sizes = json.loads(out.read_text())["3"]
    ref = lmsize.load_reference(tmp_path / "speech" / "a.wav", lmsize.EVAL_RATE)
    plain = neucomp.compress(ref, lmsize.EVAL_RATE, bandwidth=3, coder="plain")
    coded = neucomp.compress(ref, lmsize.EVAL_RATE, bandwidth=3, lm=True)
    assert EcdcReader(io.BytesIO(coded)).header.coder == 1  # really the LM path
    assert sizes["speech"] == {"plain": len(plain), "lm": len(coded), "files": 1}
    assert sizes["all"]["files"] == 2
    assert sizes["all"]["plain"] == sizes["speech"]["plain"] + sizes["music"]["plain"]
    assert sizes["all"]["lm"] == sizes["speech"]["lm"] + sizes["music"]["lm"]
    printed = capsys.readouterr().out
    assert f"{lmsize.saving(sizes['all']):.1f} %" in printed


def test_saving_is_relative_to_plain() -> None:
    assert lmsize.saving({"plain": 200, "lm": 150}) == pytest.approx(25.0)
