"""Files written by neucomp before format version 2 still decode, to the same codes and
audio. The fixtures in tests/data/v1/ were made by the last version-1 release (main at
b52cf49) from tests/data/sample.flac with the shipped 24 kHz model and its LM:

    neucomp compress tests/data/sample.flac sample_1k5.ecdc -b 1.5
    neucomp compress tests/data/sample.flac sample_3k_lm.ecdc -b 3 --lm
    neucomp decompress sample_1k5.ecdc sample_1k5.decoded.flac

with the codes of each saved as `.codes.npy`. If the shipped model changes, its hash no
longer matches theirs and these tests are skipped (new weights cannot decode old codes);
make new fixtures from the previous release then.
"""

from __future__ import annotations

import io
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf
from conftest import fixture_codes, shipped_or_skip

import neucomp
from neucomp.container import EcdcReader

DATA = Path(__file__).parent / "data" / "v1"
FIXTURES = ["sample_1k5", "sample_3k_lm"]


@pytest.mark.parametrize("name", FIXTURES)
def test_version_1_fixture_gives_its_codes(name: str) -> None:
    reader = EcdcReader(io.BytesIO((DATA / f"{name}.ecdc").read_bytes()))
    h = reader.header
    assert h.version == 1
    shipped_or_skip(h)
    codes, gains = fixture_codes(reader)
    assert set(gains) == {0}  # version 1 has no gains
    np.testing.assert_array_equal(codes, np.load(DATA / f"{name}.codes.npy"))


def test_version_1_fixture_decodes_to_the_same_audio() -> None:
    data = (DATA / "sample_1k5.ecdc").read_bytes()
    shipped_or_skip(EcdcReader(io.BytesIO(data)).header)
    audio, rate = neucomp.decompress(data, postfilter=False)  # as stored: before the postfilter
    expected, expected_rate = sf.read(DATA / "sample_1k5.decoded.flac", dtype="float32")
    assert rate == expected_rate == 24000
    assert audio.shape == (1, expected.shape[0])
    # The reference was written as 16-bit FLAC: equal up to that rounding (plus float
    # differences between machines).
    np.testing.assert_allclose(audio[0], expected, atol=3 / 32768)
