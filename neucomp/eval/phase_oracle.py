"""What PESQ could a frame decoder reach, given the reference's own values?

Each variant builds the decoder's STFT frames (n_fft 1280, hop 320, the frame decoder's
grid) from the reference: its true magnitude or a cepstrally smoothed envelope, with
random phase or the phase of a harmonic oscillator at the reference's YIN pitch. The
ceiling each reaches says what the decoder's output must contain (docs/EXPERIMENTS.md E6).

    python -m neucomp.eval phase-oracle data/deveval [--clips 6] [--seconds 5]

With ``--model FILE`` (a model file, e.g. a run's exported ``neucomp_24khz.pt``; a
waveform decoder's output is analysed on the same grid) it scores that codec at
``--bandwidth`` the same way, and splits its error: its magnitude with the reference's
phase, and the reference's magnitude with its phase, say which of the two limits it; a
harmonic decoder is also run at the reference's pitch instead of its own, which says
what exact pitch would be worth.
"""

from __future__ import annotations

import argparse
import math
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

from neucomp.eval.metrics import rms_db, speech_scores
from neucomp.nn.framedecoder import FrameDecoder, FrameDecoderConfig, harmonic_frames
from neucomp.nn.pitch import centred_frames, f0_contour, yin


def _smooth(mag: torch.Tensor, coefficients: int = 30) -> torch.Tensor:
    """Cepstral smoothing of each frame's log magnitude [N, bins, F]."""
    cep = torch.fft.irfft(torch.log(mag + 1e-7), dim=1)
    cep[:, coefficients:-coefficients] = 0
    return torch.exp(torch.fft.rfft(cep, dim=1).real)


def _band_pool(x: torch.Tensor, op, width: int = 41) -> torch.Tensor:
    n, bins, f = x.shape
    flat = x.transpose(1, 2).reshape(-1, 1, bins)
    return op(flat, width, 1, width // 2).reshape(n, f, bins).transpose(1, 2)


def analyse(wav: torch.Tensor, cfg: FrameDecoderConfig) -> tuple[torch.Tensor, torch.Tensor]:
    """wav [1, 1, T] → its frames on the decoder grid [1, F, n_fft] (frame f centred
    where the decoder centres it) and their Hann-windowed spectra [1, bins, F]."""
    frames = centred_frames(wav, cfg.hop, cfg.n_fft)[0]
    window = torch.hann_window(cfg.n_fft, dtype=frames.dtype)
    return frames, torch.fft.rfft(frames * window, dim=-1).transpose(1, 2)


def variants(wav: torch.Tensor, decoder: FrameDecoder) -> dict[str, torch.Tensor]:
    """wav [1, 1, T] → {name: STFT frames [1, bins, F]} (the first is the reference)."""
    cfg = decoder.cfg
    frames, spec = analyse(wav, cfg)
    mag = spec.abs()
    f0, periodicity = yin(frames)
    voiced = (periodicity > 0.7).float()[:, None, :]
    osc, _ = harmonic_frames(f0_contour(f0, periodicity > 0.7, 100.0), torch.zeros(1), cfg)
    osc_phase = torch.exp(1j * torch.angle(osc))
    rand = torch.exp(2j * math.pi * torch.rand_like(mag))
    comb = osc / _band_pool(osc.abs(), F.max_pool1d).clamp_min(1e-4)
    comb = comb / _band_pool(comb.abs() ** 2, F.avg_pool1d).clamp_min(1e-4).sqrt()
    env = _smooth(mag)
    noise = rand * (1 - voiced)
    return {
        "the reference's STFT, resynthesised": spec,
        "true magnitude, oscillator phase in voiced frames": mag * (osc_phase * voiced + noise),
        "true magnitude, oscillator phase everywhere": mag * osc_phase,
        "true magnitude, random phase": mag * rand,
        "smoothed envelope x harmonic comb (voiced), noise": env * (comb * voiced + noise),
        "smoothed envelope, random phase": env * rand,
    }


def model_variants(wav: torch.Tensor, codec, bandwidth: float) -> dict[str, torch.Tensor]:
    """wav [1, 1, T] → {name: STFT frames [1, bins, F]} of a frame codec's own output and
    its two halves crossed with the reference's (decoder grid, like `variants`)."""
    dec = codec.decoder
    cfg = getattr(dec, "cfg", FrameDecoderConfig())
    ref = analyse(wav, cfg)[1]
    with torch.no_grad():
        codes = codec.encode(wav, codec.config.n_codebooks_for(bandwidth))
        if not hasattr(dec, "spectrum"):  # a waveform decoder: its output, analysed
            decoded = codec.decode(codes)[..., : wav.shape[-1]]
            return _crossed({"model": analyse(decoded, cfg)[1]}, ref)
        latent = codec.quantizer.decode(codes)
        own, _ = dec.spectrum(latent)
        out = {"model": own[:, 0]}
        if cfg.harmonic:
            f0, _ = codec._reference_pitch(wav)
            out["model at the reference's pitch"] = dec.spectrum(latent, teacher_f0=f0)[0][:, 0]
    return _crossed(out, ref)


def _crossed(out: dict[str, torch.Tensor], ref: torch.Tensor) -> dict[str, torch.Tensor]:
    own = out["model"][..., : ref.shape[-1]]
    ref = ref[..., : own.shape[-1]]
    out["model magnitude, reference phase"] = own.abs() * torch.exp(1j * torch.angle(ref))
    out["reference magnitude, model phase"] = ref.abs() * torch.exp(1j * torch.angle(own))
    return out


def main(argv: list[str] | None = None) -> int:
    import soundfile as sf

    from neucomp.audio.signal import resample, to_mono

    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("deveval", type=Path)
    ap.add_argument("--clips", type=int, default=6)
    ap.add_argument("--seconds", type=float, default=5.0)
    ap.add_argument("--model", type=Path, help="a frame codec's model file: score it too")
    ap.add_argument("--bandwidth", type=float, default=6.0)
    args = ap.parse_args(argv)
    torch.set_num_threads(1)
    torch.manual_seed(0)
    decoder = FrameDecoder(FrameDecoderConfig(harmonic=True))
    codec = None
    if args.model is not None:
        from neucomp.registry import load_model

        codec = load_model(args.model)
        if hasattr(codec.decoder, "spectrum"):  # else the default grid, which is the same
            decoder = codec.decoder
    scores: dict[str, list[float]] = {}
    for path in sorted((args.deveval / "speech").glob("*"))[: args.clips]:
        audio, rate = sf.read(path, always_2d=True)
        audio = to_mono(audio.T)[: int(rate * args.seconds)]
        audio = resample(audio, rate, 24000).astype(np.float32)
        audio = audio[: len(audio) // 320 * 320]
        wav = torch.tensor(audio * 10 ** ((-23 - rms_db(audio)) / 20))[None, None]
        ref = wav[0, 0].numpy()
        found = variants(wav, decoder)
        if codec is not None:
            found = {**model_variants(wav, codec, args.bandwidth), **found}
        for name, spec in found.items():
            out = decoder.overlap_add(spec)[0].numpy()
            scores.setdefault(name, []).append(speech_scores(ref, out, 24000)["pesq"])
    for name, values in scores.items():
        print(f"{name:55s} PESQ {np.mean(values):.2f}")
    return 0


if __name__ == "__main__":
    main()
