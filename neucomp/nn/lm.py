"""The float Transformer LM over RVQ codes, for training (inference runs its integer twin).

At frame t the input is the sum of one embedding per codebook of the codes of frame t-1
(a learned start vector at t = 0) plus an embedding of the number of codebooks K; a few
pre-norm Transformer blocks attend over a bounded past (ALiBi distance penalties, no
position embeddings, so any chunk length works); head k predicts code k of frame t.
One model serves every K up to `max_codebooks`: only the first K embeddings are summed
and only the first K heads are used, and training draws K at random per batch.

With `intra` (intra-frame conditioning), head k also sees the codes j < k of frame t
itself: its input is h + W norm(c_k), where h is the final-norm output, c_k the sum of
the input embeddings (the `emb` table, shared) of codes 0..k-1 of frame t, norm an
RMSNorm and W a learned dim x dim map (zero at init). Coding must then run head by head
(the decoder knows code k-1 of a frame only once it decoded it); training uses the true
codes (teacher forcing).

The layers were chosen so that `neucomp.train.quantize.quantize_lm` can map every operation
onto exact integer arithmetic: RMSNorm without bias, bias-free linear layers, GELU,
softmax attention with ALiBi; only the output heads have a bias.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass

import torch
import torch.nn.functional as F
from torch import Tensor, nn


@dataclass
class LMConfig:
    """Shape of the LM; stored in the model file."""

    dim: int = 200
    layers: int = 5
    heads: int = 8
    ff: int = 800
    window: int = 262  # frames of past each position attends to (itself included)
    max_codebooks: int = 32
    card: int = 1024  # codebook size
    intra: bool = False  # head k also conditioned on codes 0..k-1 of the same frame

    def to_dict(self) -> dict:
        d = asdict(self)
        if not self.intra:  # left out, so files and checkpoints from before it keep their hash
            del d["intra"]
        return d

    @classmethod
    def from_dict(cls, d: dict) -> LMConfig:
        return cls(**{k: d[k] for k in cls.__dataclass_fields__ if k in d})


def alibi_slopes(heads: int) -> list[float]:
    """Per-head penalty per frame of distance: 1/2, 1/4, ... (geometric, as in ALiBi)."""
    return [2.0 ** (-8.0 * (h + 1) / heads) for h in range(heads)]


def attention_bias(config: LMConfig, length: int) -> Tensor:
    """[H, T, T] additive bias: -slope * distance inside the causal window, -inf outside."""
    pos = torch.arange(length)
    dist = (pos[:, None] - pos[None, :]).float()
    slopes = torch.tensor(alibi_slopes(config.heads))[:, None, None]
    bias = -slopes * dist
    visible = (dist >= 0) & (dist < config.window)
    return bias.masked_fill(~visible, float("-inf"))


class RMSNorm(nn.Module):
    def __init__(self, dim: int, eps: float = 1e-6) -> None:
        super().__init__()
        self.eps = eps
        self.weight = nn.Parameter(torch.ones(dim))

    def forward(self, x: Tensor) -> Tensor:
        return x * torch.rsqrt(x.pow(2).mean(-1, keepdim=True) + self.eps) * self.weight


class Block(nn.Module):
    """Pre-norm Transformer block: x + attn(norm(x)), then x + mlp(norm(x))."""

    def __init__(self, config: LMConfig) -> None:
        super().__init__()
        self.heads = config.heads
        self.norm1 = RMSNorm(config.dim)
        self.qkv = nn.Linear(config.dim, 3 * config.dim, bias=False)
        self.proj = nn.Linear(config.dim, config.dim, bias=False)
        self.norm2 = RMSNorm(config.dim)
        self.fc1 = nn.Linear(config.dim, config.ff, bias=False)
        self.fc2 = nn.Linear(config.ff, config.dim, bias=False)

    def forward(self, x: Tensor, bias: Tensor, probe: dict | None = None) -> Tensor:
        b, t, d = x.shape
        h = self.norm1(x)
        q, k, v = self.qkv(h).view(b, t, 3, self.heads, d // self.heads).permute(2, 0, 3, 1, 4)
        att = F.scaled_dot_product_attention(q, k, v, attn_mask=bias)
        x = x + self.proj(att.transpose(1, 2).reshape(b, t, d))
        h2 = self.norm2(x)
        pre = self.fc1(h2)
        x = x + self.fc2(F.gelu(pre))
        if probe is not None:  # activation ranges for the integer conversion
            probe.setdefault("norm1", []).append(h.detach())
            probe.setdefault("q", []).append(q.detach())
            probe.setdefault("k", []).append(k.detach())
            probe.setdefault("v", []).append(v.detach())
            probe.setdefault("norm2", []).append(h2.detach())
            probe.setdefault("pre", []).append(pre.detach())
            probe.setdefault("resid", []).append(x.detach())
        return x


class CodesLM(nn.Module):
    """Float LM: codes [B, K, T] → logits [B, K, T, card] for code[k, t] given frames < t."""

    def __init__(self, config: LMConfig) -> None:
        super().__init__()
        self.config = config
        c = config
        self.emb = nn.Embedding(c.max_codebooks * c.card, c.dim)
        self.start = nn.Parameter(torch.zeros(c.dim))
        self.k_emb = nn.Embedding(c.max_codebooks + 1, c.dim)
        self.blocks = nn.ModuleList(Block(c) for _ in range(c.layers))
        self.norm = RMSNorm(c.dim)
        self.heads = nn.Linear(c.dim, c.max_codebooks * c.card)
        self.apply(self._init)
        for block in self.blocks:  # GPT-2 style: residual branches start small
            for lin in (block.proj, block.fc2):
                nn.init.normal_(lin.weight, std=0.02 / math.sqrt(2 * c.layers))
        if c.intra:  # made last and zeroed: starts as the same model without intra
            self.intra_norm = RMSNorm(c.dim)  # c_k's scale grows with k: normalise it
            self.intra_proj = nn.Linear(c.dim, c.dim, bias=False)
            nn.init.zeros_(self.intra_proj.weight)

    @staticmethod
    def _init(module: nn.Module) -> None:
        if isinstance(module, (nn.Linear, nn.Embedding)):
            nn.init.normal_(module.weight, std=0.02)
        if isinstance(module, nn.Linear) and module.bias is not None:
            nn.init.zeros_(module.bias)

    def inputs(self, codes: Tensor) -> Tensor:
        """Frame inputs [B, T, dim]: start vector, then summed embeddings of frame t-1."""
        b, k, t = codes.shape
        offsets = torch.arange(k, device=codes.device)[None, :, None] * self.config.card
        prev = self.emb(codes[:, :, :-1] + offsets).sum(1)  # [B, T-1, dim]
        start = self.start.expand(b, 1, -1)
        return torch.cat([start, prev], 1) + self.k_emb.weight[k]

    def forward(
        self, codes: Tensor, probe: dict | None = None, heads: Tensor | None = None
    ) -> Tensor:
        """Logits [B, K, T, card]; with `heads` (codebook indices < K) only those heads,
        [B, len(heads), T, card] (training: the output layer dominates the cost at large K)."""
        b, k, t = codes.shape
        if not 1 <= k <= self.config.max_codebooks:
            raise ValueError(f"{k} codebooks, the LM handles 1..{self.config.max_codebooks}")
        x = self.inputs(codes)
        if probe is not None:
            probe.setdefault("resid", []).append(x.detach())
        bias = attention_bias(self.config, t).to(x.device, x.dtype)
        for block in self.blocks:
            x = block(x, bias, probe)
        h = self.norm(x)
        if probe is not None:
            probe.setdefault("norm_f", []).append(h.detach())
        c = self.config
        w = self.heads.weight.view(c.max_codebooks, c.card, c.dim)
        bias = self.heads.bias.view(c.max_codebooks, c.card)
        w, bias = (w[:k], bias[:k]) if heads is None else (w[heads], bias[heads])
        if not c.intra:
            return torch.einsum("btd,kcd->bktc", h, w) + bias[None, :, None]
        ctx = self.intra_context(codes)  # [B, K, T, dim]
        if heads is not None:
            ctx = ctx[:, heads]
        ctx = self.intra_norm(ctx)  # 0 stays 0 (k = 0: no context)
        hk = h[:, None] + self.intra_proj(ctx)  # [B, K or len(heads), T, dim]
        if probe is not None:
            probe.setdefault("intra_c", []).append(ctx.detach())
            probe.setdefault("intra_h", []).append(hk.detach())
        return torch.einsum("bktd,kcd->bktc", hk, w) + bias[None, :, None]

    def intra_context(self, codes: Tensor) -> Tensor:
        """[B, K, T, dim]: at k, the sum of the embeddings of codes 0..k-1 of frame t."""
        b, k, t = codes.shape
        offsets = torch.arange(k, device=codes.device)[None, :, None] * self.config.card
        e = self.emb(codes[:, : k - 1] + offsets[:, : k - 1])  # [B, K-1, T, dim]
        return torch.cat([e.new_zeros(b, 1, t, e.shape[-1]), e.cumsum(1)], 1)


def bits_per_code(logits: Tensor, codes: Tensor) -> Tensor:
    """Mean cross-entropy in bits of codes [B, K, T] under logits [B, K, T, card]."""
    ce = F.cross_entropy(logits.flatten(0, 2), codes.flatten(), reduction="mean")
    return ce / math.log(2)
