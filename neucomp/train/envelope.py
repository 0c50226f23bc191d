"""Give a codec a coded spectral envelope (neucomp.nn.envelope, EXPERIMENTS E18).

    python -m neucomp.train add-envelope BASE OUT [--corpus data/corpus24] [--bands 20]

BASE's encoder, RVQ and decoder are kept; the envelope's codebooks are fitted by
k-means on the envelopes of random training crops (every category, with the training
gains and mixes), stage by stage on the residuals. The new model alternates envelope
and learned codebooks, so it has its own codes (and needs its own LM and tables).
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
    frames = []
    for _ in range(batches):
        env, _ = model.envelope.analysis(model.pad_to_frames(sampler.batch(batch_size)))
        frames.append(env.transpose(1, 2).reshape(-1, env.shape[1]))
    data = torch.cat(frames)
    model.envelope.fit(data, iters=iters)
    return data.shape[0]


def add_envelope(
    base: Path,
    out: Path,
    corpus: Path,
    *,
    bands: int = 20,
    n_fft: int = 640,
    batches: int = 200,
    seed: int = 0,
) -> str:
    """A model file with ``base``'s networks and a fitted envelope; returns its hash."""
    from neucomp.registry import load_model, save_model

    old = load_model(base, cached=False)
    config = CodecConfig.from_dict(old.config.to_dict())
    config.envelope_bands, config.envelope_n_fft = bands, n_fft
    config.envelope_codebooks = (config.n_codebooks + 1) // 2
    # it decodes the streams of the model it starts from (and of that one's predecessors)
    # as that model did; their LM and table files go to models/legacy/ (README there)
    config.plain_predecessors = list(
        dict.fromkeys([old.weights_hash, *old.config.predecessors, *old.config.plain_predecessors])
    )
    config.predecessors = []
    torch.manual_seed(seed)
    codec = Codec(config)
    missing, unexpected = codec.load_state_dict(old.state_dict(), strict=False)
    if unexpected or any(not k.startswith("envelope.") for k in missing):
        raise ValueError(f"{base} does not fit the new model: {unexpected or missing}")
    frames = fit_envelope(codec, corpus, batches=batches, seed=seed)
    print(f"envelope codebooks fitted on {frames} frames", flush=True)
    return save_model(codec.eval(), out)
