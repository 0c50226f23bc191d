"""A frame-rate decoder: causal ConvNeXt blocks at the latent rate, then an inverse STFT.

Instead of upsampling 320× with transposed convolutions (SEANet), every layer runs at
75 frames/s and the last one predicts one STFT frame (log magnitude and phase) per
latent frame; an inverse STFT with overlap-add turns the frames into audio, in the
manner of Vocos (Siuzdak, 2023). Matrix products at the frame rate are cheap on a CPU,
and the spectral head cannot produce the periodic artefacts of transposed convs.

Timing: frame f's synthesis window (n_fft = 4 hops, Hann) is centred on the middle of
its own hop of output, so output sample t depends on latent frames up to two ahead of
its own: the decoder has a look-ahead of `lookahead_frames` = 2 frames.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import Tensor, nn


@dataclass
class FrameDecoderConfig:
    latent_dim: int = 128
    dim: int = 256
    layers: int = 8
    ff_mult: int = 3
    kernel_size: int = 7
    hop: int = 320
    channels: int = 1  # audio channels
    max_log_mag: float = 6.0  # exp(6) ≈ 400: bounds the predicted magnitude

    @property
    def n_fft(self) -> int:
        return 4 * self.hop

    @property
    def lookahead_frames(self) -> int:
        return 2


class CausalDepthwiseConv(nn.Module):
    """Per-channel conv over time, padded on the left (no look-ahead)."""

    def __init__(self, dim: int, kernel: int) -> None:
        super().__init__()
        self.pad = kernel - 1
        self.conv = nn.Conv1d(dim, dim, kernel, groups=dim)

    def forward(self, x: Tensor) -> Tensor:
        return self.conv(F.pad(x, (self.pad, 0)))


class ConvNeXtBlock(nn.Module):
    """Depthwise conv → LayerNorm → pointwise MLP (GELU) → layer scale, plus the input."""

    def __init__(self, dim: int, kernel: int, ff_mult: int, layer_scale: float) -> None:
        super().__init__()
        self.dwconv = CausalDepthwiseConv(dim, kernel)
        self.norm = nn.LayerNorm(dim)
        self.ff1 = nn.Linear(dim, ff_mult * dim)
        self.ff2 = nn.Linear(ff_mult * dim, dim)
        self.gamma = nn.Parameter(torch.full((dim,), layer_scale))

    def forward(self, x: Tensor) -> Tensor:  # x [B, D, F]
        y = self.dwconv(x).transpose(1, 2)
        y = self.ff2(F.gelu(self.ff1(self.norm(y))))
        return x + (self.gamma * y).transpose(1, 2)


class FrameDecoder(nn.Module):
    """Latent [B, latent_dim, F] → audio [B, channels, F * hop]."""

    def __init__(self, cfg: FrameDecoderConfig) -> None:
        super().__init__()
        self.cfg = cfg
        self.embed = nn.Conv1d(cfg.latent_dim, cfg.dim, 1)
        self.blocks = nn.ModuleList(
            ConvNeXtBlock(cfg.dim, cfg.kernel_size, cfg.ff_mult, 1.0 / cfg.layers)
            for _ in range(cfg.layers)
        )
        self.norm = nn.LayerNorm(cfg.dim)
        n_bins = cfg.n_fft // 2 + 1
        self.head = nn.Linear(cfg.dim, cfg.channels * 2 * n_bins)
        self.register_buffer("window", torch.hann_window(cfg.n_fft), persistent=False)

    def spectrum(self, latent: Tensor) -> Tensor:
        """latent [B, D, F] → complex STFT frames [B, channels, n_bins, F]."""
        x = self.embed(latent)
        for block in self.blocks:
            x = block(x)
        h = self.head(self.norm(x.transpose(1, 2)))  # [B, F, channels * 2 * bins]
        b, f, _ = h.shape
        h = h.reshape(b, f, self.cfg.channels, 2, -1).permute(0, 2, 3, 4, 1)
        mag = torch.exp(h[:, :, 0].clamp(max=self.cfg.max_log_mag))
        phase = h[:, :, 1]
        return torch.polar(mag, phase)

    def forward(self, latent: Tensor, state: None = None) -> tuple[Tensor, None]:
        """Whole-signal decoding (the SEANet decoder's call signature; no state)."""
        spec = self.spectrum(latent)
        b, c, _, f = spec.shape
        return self.overlap_add(spec.reshape(b * c, -1, f)).reshape(b, c, -1), None

    def overlap_add(self, spec: Tensor) -> Tensor:
        """[N, n_bins, F] → [N, F * hop]: windowed inverse FFT frames, overlap-added,
        divided by the summed squared window, frame f centred on output (f + ½)·hop."""
        n_fft, hop = self.cfg.n_fft, self.cfg.hop
        n, _, f = spec.shape
        frames = torch.fft.irfft(spec, n=n_fft, dim=1) * self.window[:, None]  # [N, n_fft, F]
        total = (f - 1) * hop + n_fft
        out = F.fold(frames, (1, total), (1, n_fft), stride=(1, hop)).reshape(n, total)
        env = F.fold(
            (self.window**2)[None, :, None].expand(1, n_fft, f), (1, total), (1, n_fft), stride=(1, hop)
        ).reshape(1, total)
        # Frame f starts at f·hop in `out`; its centre n_fft/2 must land on (f + ½)·hop.
        start = n_fft // 2 - hop // 2
        out = out[:, start : start + f * hop]
        env = env[:, start : start + f * hop]
        return out / env.clamp_min(1e-3)
