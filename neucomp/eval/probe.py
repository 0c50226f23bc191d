"""Do a model's codes carry the spectrum its decoder fails to make? (EXPERIMENTS E18)

A small non-causal conv net, the *probe*, learns to predict the reference's per-bin log
magnitude (n_fft 1280, hop = one code frame, 0–8 kHz) from the frozen codec's quantized
latent, on speech crops of the training corpus. On dev-eval speech its error is set
beside the decoder's own error on the same STFT frames:

- probe far closer than the decoder: the codes hold what the decoder does not yet make,
  so decoder training (or a bigger decoder) has room;
- probe no closer: the codes are the limit, and only a new encoder can lift quality.

The probe sees ±8 frames of context and regresses log magnitudes (an L1 fit predicts
the median, so it is no sharper than the codes allow); its error on the harmonic
structure (per bin) and on the envelope (the same spectra pooled into 64 mel bands) are
reported apart, each in dB over the reference's active frames.

    python -m neucomp.eval probe data/corpus24 data/deveval --model 24khz [--steps 1500]
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor, nn

N_FFT = 1280
MAX_HZ = 8000.0
FLOOR = 1e-2  # the per-bin loss's floor: ~70 dB under a voice's harmonics at NORM_RMS


class Probe(nn.Module):
    """Latent [B, D, F] → log10 magnitudes [B, bins, F]; residual k=5 convs, ±8 frames."""

    def __init__(self, latent_dim: int, bins: int, width: int = 384, blocks: int = 4) -> None:
        super().__init__()
        self.inp = nn.Conv1d(latent_dim, width, 1)
        self.blocks = nn.ModuleList(nn.Conv1d(width, width, 5, padding=2) for _ in range(blocks))
        self.out = nn.Conv1d(width, bins, 1)

    def forward(self, z: Tensor) -> Tensor:
        h = self.inp(z)
        for conv in self.blocks:
            h = h + conv(F.gelu(h))
        return self.out(F.gelu(h))


def log_spectrum(wav: Tensor, hop: int, bins: int) -> Tensor:
    """[B, 1, T] level-normalised audio → log10 |STFT| [B, bins, T / hop + 1], floored."""
    spec = torch.stft(
        wav[:, 0], N_FFT, hop, window=torch.hann_window(N_FFT), center=True, return_complex=True
    )
    return torch.log10(spec.abs()[:, :bins].clamp_min(FLOOR))


def _levelled(wav: Tensor, rms: float = 0.1) -> Tensor:
    level = wav.pow(2).mean(dim=(1, 2), keepdim=True).sqrt().clamp_min(1e-4)
    return wav * (rms / level)


def _errors(pred: Tensor, ref: Tensor, fb: Tensor, bin_hz: float) -> dict[str, float]:
    """Mean |dB error| per band over the reference's active frames (within 50 dB of its
    loudest), per bin and on the 64-band mel envelope."""
    energy = (10 ** (2 * ref)).sum(1)  # [B, F]
    active = energy > energy.amax(-1, keepdim=True) * 1e-5
    err = (20 * (pred - ref)).abs()  # [B, bins, F]
    low = int(4000 / bin_hz)
    out = {
        "bin 0-4k": float(err[:, :low].mean(1)[active].mean()),
        "bin 4-8k": float(err[:, low:].mean(1)[active].mean()),
    }
    env_p = torch.log10((fb @ 10**pred).clamp_min(1e-6))
    env_r = torch.log10((fb @ 10**ref).clamp_min(1e-6))
    out["mel envelope"] = float((20 * (env_p - env_r)).abs().mean(1)[active].mean())
    return out


def main(argv: list[str] | None = None) -> int:
    import soundfile as sf

    from neucomp.audio.signal import resample, to_mono
    from neucomp.registry import load_model
    from neucomp.train.dataset import AugmentConfig, CropSampler
    from neucomp.train.losses import mel_filterbank

    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("corpus", type=Path)
    ap.add_argument("deveval", type=Path)
    ap.add_argument("--model", default="24khz")
    ap.add_argument("--bandwidth", type=float, default=6.0)
    ap.add_argument("--steps", type=int, default=1500)
    ap.add_argument("--batch", type=int, default=16)
    ap.add_argument("--lr", type=float, default=1e-3)
    ap.add_argument("--clips", type=int, default=20)
    ap.add_argument("--seconds", type=float, default=5.0)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument(
        "--mel-bands",
        type=int,
        default=0,
        help="probe from the reference's own log-mel envelope with this many bands per "
        "frame instead of the codes (an uncoded envelope, for scale)",
    )
    args = ap.parse_args(argv)
    torch.set_num_threads(1)
    torch.manual_seed(args.seed)

    codec = load_model(args.model, cached=False).eval()
    rate, hop = codec.config.sample_rate, codec.hop_length
    n_q = codec.config.n_codebooks_for(args.bandwidth)
    bin_hz = rate / N_FFT
    bins = int(MAX_HZ / bin_hz)
    fb = mel_filterbank(rate, N_FFT, 64, area_norm=False)[:, :bins]
    fb = fb[fb.sum(1) > 0]  # the bands above MAX_HZ would count as zero error

    env_fb = mel_filterbank(rate, N_FFT, max(args.mel_bands, 1), area_norm=False)

    def latent_of(wav: Tensor) -> Tensor:
        with torch.no_grad():
            if args.mel_bands:  # the reference's envelope, one column per code frame
                frames = wav.shape[-1] // hop
                spec = torch.stft(
                    _levelled(wav)[:, 0],
                    N_FFT,
                    hop,
                    window=torch.hann_window(N_FFT),
                    center=True,
                    return_complex=True,
                ).abs()
                return torch.log10((env_fb @ spec).clamp_min(FLOOR))[..., :frames]
            return codec.decoder_input(codec.encode(wav, n_q))

    def target_of(wav: Tensor, frames: int) -> Tensor:
        return log_spectrum(wav, hop, bins)[..., :frames]

    sampler = CropSampler(
        args.corpus,
        rate,
        1.0,
        args.seed,
        AugmentConfig(mix_prob=0.0, target_rms_db=(-23.0, -23.0)),
        shares={"speech": 1.0},
    )
    probe = Probe(args.mel_bands or codec.config.seanet.latent_dim, bins)
    opt = torch.optim.Adam(probe.parameters(), lr=args.lr)
    start = time.time()
    for step in range(1, args.steps + 1):
        x = sampler.batch(args.batch)
        z = latent_of(x)
        target = target_of(_levelled(x), z.shape[-1])
        lr = args.lr * 0.5 * (1 + np.cos(np.pi * step / args.steps))
        for group in opt.param_groups:
            group["lr"] = lr
        loss = F.l1_loss(probe(z), target)
        opt.zero_grad()
        loss.backward()
        opt.step()
        if step % 100 == 0:
            print(
                f"step {step}: L1 {float(loss.detach()):.4f} ({time.time() - start:.0f} s)",
                flush=True,
            )

    probe.eval()
    totals: dict[str, list[dict[str, float]]] = {"probe": [], "decoder": []}
    for path in sorted((args.deveval / "speech").glob("*"))[: args.clips]:
        audio, sr = sf.read(path, always_2d=True)
        audio = resample(to_mono(audio.T)[: int(sr * args.seconds)], sr, rate)
        level = np.sqrt(np.mean(audio.astype(np.float64) ** 2)) + 1e-9
        audio = (audio * (10 ** (-23 / 20) / level)).astype(np.float32)
        wav = codec.pad_to_frames(torch.from_numpy(audio)[None, None])
        z = latent_of(wav)
        with torch.no_grad():
            decoded = codec.decode(codec.encode(wav, n_q))[..., : wav.shape[-1]]
            gain = 0.1 / wav.pow(2).mean().sqrt().clamp_min(1e-4)
            ref = target_of(wav * gain, z.shape[-1])
            totals["probe"].append(_errors(probe(z), ref, fb, bin_hz))
            totals["decoder"].append(
                _errors(target_of(decoded * gain, z.shape[-1]), ref, fb, bin_hz)
            )
    keys = list(totals["probe"][0])
    source = (
        f"{args.mel_bands}-band log-mel" if args.mel_bands else f"{args.bandwidth:g} kbps codes"
    )
    print(f"\n{args.model}, probe from {source}, {len(totals['probe'])} dev-eval speech clips")
    print("| | " + " | ".join(f"{k} (dB)" for k in keys) + " |")
    print("|---|" + "---:|" * len(keys))
    for name, rows in totals.items():
        print(
            f"| {name} | " + " | ".join(f"{np.mean([r[k] for r in rows]):.2f}" for k in keys) + " |"
        )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
