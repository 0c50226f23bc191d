"""Give a codec a coded spectral envelope (neucomp.nn.envelope, EXPERIMENTS E18).

    python -m neucomp.train add-envelope BASE OUT [--corpus data/corpus24] [--bands 20]

BASE's encoder, RVQ and decoder are kept; the envelope's codebooks are fitted by
k-means on the envelopes of random training crops (every category, with the training
gains and mixes), stage by stage on the residuals (with ``--prediction``, on what a
closed-loop DPCM leaves, E19). The new model interleaves envelope and learned codebooks
(``--layout``), so it has its own codes (and needs its own LM and tables). A BASE that
already has an envelope keeps decoding its streams: its envelope coder is stored in the
new model as an envelope predecessor.
"""

from __future__ import annotations

from pathlib import Path

import torch

from neucomp.model import Codec, CodecConfig
from neucomp.train.dataset import AugmentConfig, CropSampler


@torch.no_grad()
def fit_envelope(
    model: Codec,
    corpus: str | Path,
    *,
    batches: int,
    batch_size: int = 8,
    segment_s: float = 1.0,
    seed: int = 0,
    augment: dict | None = None,
    shares: dict[str, float] | None = None,
    iters: int = 15,
) -> int:
    """k-means ``model``'s envelope codebooks on the envelopes of ``batches`` batches of
    crops drawn from ``corpus`` by a sampler of their own; returns the frames used."""
    if model.envelope is None:
        raise ValueError("the model has no envelope to fit")
    sampler = CropSampler(
        corpus,
        model.config.sample_rate,
        segment_s,
        seed=seed,
        augment=AugmentConfig(**(augment or {})),
        channels=model.config.channels,
        shares=shares or None,
    )
    sequences = []
    for _ in range(batches):
        env, _ = model.envelope.analysis(model.pad_to_frames(sampler.batch(batch_size)))
        # the first frames of a crop see its zero history: not what a stream meets
        sequences.append(env[:, :, model.envelope.analysis.n_fft // model.hop_length :])
    data = torch.cat(sequences)
    model.envelope.fit(data, iters=iters)
    return data.shape[0] * data.shape[2]


def add_envelope(
    base: Path,
    out: Path,
    corpus: Path,
    *,
    bands: int = 20,
    n_fft: int | None = None,
    batches: int = 200,
    seed: int = 0,
    prediction: float = 0.0,
    layout: str = "",
    log_spread: bool = False,
) -> str:
    """A model file with ``base``'s networks and a fitted envelope; returns its hash."""
    from neucomp.nn.envelope import envelope_slots
    from neucomp.registry import load_model, save_model

    old = load_model(base, cached=False)
    config = CodecConfig.from_dict(old.config.to_dict())
    # two hops by default: the equaliser overlap-adds windows of two hops
    config.envelope_bands, config.envelope_n_fft = bands, n_fft or 2 * config.hop_length
    config.envelope_prediction, config.envelope_layout = prediction, layout
    config.envelope_log_spread = log_spread
    config.envelope_codebooks = envelope_slots(config.n_codebooks, layout)[0]
    # It decodes the streams of the model it starts from (and of that one's predecessors)
    # as that model did; their LM and table files go to models/legacy/ (README there).
    # A base without an envelope is a plain predecessor; one with an envelope keeps its
    # envelope coder here, and its own plain and envelope predecessors stay so.
    if old.envelope is None:
        plain = [old.weights_hash, *old.config.predecessors]
        enveloped = {}
    else:
        plain = []
        enveloped = {
            h: {
                "envelope_codebooks": old.config.envelope_codebooks,
                "envelope_n_fft": old.config.envelope_n_fft,
                "envelope_bands": old.config.envelope_bands,
                "envelope_prediction": old.config.envelope_prediction,
                "envelope_layout": old.config.envelope_layout,
                "envelope_log_spread": old.config.envelope_log_spread,
            }
            for h in (old.weights_hash, *old.config.predecessors)
        }
        enveloped.update(old.config.envelope_predecessors)
    config.plain_predecessors = list(dict.fromkeys([*plain, *old.config.plain_predecessors]))
    config.envelope_predecessors = enveloped
    config.predecessors = []
    torch.manual_seed(seed)
    codec = Codec(config)
    state = dict(old.state_dict())
    if old.envelope is not None:  # the old envelope coder becomes a past one
        for key, value in old.envelope.state_dict().items():
            for h in (old.weights_hash, *old.config.predecessors):
                state[f"past_envelopes.{h[:16]}.{key}"] = value
        # the new coder is fitted below; the projection carries over if the bands do
        own = codec.state_dict()
        for key in [k for k in state if k.startswith("envelope.")]:
            if key.startswith(("envelope.quantizer.", "envelope.mean")) or (
                state[key].shape != own[key].shape
            ):
                del state[key]
    missing, unexpected = codec.load_state_dict(state, strict=False)
    # what is fitted below, and a projection that starts afresh (at zero)
    allowed = ("envelope.quantizer.", "envelope.mean", "envelope.to_latent.")
    if old.envelope is None:
        allowed = ("envelope.",)
    if unexpected or any(not k.startswith(allowed) for k in missing):
        raise ValueError(f"{base} does not fit the new model: {unexpected or missing}")
    frames = fit_envelope(codec, corpus, batches=batches, seed=seed)
    print(f"envelope codebooks fitted on {frames} frames", flush=True)
    return save_model(codec.eval(), out)
