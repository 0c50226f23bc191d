"""Causal, streamable convolutions.

Every layer of the codec is causal so that audio can be encoded and decoded chunk by
chunk with bounded memory, giving the same result as processing the whole signal at
once. Each layer takes an explicit `state` (its left context, or the overlap tail of a
transposed conv) and returns the next one; `state=None` means "start of the signal",
which is the same as zero padding on the left.
"""

from __future__ import annotations

import torch
from torch import Tensor, nn
from torch.nn.utils import parametrizations

State = Tensor | None


def _maybe_weight_norm(module: nn.Module, enabled: bool) -> nn.Module:
    return parametrizations.weight_norm(module) if enabled else module


class CausalConv1d(nn.Module):
    """Conv1d padded on the left only.

    With effective kernel `k_eff = (k - 1) * dilation + 1` and stride `s`, the layer needs
    `k_eff - s` samples of left context; an input whose length is a multiple of `s`
    then gives exactly `length / s` outputs. In streaming the context is carried over
    from the previous call, so chunk lengths must be multiples of the stride.
    """

    def __init__(
        self,
        in_channels: int,
        out_channels: int,
        kernel_size: int,
        stride: int = 1,
        dilation: int = 1,
        weight_norm: bool = True,
    ) -> None:
        super().__init__()
        self.stride = stride
        self.context = (kernel_size - 1) * dilation + 1 - stride
        if self.context < 0:
            raise ValueError("kernel must cover the stride")
        conv = nn.Conv1d(in_channels, out_channels, kernel_size, stride=stride, dilation=dilation)
        self.conv = _maybe_weight_norm(conv, weight_norm)

    def forward(self, x: Tensor, state: State = None) -> tuple[Tensor, State]:
        if self.context == 0:
            return self.conv(x), None
        if state is None:
            state = x.new_zeros(x.shape[0], x.shape[1], self.context)
        x = torch.cat([state, x], dim=-1)
        new_state = x[..., x.shape[-1] - self.context :]
        return self.conv(x), new_state


class CausalConvTranspose1d(nn.Module):
    """ConvTranspose1d that emits `stride` samples per input step.

    A transposed conv with kernel k > stride spreads each input over k outputs; the last
    `k - stride` of them overlap the next step. They are kept (bias excluded) as state
    and added to the start of the next call's output, so chunked decoding is exact.
    """

    def __init__(
        self,
        in_channels: int,
        out_channels: int,
        kernel_size: int,
        stride: int,
        weight_norm: bool = True,
    ) -> None:
        super().__init__()
        if kernel_size < stride:
            raise ValueError("kernel must cover the stride")
        self.stride = stride
        self.tail = kernel_size - stride
        conv = nn.ConvTranspose1d(in_channels, out_channels, kernel_size, stride=stride)
        self.conv = _maybe_weight_norm(conv, weight_norm)

    def forward(self, x: Tensor, state: State = None) -> tuple[Tensor, State]:
        conv = self.conv
        y = torch.nn.functional.conv_transpose1d(x, conv.weight, None, stride=self.stride)
        if state is not None and self.tail:
            y = torch.cat([y[..., : self.tail] + state, y[..., self.tail :]], dim=-1)
        n_out = x.shape[-1] * self.stride
        new_state = y[..., n_out:] if self.tail else None
        out = y[..., :n_out]
        if conv.bias is not None:
            out = out + conv.bias[:, None]
        return out, new_state
