"""Write a folder of format fixtures for tests/test_format_v4_envelope_fixtures.py with the
installed 24 kHz model: tests/data/sample.flac compressed at 6 kbps (plain packing) and
3 kbps (the LM), their codes, their decodings (16-bit FLAC) and decoded.json (sha256,
shape, and the encoder's beams, which the byte test sets again).

    python scripts/make_envelope_fixtures.py tests/data/v4_beam
"""

from __future__ import annotations

import argparse
import hashlib
import io
import json
from pathlib import Path

import numpy as np

FIXTURES = {"sample_6k": (6.0, "plain"), "sample_3k_lm": (3.0, "lm")}


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("out")
    a = ap.parse_args()

    import soundfile as sf
    import torch  # noqa: F401

    import neucomp
    from neucomp import registry
    from neucomp.container import EcdcReader

    registry.set_threads(1)
    model = registry.load_model()
    out = Path(a.out)
    out.mkdir(parents=True, exist_ok=True)
    sample = Path(__file__).resolve().parent.parent / "tests" / "data" / "sample.flac"
    audio, rate = sf.read(sample, dtype="float32", always_2d=True)
    meta: dict = {"beams": {"envelope": model.envelope_beam, "learned": model.learned_beam}}
    for name, (bandwidth, coder) in FIXTURES.items():
        data = neucomp.compress(audio.T, rate, bandwidth, coder=coder)
        (out / f"{name}.ecdc").write_bytes(data)
        reader = EcdcReader(io.BytesIO(data))
        h = reader.header
        chunk_coder = registry.coder_for(h, registry.model_for(h, None))
        codes = np.concatenate(
            [
                np.asarray(chunk_coder.decode(c.payload, h.num_codebooks, c.num_frames))
                for c in reader.iter_chunks()
            ],
            axis=1,
        )
        np.save(out / f"{name}.codes.npy", codes)
        decoded, out_rate = neucomp.decompress(data)
        sf.write(
            out / f"{name}.decoded.flac", np.clip(decoded, -1, 1).T, out_rate, subtype="PCM_16"
        )
        meta[name] = {
            "ecdc_sha256": hashlib.sha256(data).hexdigest(),
            "sample_rate": out_rate,
            "shape": list(decoded.shape),
        }
    (out / "decoded.json").write_text(json.dumps(meta, indent=2) + "\n")


if __name__ == "__main__":
    main()
