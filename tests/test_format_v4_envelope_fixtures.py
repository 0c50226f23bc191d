"""Files written by the shipped 24 kHz model's envelope releases (still format version
4: no byte of the format changed, the codes are the model's), made from
tests/data/sample.flac:

    neucomp compress tests/data/sample.flac sample_6k.ecdc -b 6 --coder plain
    neucomp compress tests/data/sample.flac sample_3k_lm.ecdc -b 3 --lm

(as `neucomp.compress(audio, rate, bandwidth, coder=...)`), with the codes in
`*.codes.npy`, the decoding in `*.decoded.flac` (16-bit) and `decoded.json` holding
each file's sha256 and shape. One folder per release:

- `v4_envelope`: session 15, weights 93d62865…, plain RVQ envelope in every other
  codebook;
- `v4_dpcm`: session 16, the predictive (DPCM) envelope and the `elelelll…` layout.
- `v4_beam`: the same weights, coded by session 17's encoder, which searches the learned
  RVQ with a beam (neucomp.nn.search; its beams are in decoded.json, and the byte test
  sets them again, greedy for the folders before it). Written by
  `python scripts/make_envelope_fixtures.py tests/data/v4_beam`.

They pin the envelope layout, the envelope coder and the equaliser: another layout,
another codebook, a lost prediction state or a lost frame of the equaliser's
look-behind fails here. If the shipped model changes, the byte test is skipped and the
new model must still decode these (as a predecessor, or by its own weights).
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

DATA = Path(__file__).parent / "data"
SAMPLE = DATA / "sample.flac"
FOLDERS = ("v4_envelope", "v4_dpcm", "v4_beam")
FIXTURES = {"sample_6k": (6.0, "plain"), "sample_3k_lm": (3.0, "lm")}
CASES = [(folder, name) for folder in FOLDERS for name in FIXTURES]


def _expected(folder: str) -> dict:
    return json.loads((DATA / folder / "decoded.json").read_text())


@pytest.mark.parametrize(("folder", "name"), CASES)
def test_envelope_fixture_holds_its_codes_and_decodes_as_stored(folder: str, name: str) -> None:
    expected = _expected(folder)[name]
    data = (DATA / folder / f"{name}.ecdc").read_bytes()
    assert hashlib.sha256(data).hexdigest() == expected["ecdc_sha256"]
    reader = EcdcReader(io.BytesIO(data))
    assert reader.header.version == 4
    shipped_or_skip(reader.header)
    codes, _ = fixture_codes(reader)
    np.testing.assert_array_equal(codes, np.load(DATA / folder / f"{name}.codes.npy"))
    audio, rate = neucomp.decompress(data)
    assert rate == expected["sample_rate"] and list(audio.shape) == expected["shape"]
    # the stored decoding is 16-bit, so clipped at full scale as every integer output is
    # (the equaliser lets a few peaks of this loud clip past it)
    assert_decodes_like(np.clip(audio, -1.0, 1.0), DATA / folder / f"{name}.decoded.flac")


@pytest.mark.parametrize(("folder", "name"), CASES)
def test_sample_still_compresses_to_the_envelope_fixture_bytes(
    folder: str, name: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    import soundfile as sf

    from neucomp.registry import load_model

    expected = (DATA / folder / f"{name}.ecdc").read_bytes()
    shipped_or_skip(EcdcReader(io.BytesIO(expected)).header, made_by=True)
    # the encoder's search when the folder was written (before session 17: greedy)
    beams = _expected(folder).get("beams", {"envelope": 1, "learned": 1})
    model = load_model()
    monkeypatch.setattr(model, "envelope_beam", beams["envelope"])
    monkeypatch.setattr(model, "learned_beam", beams["learned"])
    audio, rate = sf.read(SAMPLE, dtype="float32", always_2d=True)
    bandwidth, coder = FIXTURES[name]
    assert neucomp.compress(audio.T, rate, bandwidth, coder=coder) == expected
