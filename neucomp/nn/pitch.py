"""Frame-wise pitch (f0) estimation: the YIN difference function, computed with FFTs.

Used by the frame codec's harmonic path: the encoder sees each frame's pitch and
periodicity as two extra features, and in training the decoder's f0 head is taught the
pitch of the frames it synthesises. Plain DSP, no weights, so it is deterministic and
costs two FFTs per frame.

YIN (de Cheveigné and Kawahara, 2002): d(τ) = Σ_j (x_j − x_{j+τ})² over a fixed window,
normalised by its running mean (d′), and the first dip below a threshold is the period.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import Tensor


@dataclass(frozen=True)
class PitchConfig:
    sample_rate: int = 24000
    fmin: float = 50.0
    fmax: float = 600.0
    threshold: float = 0.15  # d′ below this opens a dip (YIN's absolute threshold)
    voiced_below: float = 0.3  # a frame whose best d′ is above this is unvoiced
    default_f0: float = 100.0  # f0 given to frames before the first voiced one


def yin(frames: Tensor, cfg: PitchConfig = PitchConfig()) -> tuple[Tensor, Tensor]:
    """frames [..., W] → (f0 in Hz [...], periodicity 1 − d′ at the chosen lag [...]).

    The difference window is W − τ_max samples, so W must exceed sample_rate / fmin.
    """
    w = frames.shape[-1]
    tau_min = int(cfg.sample_rate // cfg.fmax)
    tau_max = int(-(-cfg.sample_rate // cfg.fmin))
    length = w - tau_max
    if length < tau_max // 2:
        raise ValueError(f"frames of {w} samples are too short for fmin {cfg.fmin} Hz")
    x = frames - frames.mean(dim=-1, keepdim=True)
    n = 1 << (w - 1).bit_length()  # ≥ w: the lags 0 … τ_max never wrap around
    head = torch.fft.rfft(x[..., :length], n=n)
    full = torch.fft.rfft(x, n=n)
    r = torch.fft.irfft(head.conj() * full, n=n)[..., : tau_max + 1]
    energy = F.pad(torch.cumsum(x * x, dim=-1), (1, 0))
    e_lag = energy[..., length : length + tau_max + 1] - energy[..., : tau_max + 1]
    d = (energy[..., length : length + 1] + e_lag - 2 * r).clamp_min(0)
    taus = torch.arange(tau_max + 1, device=x.device, dtype=x.dtype)
    running = torch.cumsum(d[..., 1:], dim=-1).clamp_min(1e-12)
    dn = torch.cat([torch.ones_like(d[..., :1]), d[..., 1:] * taus[1:] / running], dim=-1)
    # The first local minimum of d′ below the threshold in [τ_min, τ_max); else the lowest.
    inner = dn[..., tau_min:tau_max]
    left = dn[..., tau_min - 1 : tau_max - 1]
    right = dn[..., tau_min + 1 : tau_max + 1]
    dip = (inner <= left) & (inner <= right) & (inner < cfg.threshold)
    first = torch.argmax(dip.to(torch.uint8), dim=-1)
    lowest = torch.argmin(inner, dim=-1)
    pick = torch.where(dip.any(dim=-1), first, lowest) + tau_min
    at = dn.gather(-1, pick[..., None]).squeeze(-1)
    before = dn.gather(-1, (pick - 1)[..., None]).squeeze(-1)
    after = dn.gather(-1, (pick + 1)[..., None]).squeeze(-1)
    curve = before - 2 * at + after
    shift = torch.where(curve > 1e-9, 0.5 * (before - after) / curve.clamp_min(1e-9), 0.0)
    period = pick.to(x.dtype) + shift.clamp(-0.5, 0.5)
    f0 = cfg.sample_rate / period
    silent = energy[..., -1] < 1e-10 * w
    periodicity = torch.where(silent, 0.0, (1 - at).clamp(0, 1))
    return f0, periodicity


def centred_frames(wav: Tensor, hop: int, size: int) -> Tensor:
    """wav [B, C, T] (T a multiple of hop) → frames [B, C, T / hop, size], frame f centred
    on sample (f + ½)·hop, zero-padded at both ends: the frame decoder's synthesis grid."""
    left = size // 2 - hop // 2
    right = size - hop - left
    return F.pad(wav, (left, right)).unfold(-1, size, hop)


def f0_contour(f0: Tensor, voiced: Tensor, default: float) -> Tensor:
    """f0 [..., F] with the unvoiced frames holding the last voiced value (`default`
    before the first): a continuous contour for a harmonic oscillator to follow."""
    index = torch.arange(f0.shape[-1], device=f0.device).expand_as(f0)
    last = torch.cummax(torch.where(voiced, index, -1), dim=-1).values
    held = f0.gather(-1, last.clamp_min(0))
    return torch.where(last >= 0, held, torch.full_like(f0, default))
