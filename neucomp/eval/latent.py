"""How many dimensions does a model's latent use? (docs/EXPERIMENTS.md E3, E7)

The encoder output of the first dev-eval speech clips (levelled to −23 dBFS, as the
container codes them), centred, and the number of principal components that hold 90 %
and 99 % of its variance. A latent that has collapsed onto a few dimensions cannot carry
more however many codebooks quantise it.

    python -m neucomp.eval latent-dims data/deveval MODEL [MODEL ...] [--clips 6]
"""

from __future__ import annotations

import argparse
from pathlib import Path

import numpy as np
import torch


def latent_dims(latents: np.ndarray, shares: tuple[float, ...] = (0.9, 0.99)) -> list[int]:
    """latents [frames, dims] → for each share, the fewest principal components that
    hold that share of the variance."""
    centred = latents - latents.mean(axis=0)
    power = np.linalg.svd(centred, compute_uv=False) ** 2
    cumulative = np.cumsum(power) / power.sum()
    return [int(np.searchsorted(cumulative, share)) + 1 for share in shares]


def main(argv: list[str] | None = None) -> int:
    import soundfile as sf

    from neucomp.audio.signal import resample, to_mono
    from neucomp.eval.metrics import rms_db
    from neucomp.registry import load_model

    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("deveval", type=Path)
    ap.add_argument("models", nargs="+")
    ap.add_argument("--clips", type=int, default=6)
    ap.add_argument("--seconds", type=float, default=5.0)
    args = ap.parse_args(argv)
    torch.set_num_threads(1)
    for name in args.models:
        model = load_model(name, cached=False)
        rate = model.config.sample_rate
        frames = []
        for path in sorted((args.deveval / "speech").glob("*"))[: args.clips]:
            audio, sr = sf.read(path, always_2d=True)
            audio = resample(to_mono(audio.T)[: int(sr * args.seconds)], sr, rate)
            audio = (audio * 10 ** ((-23 - rms_db(audio)) / 20)).astype(np.float32)
            wav = torch.from_numpy(audio)[None, None].expand(1, model.config.channels, -1)
            with torch.no_grad():
                z, _ = model.encoder(model.pad_to_frames(wav.contiguous()))
            frames.append(z[0].T.numpy())
        d90, d99 = latent_dims(np.concatenate(frames))
        total = frames[0].shape[1]
        print(f"{name}: {d90} dims for 90 % of the variance, {d99} for 99 % (of {total})")
    return 0


if __name__ == "__main__":
    main()
