"""The spectral envelope as coded side information, and the equaliser that imposes it
on the decoder's output (docs/EXPERIMENTS.md E18).

A probe trained on the shipped codec's 6 kbps codes predicts the reference's per-bin
log spectrum no better than its decoder does (8.8 against 9.3 dB at 0–4 kHz), while the
same probe fed a 20-band log-mel envelope gets 5.5 dB: the learned encoder's latent has
collapsed (E3) and carries less of the spectrum than twenty numbers a frame. So a codec
may spend some of its codebooks on the envelope itself, computed by fixed DSP and
quantized by its own residual VQ; the decoder's output is then equalised, frame by
frame, to the envelope it was sent (a channel vocoder whose carrier is the decoder's
output), and the envelope may also be handed to the decoder as an input.

Layout: a string of ``e`` and ``l``, one letter per stream codebook, says which are the
envelope's and which the learned RVQ's; every bandwidth is a prefix of it. The default
("") alternates them, the envelope's first (ceil(K / 2) envelope, floor(K / 2) learned).

Prediction (E19): with ``prediction`` ρ > 0 the envelope is coded by closed-loop DPCM.
Each frame is predicted from the last decoded one, ``p = m + ρ (ê_prev − m)`` (``m`` the
corpus mean; a stream starts from ``ê_prev = m``), and the RVQ codes what the prediction
misses. The windows of neighbouring frames overlap by half, so the residual has ~7 % of
the envelope's variance; 4 stages then code it about as well as 8 plain ones.

Everything is causal, as the encoder is: frame ``i``'s window is the ``n_fft`` samples
that end where the frame ends. The equaliser works on those windows with Hann weights
at 50 % overlap (``n_fft`` = 2 hops), so it holds back one frame (13 ms at 24 kHz).
"""

from __future__ import annotations

import numpy as np
import torch
from torch import Tensor, nn

from neucomp.nn.quantizer import ResidualVectorQuantizer, _kmeans
from neucomp.nn.search import beam_search


