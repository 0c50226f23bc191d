"""Multi-scale STFT discriminator (as in EnCodec), used only in training.

Each scale looks at the complex STFT (real and imaginary parts as two input channels
per audio channel) at one resolution, through 2-D convs that are dilated in time and
strided in frequency. Feature maps are returned for the feature-matching loss.
"""

from __future__ import annotations

import torch
from torch import Tensor, nn
from torch.nn.utils import parametrizations


def _wn_conv2d(*args, **kwargs) -> nn.Module:
    return parametrizations.weight_norm(nn.Conv2d(*args, **kwargs))


class STFTDiscriminator(nn.Module):
    """One resolution: complex STFT → 2-D conv stack → a map of logits."""

    def __init__(self, n_fft: int, audio_channels: int = 1, filters: int = 32) -> None:
        super().__init__()
        self.n_fft = n_fft
        self.hop = n_fft // 4
        self.register_buffer("window", torch.hann_window(n_fft), persistent=False)
        in_ch = 2 * audio_channels
        self.convs = nn.ModuleList(
            [
                _wn_conv2d(in_ch, filters, (3, 9), padding=(1, 4)),
                _wn_conv2d(
                    filters, filters, (3, 9), stride=(1, 2), dilation=(1, 1), padding=(1, 4)
                ),
                _wn_conv2d(
                    filters, filters, (3, 9), stride=(1, 2), dilation=(2, 1), padding=(2, 4)
                ),
                _wn_conv2d(
                    filters, filters, (3, 9), stride=(1, 2), dilation=(4, 1), padding=(4, 4)
                ),
                _wn_conv2d(filters, filters, (3, 3), padding=(1, 1)),
            ]
        )
        self.out = _wn_conv2d(filters, 1, (3, 3), padding=(1, 1))
        self.act = nn.LeakyReLU(0.2)

    def forward(self, wav: Tensor) -> tuple[Tensor, list[Tensor]]:
        b, c, t = wav.shape
        spec = torch.stft(
            wav.reshape(b * c, t),
            self.n_fft,
            self.hop,
            window=self.window,
            normalized=True,
            return_complex=True,
        )  # [B*C, F, T']
        spec = torch.view_as_real(spec)  # [B*C, F, T', 2]
        x = spec.reshape(b, c, *spec.shape[1:]).permute(0, 1, 4, 3, 2)  # [B, C, 2, T', F]
        x = x.reshape(b, 2 * c, x.shape[3], x.shape[4])
        features = []
        for conv in self.convs:
            x = self.act(conv(x))
            features.append(x)
        return self.out(x), features


class MultiScaleSTFTDiscriminator(nn.Module):
    """Five STFT discriminators at window sizes 2048 … 128."""

    def __init__(
        self,
        audio_channels: int = 1,
        filters: int = 32,
        n_ffts: tuple[int, ...] = (2048, 1024, 512, 256, 128),
    ) -> None:
        super().__init__()
        self.discriminators = nn.ModuleList(
            STFTDiscriminator(n, audio_channels, filters) for n in n_ffts
        )

    def forward(self, wav: Tensor) -> tuple[list[Tensor], list[list[Tensor]]]:
        logits, features = [], []
        for disc in self.discriminators:
            lg, ft = disc(wav)
            logits.append(lg)
            features.append(ft)
        return logits, features


class PeriodDiscriminator(nn.Module):
    """One period p: the waveform folded into a [T/p, p] grid, so that 2-D convs along
    the first axis compare samples exactly p apart (pitch-periodic structure, which
    magnitude losses average away)."""

    def __init__(self, period: int, audio_channels: int = 1, filters: int = 16) -> None:
        super().__init__()
        self.period = period
        widths = [audio_channels, filters, 2 * filters, 4 * filters, 8 * filters]
        self.convs = nn.ModuleList(
            _wn_conv2d(a, b, (5, 1), stride=(3, 1), padding=(2, 0))
            for a, b in zip(widths[:-1], widths[1:], strict=True)
        )
        self.convs.append(_wn_conv2d(widths[-1], widths[-1], (5, 1), padding=(2, 0)))
        self.out = _wn_conv2d(widths[-1], 1, (3, 1), padding=(1, 0))
        self.act = nn.LeakyReLU(0.2)

    def forward(self, wav: Tensor) -> tuple[Tensor, list[Tensor]]:
        b, c, t = wav.shape
        pad = (-t) % self.period
        if pad:
            wav = nn.functional.pad(wav, (0, pad), mode="reflect")
        x = wav.reshape(b, c, -1, self.period)
        features = []
        for conv in self.convs:
            x = self.act(conv(x))
            features.append(x)
        return self.out(x), features


class CombinedDiscriminator(nn.Module):
    """STFT discriminators at `n_ffts` and period discriminators at `periods`, their
    logits and feature maps returned as one list (either set may be empty)."""

    def __init__(
        self,
        audio_channels: int = 1,
        filters: int = 32,
        n_ffts: tuple[int, ...] = (2048, 1024, 512, 256, 128),
        periods: tuple[int, ...] = (),
        period_filters: int = 16,
    ) -> None:
        super().__init__()
        self.discriminators = nn.ModuleList(
            [STFTDiscriminator(n, audio_channels, filters) for n in n_ffts]
            + [PeriodDiscriminator(p, audio_channels, period_filters) for p in periods]
        )

    forward = MultiScaleSTFTDiscriminator.forward
