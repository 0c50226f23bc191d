"""Loss balancer (EnCodec §3.4): weights set each loss's share of the gradient.

Losses on the generator output differ by orders of magnitude and drift during
training. Instead of tuning raw coefficients, each loss's gradient with respect to
the output is normalised by an exponential moving average of its own norm, then the
normalised gradients are mixed by `weight_i / Σ weights`. A weight then means "this
fraction of the update", whatever the loss's scale.
"""

from __future__ import annotations

import torch
import torch.distributed as dist
from torch import Tensor


class Balancer:
    def __init__(
        self,
        weights: dict[str, float],
        ema_decay: float = 0.999,
        total_norm: float = 1.0,
        eps: float = 1e-12,
    ) -> None:
        self.weights = dict(weights)
        self.ema_decay = ema_decay
        self.total_norm = total_norm
        self.eps = eps
        self.ema_sum: dict[str, float] = {}
        self.ema_count: dict[str, float] = {}

    def _update_ema(self, name: str, value: float) -> float:
        # Bias-corrected EMA: the first steps are not dominated by the zero start.
        d = self.ema_decay
        self.ema_sum[name] = self.ema_sum.get(name, 0.0) * d + value
        self.ema_count[name] = self.ema_count.get(name, 0.0) * d + 1.0
        return self.ema_sum[name] / self.ema_count[name]

    def gradient(
        self, losses: dict[str, Tensor], output: Tensor
    ) -> tuple[Tensor, dict[str, float]]:
        """The balanced gradient for `output`, and each loss's raw gradient norm."""
        grads, norms = {}, {}
        for name, loss in losses.items():
            if self.weights.get(name, 0.0) == 0.0:
                continue
            (g,) = torch.autograd.grad(loss, output, retain_graph=True)
            # Norm per example, averaged: independent of batch size.
            norm = g.flatten(1).norm(dim=1).mean()
            if dist.is_available() and dist.is_initialized():
                dist.all_reduce(norm)
                norm = norm / dist.get_world_size()
            grads[name], norms[name] = g, float(norm)
        total_weight = sum(self.weights[n] for n in grads)
        out = torch.zeros_like(output)
        for name, g in grads.items():
            ema = self._update_ema(name, norms[name])
            scale = self.total_norm * self.weights[name] / total_weight / (ema + self.eps)
            out.add_(g, alpha=scale)
        return out, norms

    def state_dict(self) -> dict:
        return {"ema_sum": dict(self.ema_sum), "ema_count": dict(self.ema_count)}

    def load_state_dict(self, state: dict) -> None:
        self.ema_sum = dict(state["ema_sum"])
        self.ema_count = dict(state["ema_count"])
