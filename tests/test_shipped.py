"""The weights in models/ are a consistent, loadable set (not their quality: see `make eval`).

Guards against shipping a retrained codec without retraining its LM, a damaged or
oversized file, or a model without its card.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

MODELS = Path(__file__).resolve().parents[1] / "models"
CODECS = sorted(MODELS.glob("*.pt"))
LMS = sorted(MODELS.glob("*.lm"))
MAX_BYTES = 20 * 2**20  # the shipped-file budget: 20 MiB


def test_models_folder_ships_the_default_codec() -> None:
    assert (MODELS / "neucomp_24khz.pt").is_file()
    assert (MODELS / "README.md").is_file()


@pytest.mark.parametrize("path", CODECS, ids=lambda p: p.name)
def test_codec_loads_with_its_hash_and_fits_the_budget(path: Path) -> None:
    from neucomp.registry import load_model

    assert path.stat().st_size <= MAX_BYTES
    codec = load_model(path)  # verifies the stored sha256
    assert codec.config.name == path.stem
    assert len(codec.weights_hash) == 64


@pytest.mark.parametrize("path", LMS, ids=lambda p: p.name)
def test_lm_belongs_to_the_shipped_codec(path: Path) -> None:
    from neucomp.registry import load_model, read_lm

    assert path.stat().st_size <= MAX_BYTES
    assert path.with_name(path.name + ".md").is_file(), "an LM ships with its card"
    coder = read_lm(path)  # verifies its own hash
    codec = load_model(path.with_suffix(".pt"))
    # its own hash, or a predecessor's with the same codes (a grafted speech decoder)
    assert coder.codec_hash in codec.coder_hashes, "retrained codec: run `make train-lm`"


LEGACY = sorted((MODELS / "legacy").glob("*")) if (MODELS / "legacy").is_dir() else []


@pytest.mark.parametrize(
    "path", [p for p in LEGACY if p.suffix in (".lm", ".fct")], ids=lambda p: p.name
)
def test_kept_coder_files_serve_streams_the_installed_model_still_decodes(path: Path) -> None:
    """models/legacy/ holds the LM and tables of earlier weights whose streams the
    installed model decodes (Codec.predecessor_view): each file is sound, is named after
    the weights it serves, and those weights are among the installed model's plain or
    envelope predecessors."""
    from neucomp.coding.tables import Tables
    from neucomp.registry import legacy_path, load_model, read_lm

    name = path.name.split("-")[0]
    codec = load_model(MODELS / f"{name}.pt")
    served = (
        read_lm(path).codec_hash if path.suffix == ".lm" else Tables.load(path).codec_hash.hex()
    )
    assert served in [*codec.config.plain_predecessors, *codec.config.envelope_predecessors]
    assert legacy_path(name, served, path.suffix) == path
    if path.suffix == ".lm":
        assert path.with_name(path.name + ".md").is_file(), "an LM ships with its card"


@pytest.mark.skipif(not LMS, reason="no LM shipped")
def test_shipped_pair_round_trips_real_audio_with_the_lm(monkeypatch) -> None:
    import soundfile as sf

    import neucomp

    monkeypatch.setenv("NEUCOMP_MODEL_DIR", str(MODELS))
    audio, rate = sf.read(Path(__file__).parent / "data" / "sample.flac", dtype="float32")
    clip = audio[: 2 * rate].T
    plain = neucomp.compress(clip, rate, bandwidth=6.0)
    coded = neucomp.compress(clip, rate, bandwidth=6.0, lm=True)
    assert len(coded) < len(plain)
    out_plain, _ = neucomp.decompress(plain)
    out_lm, out_rate = neucomp.decompress(coded)
    assert out_rate == rate
    np.testing.assert_array_equal(out_lm, out_plain)
