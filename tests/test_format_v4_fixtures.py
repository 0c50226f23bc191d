"""Files written by format version 4 (the speech flag in the level byte) hold the codes
of the version 3 ones and, with the postfilter off, decode to the same audio, bit for bit
on one machine; the same input still compresses to the same bytes; and by default their
speech chunks are postfiltered. Made with the shipped 24 kHz model and its LM from
tests/data/sample.flac (speech, so both chunks are flagged):

    neucomp compress tests/data/sample.flac sample_6k.ecdc -b 6 --coder plain
    neucomp compress tests/data/sample.flac sample_3k_lm.ecdc -b 3 --lm

(as `neucomp.compress(audio, rate, bandwidth, lm=...)`), with `decoded.json` holding each
file's sha256, its decoded shape and its chunks' flags. If the shipped model or the
speech detector's weights change, the byte test fails or is skipped; make new fixtures
from the previous release then.
"""

from __future__ import annotations

import hashlib
import io
import json
from pathlib import Path

import numpy as np
import pytest
from conftest import fixture_codes, shipped_or_skip

import neucomp
from neucomp.container import EcdcReader

DATA = Path(__file__).parent / "data" / "v4"
V3 = DATA.parent / "v3"
SAMPLE = DATA.parent / "sample.flac"
FIXTURES = {"sample_6k": (6.0, False), "sample_3k_lm": (3.0, True)}
EXPECTED = json.loads((DATA / "decoded.json").read_text())


@pytest.mark.parametrize("name", FIXTURES)
def test_version_4_fixture_holds_the_version_3_codes_and_its_flags(name: str) -> None:
    data = (DATA / f"{name}.ecdc").read_bytes()
    assert hashlib.sha256(data).hexdigest() == EXPECTED[name]["ecdc_sha256"]
    reader = EcdcReader(io.BytesIO(data))
    assert reader.header.version == 4
    shipped_or_skip(reader.header)
    codes, _ = fixture_codes(reader)
    np.testing.assert_array_equal(codes, np.load(V3 / f"{name}.codes.npy"))
    flags = [c.speech for c in EcdcReader(io.BytesIO(data)).iter_chunks()]
    assert flags == EXPECTED[name]["speech"] == [True, True]
    # same length as version 3: the flag costs no byte
    assert len(data) == len((V3 / f"{name}.ecdc").read_bytes())


@pytest.mark.parametrize("name", FIXTURES)
def test_version_4_fixture_decodes_like_version_3_and_postfilters_its_speech(name: str) -> None:
    data = (DATA / f"{name}.ecdc").read_bytes()
    shipped_or_skip(EcdcReader(io.BytesIO(data)).header)
    # the general decoder (a model's speech decoder, if any, would take the flagged chunks)
    plain, rate = neucomp.decompress(data, postfilter=False, speech_decoder=False)
    assert rate == EXPECTED[name]["sample_rate"] and list(plain.shape) == EXPECTED[name]["shape"]
    v3_audio, _ = neucomp.decompress((V3 / f"{name}.ecdc").read_bytes(), postfilter=False)
    np.testing.assert_array_equal(plain, v3_audio)
    default, _ = neucomp.decompress(data)  # both chunks flagged: the postfilter throughout
    forced = neucomp.decompress(data, postfilter=True)[0]
    np.testing.assert_allclose(default, forced, atol=1e-6)
    assert not np.allclose(default, plain, atol=1e-3)
    # version 3 files have no flags: their default is the decoder's own output
    np.testing.assert_array_equal(
        neucomp.decompress((V3 / f"{name}.ecdc").read_bytes())[0], v3_audio
    )


@pytest.mark.parametrize("name", FIXTURES)
def test_sample_still_compresses_to_the_fixture_bytes(name: str) -> None:
    import soundfile as sf

    expected = (DATA / f"{name}.ecdc").read_bytes()
    shipped_or_skip(EcdcReader(io.BytesIO(expected)).header, made_by=True)
    audio, rate = sf.read(SAMPLE, dtype="float32", always_2d=True)
    bandwidth, lm = FIXTURES[name]
    assert neucomp.compress(audio.T, rate, bandwidth, lm=lm) == expected
