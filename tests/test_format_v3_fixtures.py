"""Files written by format version 3 (the lean chunk heads) decode to the same codes
and the same audio as the version 2 ones (bit for bit, on one machine). Made with the
shipped 24 kHz model and its LM from tests/data/sample.flac:

    neucomp compress tests/data/sample.flac sample_6k.ecdc -b 6 --coder plain
    neucomp compress tests/data/sample.flac sample_3k_lm.ecdc -b 3 --lm

(as `neucomp.compress(audio, rate, bandwidth, lm=...)`), each file's codes saved as
`.codes.npy` and, in `decoded.json`, the sha256 of the file. They hold the codes of the
version 2 fixtures, and decode to the same audio (tests/data/v2/*.decoded.flac, compared
within float rounding: see tests/test_format_v2_fixtures.py). Version 4 writes them now
(tests/test_format_v4_fixtures.py). If the
shipped model changes, these tests are skipped; make new fixtures from the previous
release then.
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
from neucomp.container import Coder, EcdcReader

DATA = Path(__file__).parent / "data" / "v3"
FIXTURES = {"sample_6k": (6.0, False), "sample_3k_lm": (3.0, True)}
EXPECTED = json.loads((DATA / "decoded.json").read_text())
V2 = DATA.parent / "v2"
V2_EXPECTED = json.loads((V2 / "decoded.json").read_text())


@pytest.mark.parametrize("name", FIXTURES)
def test_version_3_fixture_gives_its_codes(name: str) -> None:
    reader = EcdcReader(io.BytesIO((DATA / f"{name}.ecdc").read_bytes()))
    h = reader.header
    assert h.version == 3
    assert (h.coder == Coder.LM) == FIXTURES[name][1]
    shipped_or_skip(h)
    codes, _ = fixture_codes(reader)  # plain packing or the LM, as the header says
    np.testing.assert_array_equal(codes, np.load(DATA / f"{name}.codes.npy"))
    np.testing.assert_array_equal(codes, np.load(DATA.parent / "v2" / f"{name}.codes.npy"))


@pytest.mark.parametrize("name", FIXTURES)
def test_version_3_fixture_decodes_to_the_version_2_audio(name: str) -> None:
    data = (DATA / f"{name}.ecdc").read_bytes()
    assert hashlib.sha256(data).hexdigest() == EXPECTED[name]["ecdc_sha256"]
    shipped_or_skip(EcdcReader(io.BytesIO(data)).header)
    audio, rate = neucomp.decompress(data, postfilter=False)  # as stored: before the postfilter
    assert rate == EXPECTED[name]["sample_rate"] == V2_EXPECTED[name]["sample_rate"]
    assert list(audio.shape) == EXPECTED[name]["shape"]
    assert_decodes_like(audio, V2 / f"{name}.decoded.flac")
    # On one machine the two versions' files decode bit for bit alike: only the heads differ.
    v2_audio, _ = neucomp.decompress((V2 / f"{name}.ecdc").read_bytes(), postfilter=False)
    np.testing.assert_array_equal(audio, v2_audio)
