"""Residual vector quantizer with EMA codebooks, k-means init and dead-code replacement.

Each stage quantizes what the previous stages left over, so using the first K stages
gives a coarser code at K × 10 bits per frame: one model serves every bandwidth.
Codebooks are not trained by gradients but by exponential moving averages of the
vectors assigned to them (as in SoundStream / EnCodec); a code that stops being used
(used at under a tenth of the mean rate) is re-seeded from the current batch, so that
no entry of the 1024 goes to waste.
"""

from __future__ import annotations

import numpy as np
import torch
import torch.distributed as dist
import torch.nn.functional as F
from torch import Tensor, nn

from neucomp.nn.search import beam_search


def _all_reduce(t: Tensor) -> Tensor:
    """Sum across data-parallel workers (no-op when not distributed)."""
    if dist.is_available() and dist.is_initialized():
        dist.all_reduce(t)
    return t


def _kmeans(samples: Tensor, k: int, iters: int) -> Tensor:
    """Plain k-means; picks initial centres from the samples (with replacement if few)."""
    n = samples.shape[0]
    idx = torch.randint(0, n, (k,), device=samples.device) if n < k else torch.randperm(n)[:k]
    centres = samples[idx].clone()
    if n < k:  # duplicated picks would stay identical forever: jitter them apart
        centres += 1e-3 * samples.std() * torch.randn_like(centres)
    for _ in range(iters):
        assign = torch.cdist(samples, centres).argmin(dim=1)
        counts = torch.bincount(assign, minlength=k).to(samples.dtype)
        sums = torch.zeros_like(centres).index_add_(0, assign, samples)
        used = counts > 0
        centres[used] = sums[used] / counts[used, None]
    return centres


class VectorQuantizer(nn.Module):
    """One codebook of `codebook_size` vectors of size `dim`."""

    def __init__(
        self,
        dim: int,
        codebook_size: int = 1024,
        decay: float = 0.99,
        eps: float = 1e-5,
        dead_fraction: float = 0.1,
        kmeans_iters: int = 10,
    ) -> None:
        super().__init__()
        self.codebook_size = codebook_size
        self.decay = decay
        self.eps = eps
        self.dead_fraction = dead_fraction
        self.kmeans_iters = kmeans_iters
        self.register_buffer("initialized", torch.tensor(False))
        # Drawn by nn.init, so a model built only to load a file can skip the draw.
        self.register_buffer("embed", nn.init.normal_(torch.empty(codebook_size, dim), std=0.1))
        self.register_buffer("cluster_size", torch.ones(codebook_size))
        self.register_buffer("embed_sum", self.embed.clone())

    @torch.no_grad()
    def restart_statistics(self) -> None:
        """Restart the EMA from the codebook as it is (a warm start): every entry in use."""
        self.cluster_size.fill_(1.0)
        self.initialized.fill_(True)
        self.embed_sum.copy_(self.embed)

    def encode(self, x: Tensor) -> Tensor:
        """Nearest codeword index for each row of x [N, dim]."""
        # ||x - e||² = ||x||² - 2 x·e + ||e||²; ||x||² does not change the argmin.
        scores = x @ self.embed.t() * 2 - (self.embed**2).sum(dim=1)
        return scores.argmax(dim=1)

    def decode(self, indices: Tensor) -> Tensor:
        return F.embedding(indices, self.embed)

    def search_book(self) -> tuple[np.ndarray, np.ndarray]:
        """The codebook in float64 and its squared norms, for the beam search: made once
        and kept until the codebook changes (every in-place update bumps the tensor's
        version), since a live stream encodes ~11 chunks a second."""
        version = (self.embed._version, self.embed.data_ptr())
        if getattr(self, "_search_cache", (None,))[0] != version:
            book = self.embed.detach().double().numpy()
            self._search_cache = (version, book, (book**2).sum(1))
        return self._search_cache[1], self._search_cache[2]

    @torch.no_grad()
    def _init_codebook(self, x: Tensor) -> None:
        centres = _kmeans(x.float(), self.codebook_size, self.kmeans_iters)
        if dist.is_available() and dist.is_initialized():
            dist.broadcast(centres, 0)
        # Start every entry at the usage a uniform code would have, so none looks dead.
        expected = x.shape[0] / self.codebook_size
        self.embed.copy_(centres)
        self.embed_sum.copy_(centres * expected)
        self.cluster_size.fill_(expected)
        self.initialized.fill_(True)

    @torch.no_grad()
    def _ema_update(self, x: Tensor, indices: Tensor) -> None:
        onehot_counts = torch.bincount(indices, minlength=self.codebook_size).to(x.dtype)
        sums = torch.zeros_like(self.embed).index_add_(0, indices, x)
        if dist.is_available() and dist.is_initialized():  # one call for both
            both = _all_reduce(torch.cat([onehot_counts[:, None], sums], dim=1))
            onehot_counts, sums = both[:, 0], both[:, 1:]
        self.cluster_size.mul_(self.decay).add_(onehot_counts, alpha=1 - self.decay)
        self.embed_sum.mul_(self.decay).add_(sums, alpha=1 - self.decay)
        # Laplace smoothing keeps rarely used entries from dividing by ~0.
        n = self.cluster_size.sum()
        smoothed = (self.cluster_size + self.eps) / (n + self.codebook_size * self.eps) * n
        self.embed.copy_(self.embed_sum / smoothed[:, None])
        self._replace_dead(x)

    @torch.no_grad()
    def _replace_dead(self, x: Tensor) -> None:
        # "Dead" is relative to the mean usage, not an absolute count: the vectors per
        # batch (and so the counts) vary by two orders of magnitude between a CPU run
        # and a multi-GPU one.
        mean_usage = self.cluster_size.mean()
        dead = self.cluster_size < self.dead_fraction * mean_usage
        n_dead = int(dead.sum())
        if n_dead == 0:
            return
        picks = x[torch.randint(0, x.shape[0], (n_dead,), device=x.device)]
        if dist.is_available() and dist.is_initialized():
            dist.broadcast(picks, 0)
        self.embed[dead] = picks
        self.embed_sum[dead] = picks * mean_usage
        self.cluster_size[dead] = mean_usage

    def forward(self, x: Tensor) -> tuple[Tensor, Tensor, Tensor]:
        """x [N, dim] → (quantized [N, dim] with no gradient, indices [N], commit loss)."""
        if self.training and not bool(self.initialized):
            self._init_codebook(x.detach())
        indices = self.encode(x.detach())
        quantized = self.decode(indices)
        if self.training:
            self._ema_update(x.detach().float(), indices)
        commit = F.mse_loss(x, quantized.detach())
        return quantized.detach(), indices, commit


