"""SEANet encoder and decoder (as in EnCodec / SoundStream), causal and streamable.

Encoder: conv → [residual unit → ELU → strided conv (channels ×2)] per ratio → LSTM
→ ELU → conv to the latent. Decoder mirrors it with transposed convs. Streaming state
is a flat list with one entry per stateful layer, in call order.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from torch import Tensor, nn

from neucomp.nn.conv import CausalConv1d, CausalConvTranspose1d

LayerState = object  # a Tensor, a tuple of Tensors, or None


@dataclass
class SEANetConfig:
    channels: int = 1  # audio channels
    base_width: int = 32  # C: width of the first conv; doubles at each downsampling
    latent_dim: int = 128
    ratios: list[int] = field(default_factory=lambda: [2, 4, 5, 8])  # encoder order
    kernel_size: int = 7
    last_kernel_size: int = 7
    residual_kernel_size: int = 3
    n_residual_layers: int = 1
    dilation_base: int = 2
    compress: int = 2  # residual units squeeze their hidden width by this factor
    lstm_layers: int = 2
    weight_norm: bool = True


class ResidualUnit(nn.Module):
    """ELU → dilated conv (width/compress) → ELU → 1×1 conv, plus an identity skip."""

    def __init__(self, dim: int, kernel: int, dilation: int, compress: int, wn: bool) -> None:
        super().__init__()
        hidden = dim // compress
        self.act = nn.ELU()
        self.conv1 = CausalConv1d(dim, hidden, kernel, dilation=dilation, weight_norm=wn)
        self.conv2 = CausalConv1d(hidden, dim, 1, weight_norm=wn)

    def forward(self, x: Tensor, state: LayerState = None) -> tuple[Tensor, LayerState]:
        y, state = self.conv1(self.act(x), state)
        y, _ = self.conv2(self.act(y))
        return x + y, state


class SkipLSTM(nn.Module):
    """Multi-layer LSTM over time with a residual connection; state is (h, c)."""

    def __init__(self, dim: int, num_layers: int) -> None:
        super().__init__()
        self.lstm = nn.LSTM(dim, dim, num_layers)

    def forward(self, x: Tensor, state: LayerState = None) -> tuple[Tensor, LayerState]:
        seq = x.permute(2, 0, 1)  # [T, B, C]
        y, new_state = self.lstm(seq, state)
        return (y + seq).permute(1, 2, 0), new_state


class _Activation(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.act = nn.ELU()

    def forward(self, x: Tensor, state: LayerState = None) -> tuple[Tensor, LayerState]:
        return self.act(x), None


class _StatefulStack(nn.Module):
    """Runs layers in order, threading one state slot per layer."""

    layers: nn.ModuleList

    def forward(
        self, x: Tensor, state: list[LayerState] | None = None
    ) -> tuple[Tensor, list[LayerState]]:
        if state is None:
            state = [None] * len(self.layers)
        new_state: list[LayerState] = []
        for layer, s in zip(self.layers, state, strict=True):
            x, s = layer(x, s)
            new_state.append(s)
        return x, new_state


class SEANetEncoder(_StatefulStack):
    """Audio [B, channels, T] → latent [B, latent_dim, T / hop] (T a multiple of hop)."""

    def __init__(self, cfg: SEANetConfig) -> None:
        super().__init__()
        wn = cfg.weight_norm
        dim = cfg.base_width
        layers: list[nn.Module] = [CausalConv1d(cfg.channels, dim, cfg.kernel_size, weight_norm=wn)]
        for ratio in cfg.ratios:
            for j in range(cfg.n_residual_layers):
                layers.append(
                    ResidualUnit(
                        dim, cfg.residual_kernel_size, cfg.dilation_base**j, cfg.compress, wn
                    )
                )
            layers.append(_Activation())
            layers.append(CausalConv1d(dim, dim * 2, 2 * ratio, stride=ratio, weight_norm=wn))
            dim *= 2
        if cfg.lstm_layers:
            layers.append(SkipLSTM(dim, cfg.lstm_layers))
        layers.append(_Activation())
        layers.append(CausalConv1d(dim, cfg.latent_dim, cfg.last_kernel_size, weight_norm=wn))
        self.layers = nn.ModuleList(layers)


class SEANetDecoder(_StatefulStack):
    """Latent [B, latent_dim, F] → audio [B, channels, F * hop]."""

    def __init__(self, cfg: SEANetConfig) -> None:
        super().__init__()
        wn = cfg.weight_norm
        dim = cfg.base_width * 2 ** len(cfg.ratios)
        layers: list[nn.Module] = [
            CausalConv1d(cfg.latent_dim, dim, cfg.kernel_size, weight_norm=wn)
        ]
        if cfg.lstm_layers:
            layers.append(SkipLSTM(dim, cfg.lstm_layers))
        for ratio in reversed(cfg.ratios):
            layers.append(_Activation())
            layers.append(CausalConvTranspose1d(dim, dim // 2, 2 * ratio, ratio, weight_norm=wn))
            dim //= 2
            for j in range(cfg.n_residual_layers):
                layers.append(
                    ResidualUnit(
                        dim, cfg.residual_kernel_size, cfg.dilation_base**j, cfg.compress, wn
                    )
                )
        layers.append(_Activation())
        layers.append(CausalConv1d(dim, cfg.channels, cfg.last_kernel_size, weight_norm=wn))
        self.layers = nn.ModuleList(layers)