def _mel_triangles(sample_rate: int, n_fft: int, bands: int) -> Tensor:
    """Peak-1 triangles on the mel scale over 0 … sample_rate / 2, [bands, bins]."""

    def to_mel(f: Tensor) -> Tensor:
        return 2595.0 * torch.log10(1.0 + f / 700.0)

    freqs = torch.linspace(0, sample_rate / 2, n_fft // 2 + 1)
    mels = torch.linspace(0.0, float(to_mel(torch.tensor(sample_rate / 2.0))), bands + 2)
    edges = 700.0 * (10.0 ** (mels / 2595.0) - 1.0)
    lower, centre, upper = edges[:-2, None], edges[1:-1, None], edges[2:, None]
    rising = (freqs - lower) / (centre - lower)
    falling = (upper - freqs) / (upper - centre)
    return torch.clamp(torch.minimum(rising, falling), min=0.0)


class SpectralEnvelope(nn.Module):
    """Audio [B, C, T] (T a whole number of frames) → log10 mel envelope [B, bands, T/hop].

    One envelope per frame for all channels: the mean of the channels' magnitude spectra
    (not the spectrum of their mix, which cancels what is out of phase between them; the
    equaliser measures its output the same way). Each frame is the Hann-windowed
    ``n_fft`` samples that end at the frame's last sample, so the first frames see the
    zero history of a fresh stream.
    """

    def __init__(
        self, sample_rate: int, hop: int, bands: int = 20, n_fft: int = 640, floor: float = 1e-5
    ) -> None:
        super().__init__()
        if n_fft < hop:
            raise ValueError(f"the envelope window ({n_fft}) is shorter than a frame ({hop})")
        self.hop, self.n_fft, self.floor = hop, n_fft, floor
        self.history = n_fft - hop
        # periodic Hann: at a hop of n_fft / 2 its shifted copies sum to exactly one
        self.register_buffer("window", torch.hann_window(n_fft), persistent=False)
        self.register_buffer("fb", _mel_triangles(sample_rate, n_fft, bands), persistent=False)

    def forward(self, wav: Tensor, past: Tensor | None = None) -> tuple[Tensor, Tensor]:
        """→ (envelope [B, bands, frames], the last ``n_fft - hop`` samples of every
        channel, the ``past`` of the next call)."""
        if past is None:
            past = wav.new_zeros(*wav.shape[:2], self.history)
        x = torch.cat([past, wav], dim=-1)
        # In float64, so that how a stream is cut into pushes (which changes the FFT's
        # batch and so its float32 rounding) cannot flip a code at a near tie.
        frames = x.double().unfold(-1, self.n_fft, self.hop)  # [B, C, F, n_fft]
        mag = torch.fft.rfft(frames * self.window.double(), dim=-1).abs().mean(dim=1)
        env = torch.log10((mag @ self.fb.double().T).clamp_min(self.floor)).to(wav.dtype)
        return env.transpose(1, 2), x[..., x.shape[-1] - self.history :]


class EnvelopeCoder(nn.Module):
    """The envelope's own residual VQ (fitted by k-means on corpus frames, then fixed),
    plain or predictive (``prediction`` > 0), and the 1×1 conv that adds the decoded
    envelope to the decoder's latent input.

    The conv starts at zero, so a decoder warm-started from a model without an envelope
    starts from exactly what that model's latent gives it. A predictive coder's state
    between the pieces of a stream is its last decoded frame ([B, bands], float64).
    """

    def __init__(
        self,
        sample_rate: int,
        hop: int,
        latent_dim: int,
        bands: int,
        codebooks: int,
        size: int,
        n_fft: int = 640,
        prediction: float = 0.0,
    ) -> None:
        super().__init__()
        if not 0.0 <= prediction < 1.0:
            raise ValueError(f"envelope prediction {prediction} is not in [0, 1)")
        self.codebooks = codebooks
        self.prediction = prediction
        self.analysis = SpectralEnvelope(sample_rate, hop, bands, n_fft)
        self.quantizer = ResidualVectorQuantizer(bands, codebooks, size)
        self.to_latent = nn.Conv1d(bands, latent_dim, 1)
        nn.init.zeros_(self.to_latent.weight)
        nn.init.zeros_(self.to_latent.bias)
        if prediction:  # the mean envelope the prediction decays to
            self.register_buffer("mean", torch.zeros(bands))
        self._books: list[np.ndarray] | None = None  # float64 codebooks, for encode

    def _load_from_state_dict(self, *args, **kwargs) -> None:
        self._books = None  # new codebooks: the float64 copies are stale
        super()._load_from_state_dict(*args, **kwargs)

    def _codebooks(self) -> list[np.ndarray]:
        if self._books is None:
            self._books = [layer.embed.double().numpy() for layer in self.quantizer.layers]
        return self._books

    @torch.no_grad()
    def fit(self, sequences: Tensor, iters: int = 20, closed_loop_stages: int = 4) -> None:
        """k-means, stage by stage on the residuals, over envelope sequences [N, bands, F]
        (a plain coder also takes frames [N, bands]).

        A predictive coder fits its mean and then its stages on the open-loop residuals
        (each frame less its prediction from the true last frame), then once more on
        those mixed with the residuals left by its own decoded history at
        ``closed_loop_stages`` stages (what it will meet when coding)."""
        self._books = None
        if sequences.dim() == 2 and not self.prediction:  # frames [N, bands], no order
            self._fit_stages(sequences.float(), iters)
            return
        seqs = sequences.double()
        frames = seqs.permute(0, 2, 1).reshape(-1, seqs.shape[1])
        if not self.prediction:
            self._fit_stages(frames.float(), iters)
            return
        self.mean.copy_(frames.mean(0).float())
        mean = self.mean.double()[None, :, None]
        prev = torch.cat([mean.expand(seqs.shape[0], -1, 1), seqs[:, :, :-1]], dim=2)
        open_loop = seqs - (mean + self.prediction * (prev - mean))
        open_loop = open_loop.permute(0, 2, 1).reshape(-1, seqs.shape[1])
        self._fit_stages(open_loop.float(), iters)
        codes, _ = self.encode(seqs.float(), closed_loop_stages)
        decoded, _ = self.decode(codes)
        prev = torch.cat([mean.expand(seqs.shape[0], -1, 1), decoded[:, :, :-1]], dim=2)
        closed = seqs - (mean + self.prediction * (prev - mean))
        closed = closed.permute(0, 2, 1).reshape(-1, seqs.shape[1])
        self._fit_stages(torch.cat([closed, open_loop[: len(open_loop) // 2]]).float(), iters)

    def _fit_stages(self, residual: Tensor, iters: int) -> None:
        self._books = None
        for layer in self.quantizer.layers:
            centres = _kmeans(residual, self.quantizer.codebook_size, iters)
            layer.embed.copy_(centres)
            layer.restart_statistics()
            residual = residual - layer.decode(layer.encode(residual))

    @torch.no_grad()
    def encode(
        self, env: Tensor, n_q: int, state: Tensor | None = None, beam: int = 1
    ) -> tuple[Tensor, Tensor | None]:
        """envelope [B, bands, F] → (codes [B, min(n_q, codebooks), F], the state for
        the stream's next piece).

        The nearest codewords are found in float64 (the learned RVQ's float32 scores
        can differ in their last bit with the number of frames in a call, and then flip
        a near tie: a streamed file would not be the whole file's). A predictive coder
        goes frame by frame, since each frame's prediction is the last one's decoding;
        its stages are searched with a ``beam`` (neucomp.nn.search; 1: greedy)."""
        k = min(n_q, self.codebooks)
        b, d, f = env.shape
        if not self.prediction:
            residual = env.double().permute(0, 2, 1).reshape(b * f, d)
            codes = []
            for layer in self.quantizer.layers[:k]:
                embed = layer.embed.double()
                idx = (residual @ embed.T * 2 - (embed**2).sum(1)).argmax(1)
                residual = residual - embed[idx]
                codes.append(idx)
            return torch.stack(codes).reshape(k, b, f).transpose(0, 1), state
        books = self._codebooks()[:k]
        norms = [(book**2).sum(1) for book in books]
        frames = env.double().permute(2, 0, 1).numpy()  # [F, B, bands]
        mean, rho = self.mean.double().numpy(), self.prediction
        prev = np.broadcast_to(mean, (b, d)) if state is None else state.numpy()
        out = np.empty((f, k, b), np.int64)
        for t in range(f):
            guess = mean + rho * (prev - mean)
            residual = frames[t] - guess
            if beam > 1:
                out[t], coded = beam_search(residual, books, norms, beam)
            else:  # greedy: kept as it was, so its codes stay bit for bit
                coded = np.zeros((b, d))
                for j, (book, norm) in enumerate(zip(books, norms, strict=True)):
                    idx = (residual @ book.T * 2 - norm).argmax(1)
                    residual = residual - book[idx]
                    coded = coded + book[idx]
                    out[t, j] = idx
            prev = guess + coded
        codes = torch.from_numpy(np.ascontiguousarray(out.transpose(2, 1, 0)))
        return codes, torch.from_numpy(np.array(prev))

    def decode(self, codes: Tensor, state: Tensor | None = None) -> tuple[Tensor, Tensor | None]:
        """envelope codes [B, K, F] (K ≥ 1) → (the decoded envelope [B, bands, F], float32;
        the state for the stream's next piece)."""
        if not self.prediction:
            return self.quantizer.decode(codes), state
        # the same float64 sums in the same order as encode, so both see the same frames
        books = self._codebooks()
        idx = codes.numpy()
        coded = books[0][idx[:, 0]]  # [B, F, bands]
        for j in range(1, idx.shape[1]):
            coded = coded + books[j][idx[:, j]]
        b, f, d = coded.shape
        mean, rho = self.mean.double().numpy(), self.prediction
        prev = np.broadcast_to(mean, (b, d)) if state is None else state.numpy()
        out = np.empty((b, f, d))
        for t in range(f):
            prev = mean + rho * (prev - mean) + coded[:, t]
            out[:, t] = prev
        env = torch.from_numpy(out).permute(0, 2, 1).float()
        return env, torch.from_numpy(np.array(prev))

    def latent(self, env: Tensor) -> Tensor:
        """A decoded envelope [B, bands, F] → its share of the latent [B, latent_dim, F]."""
        return self.to_latent(env)


def alternate_layout(n_codebooks: int) -> str:
    """The default layout: envelope and learned codebooks alternate, the envelope's first."""
    return ("el" * n_codebooks)[:n_codebooks]


def _layout(n_q: int, layout: str) -> str:
    layout = layout or alternate_layout(n_q)
    if len(layout) < n_q:
        raise ValueError(f"the codebook layout '{layout}' has no room for {n_q} codebooks")
    return layout[:n_q]


def envelope_slots(n_q: int, layout: str = "") -> tuple[int, int]:
    """How many of a stream's first ``n_q`` codebooks are the envelope's and how many the
    learned RVQ's."""
    head = _layout(n_q, layout)
    return head.count("e"), head.count("l")


def interleave(envelope: Tensor, learned: Tensor, layout: str = "") -> Tensor:
    """Envelope codes [B, E, F] and learned codes [B, L, F] → the stream's codes
    [B, E + L, F], each in its layout slots (by default envelope 0, learned 0, …)."""
    b, e, f = envelope.shape
    head = _layout(e + learned.shape[1], layout)
    if head.count("e") != e:
        raise ValueError(f"{e} envelope codebooks do not fit the layout '{head}'")
    slots = torch.tensor([c == "e" for c in head])
    out = envelope.new_empty(b, len(head), f)
    out[:, slots], out[:, ~slots] = envelope, learned
    return out


def split(codes: Tensor, layout: str = "") -> tuple[Tensor, Tensor]:
    """A stream's codes [B, K, F] → (envelope codes, learned codes)."""
    slots = torch.tensor([c == "e" for c in _layout(codes.shape[1], layout)])
    return codes[:, slots], codes[:, ~slots]


class EnvelopeEqualiser:
    """Equalises a decoder's output, frame by frame, to the transmitted envelope.

    For each frame, the output's own envelope is measured on the window the encoder
    measured the input's on; each band's gain is the ratio of the two (within ±30 dB),
    spread over the STFT bins by the same triangles, and the equalised windows are
    overlap-added. A frame's samples are final once the next frame's window is in, so
    ``push`` returns one frame less than it is given and ``flush`` the last one, which
    keeps the last gains: over a stream, exactly ``frames * hop`` samples come out.
    """

    MAX_LOG_GAIN = 1.5  # ±30 dB: a band the decoder left silent is not blown up to noise

    def __init__(self, analysis: SpectralEnvelope, channels: int, log_spread: bool = False) -> None:
        if analysis.n_fft != 2 * analysis.hop:
            raise ValueError("the equaliser overlap-adds Hann windows of two hops")
        self.analysis = analysis
        self.channels = channels
        # Spread the band gains over the bins as a weighted mean of their logs (a
        # geometric mean) rather than of the gains: between two bands that disagree the
        # linear mean follows the louder gain, the log mean runs straight in dB (E19).
        self.log_spread = log_spread
        # Each bin's gain: the mean of its bands' gains, weighted by the triangles; the
        # bins no triangle reaches (0 Hz, Nyquist) take their nearest covered bin's.
        cover = analysis.fb.sum(0)
        spread = analysis.fb / cover.clamp_min(1e-6)  # [bands, bins]
        covered = torch.nonzero(cover > 1e-6).flatten()
        nearest = covered[(torch.arange(cover.numel())[:, None] - covered).abs().argmin(1)]
        self.spread = spread[:, nearest]
        self._reset()

    def _reset(self) -> None:
        """A new stream."""
        self.past: Tensor | None = None  # the last hop of output, [B, C, hop]
        self.pending: Tensor | None = None  # the overlap-add tail still open, [B, C, hop]
        self.last_gain: Tensor | None = None  # the last frame's gains, [B, 1, 1, bins]

    def _gains(self, frames: Tensor, env: Tensor) -> tuple[Tensor, Tensor]:
        """Windowed frames [B, C, F, n_fft] and the sent envelope [B, bands, F] → their
        spectra [B, C, F, bins] and per-bin gains [B, 1, F, bins]."""
        spec = torch.fft.rfft(frames, dim=-1)
        mono = spec.abs().mean(dim=1)  # the envelope is one for all channels
        own = torch.log10((mono @ self.analysis.fb.T).clamp_min(self.analysis.floor))
        log_gain = (env.transpose(1, 2) - own).clamp(-self.MAX_LOG_GAIN, self.MAX_LOG_GAIN)
        if self.log_spread:
            gain = 10.0 ** (log_gain @ self.spread)  # [B, F, bins]
        else:
            gain = (10.0**log_gain) @ self.spread
        return spec, gain[:, None]

    def _overlap_add(self, spec: Tensor, gain: Tensor) -> Tensor:
        """[B, C, F, bins] spectra and their gains → F hops of output [B, C, F * hop],
        the first hop completed with the open tail, the last hop's tail left open."""
        hop = self.analysis.hop
        pieces = torch.fft.irfft(spec * gain, n=self.analysis.n_fft, dim=-1)
        heads, tails = pieces[..., :hop], pieces[..., hop:]
        b, c, f, _ = pieces.shape
        opened = torch.zeros(b, c, 1, hop) if self.pending is None else self.pending[:, :, None]
        out = heads + torch.cat([opened, tails[:, :, :-1]], dim=2)
        self.pending = tails[:, :, -1]
        return out.reshape(b, c, f * hop)

    def push(self, y: Tensor, env: Tensor) -> Tensor:
        """Decoder output [B, C, F * hop] and the decoded envelope [B, bands, F] → the
        equalised samples now final: F hops, from the frame before this push's first
        (F - 1 on a stream's first push, whose frame 0 window holds the zero history)."""
        hop = self.analysis.hop
        b, c, n = y.shape
        if n == 0:
            return y
        past = y.new_zeros(b, c, hop) if self.past is None else self.past
        x = torch.cat([past, y], dim=-1)
        self.past = x[..., -hop:]
        frames = x.unfold(-1, self.analysis.n_fft, hop) * self.analysis.window
        spec, gain = self._gains(frames, env)
        self.last_gain = gain[:, :, -1:]
        first = self.pending is None
        out = self._overlap_add(spec, gain)
        # one hop late: a push gives the frames from the one before its first, and a
        # stream's first push has no frame before its first (that hop is the history)
        return out[..., hop:] if first else out

    def flush(self, batch: int = 1) -> Tensor:
        """The last frame's samples: its window's second half, equalised with the last
        gains against a virtual next window over it and the silence after the stream."""
        if self.pending is None or self.past is None or self.last_gain is None:
            self._reset()
            return torch.zeros(batch, self.channels, 0)
        hop = self.analysis.hop
        x = torch.cat([self.past, torch.zeros_like(self.past)], dim=-1)[:, :, None]
        spec = torch.fft.rfft(x * self.analysis.window, dim=-1)
        piece = torch.fft.irfft(spec * self.last_gain, n=self.analysis.n_fft, dim=-1)
        out = self.pending + piece[:, :, 0, :hop]
        self._reset()
        return out
