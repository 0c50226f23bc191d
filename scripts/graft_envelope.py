"""Give a network export the envelope coder of another model with the same config: the
envelope is fixed DSP and an RVQ fitted on corpus envelopes, independent of the networks,
so a training run's newer export can reuse the coder `add-envelope` fitted (10 min for
the 48 kHz model) instead of fitting it again.

    python scripts/graft_envelope.py NETWORKS.pt DONOR.pt OUT.pt
"""

from __future__ import annotations

import argparse


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("networks", help="an inference export without an envelope")
    ap.add_argument("donor", help="a model with the envelope coder to reuse")
    ap.add_argument("out")
    a = ap.parse_args()

    from neucomp.model import Codec, CodecConfig
    from neucomp.registry import load_model, save_model

    new = load_model(a.networks, cached=False)
    donor = load_model(a.donor, cached=False)
    if new.envelope is not None or donor.envelope is None:
        raise SystemExit("need NETWORKS without an envelope and DONOR with one")
    config = CodecConfig.from_dict(donor.config.to_dict())
    config.plain_predecessors = [new.weights_hash]
    ours, theirs = new.config.to_dict(), config.to_dict()
    for key in ("sample_rate", "seanet", "n_codebooks", "codebook_size"):
        if ours.get(key) != theirs.get(key):
            raise SystemExit(f"the two models differ in {key}")
    codec = Codec(config)
    state = dict(new.state_dict())
    state.update({k: v for k, v in donor.state_dict().items() if k.startswith("envelope.")})
    missing, unexpected = codec.load_state_dict(state, strict=False)
    if missing or unexpected:
        raise SystemExit(f"does not fit: {missing or unexpected}")
    print(f"wrote {a.out} (weights {save_model(codec.eval(), a.out)[:12]}…)")


if __name__ == "__main__":
    main()
