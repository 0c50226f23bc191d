"""Files written by the shipped 24 kHz model with its coded envelope (session 15,
weights 93d62865…; still format version 4: no byte of the format changed, the codes are
the model's). Made from tests/data/sample.flac:

    neucomp compress tests/data/sample.flac sample_6k.ecdc -b 6 --coder plain
    neucomp compress tests/data/sample.flac sample_3k_lm.ecdc -b 3 --lm

(as `neucomp.compress(audio, rate, bandwidth, coder=...)`), with the codes in
`*.codes.npy`, the decoding in `*.decoded.flac` (16-bit) and `decoded.json` holding
each file's sha256 and shape. They pin the envelope layout (every other codebook) and
the equaliser: another layout, another envelope or a lost frame of the equaliser's
look-behind fails here. If the shipped model changes, the byte test is skipped and the
new model must still decode these (as a plain predecessor, or by its own weights).
"""

from __future__ import annotations

import hashlib
import io
import json
from pathlib import Path

import numpy as np
import pytest
from conftest import assert_decodes_like, fixture_codes, shipped_or_skip

import neucomp
from neucomp.container import EcdcReader

DATA = Path(__file__).parent / "data" / "v4_envelope"
SAMPLE = DATA.parent / "sample.flac"
FIXTURES = {"sample_6k": (6.0, "plain"), "sample_3k_lm": (3.0, "lm")}
EXPECTED = json.loads((DATA / "decoded.json").read_text()) if DATA.is_dir() else {}


@pytest.mark.parametrize("name", FIXTURES)
def test_envelope_fixture_holds_its_codes_and_decodes_as_stored(name: str) -> None:
    data = (DATA / f"{name}.ecdc").read_bytes()
    assert hashlib.sha256(data).hexdigest() == EXPECTED[name]["ecdc_sha256"]
    reader = EcdcReader(io.BytesIO(data))
    assert reader.header.version == 4
    shipped_or_skip(reader.header)
    codes, _ = fixture_codes(reader)
    np.testing.assert_array_equal(codes, np.load(DATA / f"{name}.codes.npy"))
    audio, rate = neucomp.decompress(data)
    assert rate == EXPECTED[name]["sample_rate"] and list(audio.shape) == EXPECTED[name]["shape"]
    # the stored decoding is 16-bit, so clipped at full scale as every integer output is
    # (the equaliser lets a few peaks of this loud clip past it)
    assert_decodes_like(np.clip(audio, -1.0, 1.0), DATA / f"{name}.decoded.flac")


@pytest.mark.parametrize("name", FIXTURES)
def test_sample_still_compresses_to_the_envelope_fixture_bytes(name: str) -> None:
    import soundfile as sf

    expected = (DATA / f"{name}.ecdc").read_bytes()
    shipped_or_skip(EcdcReader(io.BytesIO(expected)).header, made_by=True)
    audio, rate = sf.read(SAMPLE, dtype="float32", always_2d=True)
    bandwidth, coder = FIXTURES[name]
    assert neucomp.compress(audio.T, rate, bandwidth, coder=coder) == expected