class ResidualVectorQuantizer(nn.Module):
    """A stack of VectorQuantizers applied to successive residuals."""

    def __init__(self, dim: int, n_codebooks: int = 32, codebook_size: int = 1024, **vq_kw) -> None:
        super().__init__()
        self.n_codebooks = n_codebooks
        self.codebook_size = codebook_size
        self.layers = nn.ModuleList(
            VectorQuantizer(dim, codebook_size, **vq_kw) for _ in range(n_codebooks)
        )

    def forward(self, z: Tensor, n_q: int) -> tuple[Tensor, Tensor, Tensor]:
        """z [B, D, T] → (quantized with straight-through gradient, codes [B, n_q, T], loss).

        The commitment loss is the sum over all n_q stages. Each stage's residual is
        `z - (earlier codewords)` with the codewords detached, so every stage's loss
        pulls the encoder output (EnCodec's release only reached the first stage).
        """
        b, d, t = z.shape
        x = z.permute(0, 2, 1).reshape(b * t, d)
        residual = x
        total = torch.zeros_like(x)
        codes = []
        commit = x.new_zeros(())
        for layer in self.layers[:n_q]:
            q, idx, loss = layer(residual)
            residual = residual - q
            total = total + q
            codes.append(idx)
            commit = commit + loss
        quantized = x + (total - x).detach()
        quantized = quantized.reshape(b, t, d).permute(0, 2, 1)
        codes_t = torch.stack(codes, dim=0).reshape(n_q, b, t).transpose(0, 1)
        return quantized, codes_t, commit

    @torch.no_grad()
    def encode(self, z: Tensor, n_q: int, beam: int = 1) -> Tensor:
        """z [B, D, T] → codes [B, n_q, T] (inference; no codebook updates). With a
        ``beam`` > 1 the stages are searched together (neucomp.nn.search), in float64."""
        b, d, t = z.shape
        residual = z.permute(0, 2, 1).reshape(b * t, d)
        if beam > 1:
            books, norms = zip(*(layer.search_book() for layer in self.layers[:n_q]), strict=True)
            codes, _ = beam_search(residual.double().numpy(), list(books), list(norms), beam)
            return torch.from_numpy(codes).reshape(n_q, b, t).transpose(0, 1)
        codes = []
        for layer in self.layers[:n_q]:
            idx = layer.encode(residual)
            residual = residual - layer.decode(idx)
            codes.append(idx)
        return torch.stack(codes, dim=0).reshape(n_q, b, t).transpose(0, 1)

    def decode(self, codes: Tensor) -> Tensor:
        """codes [B, K, T] → latent [B, D, T] (sum of the first K stages' codewords)."""
        out = None
        for k in range(codes.shape[1]):
            q = self.layers[k].decode(codes[:, k])  # [B, T, D]
            out = q if out is None else out + q
        assert out is not None, "need at least one codebook"
        return out.permute(0, 2, 1)
