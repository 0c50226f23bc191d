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

from neucomp.nn.pitch import PitchConfig, yin


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
    # The harmonic path: a second spectrum, the predicted harmonic envelope times the
    # spectrum of a band-limited harmonic oscillator at a predicted f0 (phase carried
    # from frame to frame), added to the free magnitude-and-phase spectrum. Pitch and
    # phase coherence then come from the oscillator instead of being learned per bin.
    harmonic: bool = False
    # "add": free spectrum + harmonic envelope × oscillator; "phase": the free magnitude
    # with, per bin, a learned gate between the oscillator's phase and the free phase.
    harmonic_mode: str = "add"
    sample_rate: int = 24000
    harmonic_fmax: float = 10000.0  # harmonics above this are left out
    # f0 also read straight off the latent by one linear map: with the encoder's pitch
    # skip, pitch goes in and out of the latent through linear paths only.
    f0_skip: bool = False
    # The free phase counted from time zero instead of from each frame's start: frame f
    # is turned by 2π·k·f·hop / n_fft at bin k. A steady tone at a bin's centre then has
    # one constant predicted phase, which a network without a clock can output; in
    # per-frame terms it must advance by π·k/2 every frame, i.e. know f mod 4.
    global_phase: bool = False

    @property
    def n_fft(self) -> int:
        return 4 * self.hop

    @property
    def lookahead_frames(self) -> int:
        return 2


class CausalDepthwiseConv(nn.Module):
    """Per-channel conv over time, padded on the left (no look-ahead); `state` is the
    previous call's last kernel − 1 frames (None: the start of the signal)."""

    def __init__(self, dim: int, kernel: int) -> None:
        super().__init__()
        self.pad = kernel - 1
        self.conv = nn.Conv1d(dim, dim, kernel, groups=dim)

    def forward(self, x: Tensor, state: Tensor | None = None) -> tuple[Tensor, Tensor]:
        if state is None:
            state = x.new_zeros(x.shape[0], x.shape[1], self.pad)
        x = torch.cat([state, x], dim=-1)
        return self.conv(x), x[..., x.shape[-1] - self.pad :]


class ConvNeXtBlock(nn.Module):
    """Depthwise conv → LayerNorm → pointwise MLP (GELU) → layer scale, plus the input."""

    def __init__(self, dim: int, kernel: int, ff_mult: int, layer_scale: float) -> None:
        super().__init__()
        self.dwconv = CausalDepthwiseConv(dim, kernel)
        self.norm = nn.LayerNorm(dim)
        self.ff1 = nn.Linear(dim, ff_mult * dim)
        self.ff2 = nn.Linear(ff_mult * dim, dim)
        self.gamma = nn.Parameter(torch.full((dim,), layer_scale))

    def forward(self, x: Tensor, state: Tensor | None = None) -> tuple[Tensor, Tensor]:
        y, state = self.dwconv(x, state)  # x [B, D, F]
        y = self.ff2(F.gelu(self.ff1(self.norm(y.transpose(1, 2)))))
        return x + (self.gamma * y).transpose(1, 2), state


def harmonic_frames(f0: Tensor, phase0: Tensor, cfg: FrameDecoderConfig) -> tuple[Tensor, Tensor]:
    """The windowed spectra of a unit-amplitude harmonic oscillator, one per frame.

    f0 [N, F] in Hz, phase0 [N]: the fundamental's phase at frame 0's centre. Frame f is
    Σ_k cos(k·ψ(n)), k·f0 ≤ harmonic_fmax, with ψ linear in n at f0_f around the phase at
    its centre; centre phases follow the trapezoid rule, so neighbouring frames agree
    half-way between their centres. Returns (spectra [N, n_bins, F], scaled so a
    harmonic's peak is ≈ 1, and the phase at the last frame's centre [N]).
    """
    n_fft, hop, sr = cfg.n_fft, cfg.hop, cfg.sample_rate
    # In float64: a phase error δ becomes k·δ at harmonic k, and streamed pushes must
    # land on the same phases as one whole-signal call.
    f0d = f0.double()
    step = torch.pi * (f0d[:, :-1] + f0d[:, 1:]) * hop / sr  # centre-to-centre advance
    advance = F.pad(torch.cumsum(step, dim=1), (1, 0))
    centre = torch.remainder(phase0.double()[:, None] + advance, 2 * torch.pi)  # [N, F]
    n = torch.arange(n_fft, device=f0.device, dtype=torch.float64) - n_fft // 2
    psi = centre[..., None] + 2 * torch.pi * f0d[..., None] * n / sr  # [N, F, n_fft]
    k = torch.floor(cfg.harmonic_fmax / f0d).clamp_min(1)[..., None]
    # Σ_{k=1..K} cos(kψ) = sin((K + ½)ψ) / (2 sin(ψ/2)) − ½, and K where sin(ψ/2) ≈ 0.
    half = torch.sin(psi / 2)
    near = half.abs() < 1e-6
    wave = torch.where(
        near, k, torch.sin((k + 0.5) * psi) / (2 * torch.where(near, 1.0, half)) - 0.5
    ).to(f0.dtype)
    window = torch.hann_window(n_fft, device=f0.device, dtype=f0.dtype)
    spec = torch.fft.rfft(wave * window, dim=-1) / (n_fft / 4)
    return spec.transpose(1, 2), centre[:, -1]


@dataclass
class FrameStreamState:
    """Where a streaming decode stands: each block's conv context, and the overlap-add
    sums (signal, window²) over the positions not yet final, from `start` on (positions
    counted in the uncropped overlap-add buffer: frame g's window starts at g·hop)."""

    contexts: list[Tensor | None]
    frames: int = 0
    start: int = 0
    signal: Tensor | None = None  # [N, L]
    envelope: Tensor | None = None  # [1, L]
    # harmonic path: the last frame's f0 and the oscillator phase at its centre [N] (f64)
    last_f0: Tensor | None = None
    last_phase: Tensor | None = None


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
        if cfg.harmonic:
            # harmonic log envelope per bin and log2(f0 / 100 Hz), per channel; starts
            # ~40 dB below the free spectrum so a warm start begins where it was
            self.harmonic_head = nn.Linear(cfg.dim, cfg.channels * (n_bins + 1))
            with torch.no_grad():
                self.harmonic_head.weight.mul_(0.1)
                self.harmonic_head.bias.zero_()
                self.harmonic_head.bias.view(cfg.channels, n_bins + 1)[:, :n_bins] = -4.0
            if cfg.f0_skip:
                self.f0_from_latent = nn.Linear(cfg.latent_dim, cfg.channels)
                nn.init.zeros_(self.f0_from_latent.weight)
                nn.init.zeros_(self.f0_from_latent.bias)
        self.register_buffer("window", torch.hann_window(cfg.n_fft), persistent=False)
        # Set by a training pass: the predicted log2 f0 [B, C, F] (harmonic path only).
        self.last_log_f0: Tensor | None = None

    def spectrum(
        self,
        latent: Tensor,
        contexts: list[Tensor | None] | None = None,
        state: FrameStreamState | None = None,
        teacher_f0: Tensor | None = None,
    ) -> tuple[Tensor, list[Tensor | None]]:
        """latent [B, D, F] → (complex STFT frames [B, channels, n_bins, F], contexts).

        The harmonic path runs its oscillator at `teacher_f0` [B, C, F] (training: the
        reference's pitch) or else at its own predicted f0, continuing from `state`."""
        x = self.embed(latent)
        contexts = contexts or [None] * len(self.blocks)
        new_contexts: list[Tensor | None] = []
        for block, ctx in zip(self.blocks, contexts, strict=True):
            x, ctx = block(x, ctx)
            new_contexts.append(ctx)
        feats = self.norm(x.transpose(1, 2))  # [B, F, dim], shared by both heads
        h = self.head(feats)  # [B, F, channels * 2 * bins]
        b, f, _ = h.shape
        h = h.reshape(b, f, self.cfg.channels, 2, -1).permute(0, 2, 3, 4, 1)
        mag = torch.exp(h[:, :, 0].clamp(max=self.cfg.max_log_mag))
        phase = h[:, :, 1]
        if self.cfg.global_phase:
            phase = phase + self._frame_turn(f, 0 if state is None else state.frames, h)
        if not self.cfg.harmonic:
            return torch.polar(mag, phase), new_contexts
        rows, oscillator = self._harmonic(feats, latent, state, teacher_f0)
        if self.cfg.harmonic_mode == "phase":
            # one magnitude; per bin, a gate mixes the oscillator's phase and the free one
            gate = torch.sigmoid(rows)
            # the oscillator's phase where it has energy (its peaks are ≈ 1); far from a
            # harmonic its phase is numerical noise, so it fades out there instead
            unit = oscillator / torch.sqrt(oscillator.abs() ** 2 + 0.05**2)
            return mag * (
                gate * unit + (1 - gate) * torch.polar(torch.ones_like(mag), phase)
            ), new_contexts
        envelope = torch.exp(rows.clamp(max=self.cfg.max_log_mag))
        return torch.polar(mag, phase) + envelope * oscillator, new_contexts

    def _frame_turn(self, frames: int, first: int, like: Tensor) -> Tensor:
        """[bins, F]: the phase that takes bin k of frames first … first + F − 1 from
        time zero to each frame's start, 2π·k·f·hop / n_fft, reduced exactly (in
        integers) so that it stays small however long the stream."""
        cfg = self.cfg
        k = torch.arange(cfg.n_fft // 2 + 1, device=like.device)[:, None]
        f = torch.arange(first, first + frames, device=like.device)[None, :]
        turns = (k * ((f * cfg.hop) % cfg.n_fft)) % cfg.n_fft  # in units of 2π / n_fft
        return turns.to(like.dtype) * (2 * torch.pi / cfg.n_fft)

    def _harmonic(
        self,
        feats: Tensor,
        latent: Tensor,
        state: FrameStreamState | None,
        teacher_f0: Tensor | None,
    ) -> tuple[Tensor, Tensor]:
        """From the normalised features [B, F, dim] (and, with f0_skip, the latent): the
        harmonic head's per-bin rows [B, C, bins, F] (log envelope or gate logit) and the
        oscillator's spectra [B, C, bins, F] at the teacher's or predicted f0."""
        cfg = self.cfg
        b, f, _ = feats.shape
        c = cfg.channels
        h = self.harmonic_head(feats)  # [B, F, C * (bins + 1)]
        h = h.reshape(b, f, c, -1).permute(0, 2, 3, 1)  # [B, C, bins + 1, F]
        log_f0 = h[:, :, -1]
        if cfg.f0_skip:
            log_f0 = log_f0 + self.f0_from_latent(latent.transpose(1, 2)).transpose(1, 2)
        self.last_log_f0 = log_f0
        f0 = teacher_f0 if teacher_f0 is not None else 100.0 * torch.exp2(log_f0.detach())
        f0 = f0.reshape(b * c, f).clamp(40.0, 1000.0)
        if state is None or state.last_f0 is None:
            phase0 = f0.new_zeros(b * c)
        else:  # one more trapezoid step from the previous push's last frame
            step = torch.pi * (state.last_f0.double() + f0[:, 0]) * cfg.hop / cfg.sample_rate
            phase0 = torch.remainder(state.last_phase + step, 2 * torch.pi)
        spectra, last_phase = harmonic_frames(f0, phase0, cfg)
        if state is not None:
            state.last_f0, state.last_phase = f0[:, -1], last_phase
        return h[:, :, :-1], spectra.reshape(b, c, -1, f)

    def forward(
        self, latent: Tensor, state: None = None, teacher_f0: Tensor | None = None
    ) -> tuple[Tensor, None]:
        """Whole-signal decoding: [B, D, F] → [B, channels, F · hop] (no state)."""
        spec, _ = self.spectrum(latent, teacher_f0=teacher_f0)
        b, c, _, f = spec.shape
        return self.overlap_add(spec.reshape(b * c, -1, f)).reshape(b, c, -1), None

    def _fold(self, spec: Tensor) -> tuple[Tensor, Tensor]:
        """[N, n_bins, F] → the overlap-added windowed inverse FFT frames [N, L] and the
        summed squared window [1, L], L = (F − 1)·hop + n_fft, frame f at f·hop."""
        n_fft, hop = self.cfg.n_fft, self.cfg.hop
        n, _, f = spec.shape
        frames = torch.fft.irfft(spec, n=n_fft, dim=1) * self.window[:, None]
        size = (1, (f - 1) * hop + n_fft)
        signal = F.fold(frames, size, (1, n_fft), stride=(1, hop)).reshape(n, -1)
        w2 = (self.window**2)[None, :, None].expand(1, n_fft, f)
        envelope = F.fold(w2, size, (1, n_fft), stride=(1, hop)).reshape(1, -1)
        return signal, envelope

    @property
    def _crop(self) -> int:
        # Frame f's window starts at f·hop; its centre n_fft/2 must land on (f + ½)·hop.
        return self.cfg.n_fft // 2 - self.cfg.hop // 2

    def stream(
        self, latent: Tensor, state: FrameStreamState | None
    ) -> tuple[Tensor, FrameStreamState]:
        """Streaming decoding: the samples that are final once these frames are in.

        Overlap-add makes a sample final only when every window over it has arrived, so
        the output lags the input by up to `lookahead_frames`; `stream_flush` returns the
        rest at the end. Pushing the frames in any split gives the whole-signal output.
        """
        b, _, f = latent.shape
        c, hop = self.cfg.channels, self.cfg.hop
        if state is None:
            state = FrameStreamState(contexts=[None] * len(self.blocks))
        spec, state.contexts = self.spectrum(latent, state.contexts, state)
        local, local_env = self._fold(spec.reshape(b * c, -1, f))
        first = state.frames * hop  # where the first new window starts
        end = first + local.shape[-1]
        if state.signal is None:
            state.signal, state.envelope, state.start = local, local_env, first
        else:
            grow = end - (state.start + state.signal.shape[-1])
            signal = F.pad(state.signal, (0, grow))
            envelope = F.pad(state.envelope, (0, grow))
            offset = first - state.start
            signal[:, offset:] += local
            envelope[:, offset:] += local_env
            state.signal, state.envelope = signal, envelope
        state.frames += f
        return self._emit(state, state.frames * hop), state

    def stream_flush(self, state: FrameStreamState | None, batch: int = 1) -> Tensor:
        """The samples still held back at the end of the stream."""
        if state is None or state.signal is None:
            return torch.zeros(batch, self.cfg.channels, 0)
        return self._emit(state, self._crop + state.frames * self.cfg.hop)

    def _emit(self, state: FrameStreamState, final_end: int) -> Tensor:
        """Cut the positions [start, final_end) out of the sums, normalised, cropped."""
        assert state.signal is not None and state.envelope is not None
        lo = max(state.start, self._crop)
        if final_end <= lo:  # nothing final yet past the crop: keep the sums as they are
            return state.signal.new_zeros(
                state.signal.shape[0] // self.cfg.channels, self.cfg.channels, 0
            )
        hi = final_end
        a, z = lo - state.start, hi - state.start
        out = state.signal[:, a:z] / state.envelope[:, a:z].clamp_min(1e-3)
        state.signal, state.envelope = state.signal[:, z:], state.envelope[:, z:]
        state.start = hi
        n = out.shape[0] // self.cfg.channels
        return out.reshape(n, self.cfg.channels, -1)

    def overlap_add(self, spec: Tensor) -> Tensor:
        """[N, n_bins, F] → [N, F * hop]: windowed inverse FFT frames, overlap-added,
        divided by the summed squared window, frame f centred on output (f + ½)·hop."""
        out, env = self._fold(spec)
        a, z = self._crop, self._crop + spec.shape[-1] * self.cfg.hop
        return out[:, a:z] / env[:, a:z].clamp_min(1e-3)


# ----------------------------------------------------------------- the frame encoder


@dataclass
class FrameEncoderConfig:
    """A frame-rate encoder, the mirror of FrameDecoder: causal STFT frames (log
    magnitude and phase as cos/sin) → causal ConvNeXt blocks → latent."""

    latent_dim: int = 128
    dim: int = 256
    layers: int = 6
    ff_mult: int = 3
    kernel_size: int = 7
    hop: int = 320
    channels: int = 1
    # Two more features per frame: the YIN pitch (log2 f0 / 100 Hz) and periodicity, so
    # the pitch that the harmonic decoder needs is handed to the latent, not discovered.
    pitch_input: bool = False
    pitch_skip: bool = False  # the pitch features also added to the latent, linearly
    sample_rate: int = 24000

    @property
    def n_fft(self) -> int:
        return 4 * self.hop


class FrameEncoder(nn.Module):
    """Audio [B, channels, T] (T a multiple of hop) → latent [B, latent_dim, T / hop].

    Frame f analyses the n_fft samples that end where its hop ends, so the encoder
    never looks ahead; `state` carries the last n_fft − hop input samples and each
    block's conv context, which makes chunked encoding equal to whole-signal encoding.
    """

    def __init__(self, cfg: FrameEncoderConfig) -> None:
        super().__init__()
        self.cfg = cfg
        n_bins = cfg.n_fft // 2 + 1
        self.embed = nn.Conv1d(cfg.channels * 3 * n_bins, cfg.dim, 1)
        self.blocks = nn.ModuleList(
            ConvNeXtBlock(cfg.dim, cfg.kernel_size, cfg.ff_mult, 1.0 / cfg.layers)
            for _ in range(cfg.layers)
        )
        self.norm = nn.LayerNorm(cfg.dim)
        self.out = nn.Linear(cfg.dim, cfg.latent_dim)
        if cfg.pitch_input:
            self.pitch_embed = nn.Conv1d(cfg.channels * 2, cfg.dim, 1)
            nn.init.zeros_(self.pitch_embed.weight)  # a warm start begins where it was
            nn.init.zeros_(self.pitch_embed.bias)
        if cfg.pitch_skip:
            self.pitch_to_latent = nn.Linear(cfg.channels * 2, cfg.latent_dim)
            nn.init.zeros_(self.pitch_to_latent.weight)
            nn.init.zeros_(self.pitch_to_latent.bias)
        self.register_buffer("window", torch.hann_window(cfg.n_fft), persistent=False)

    def forward(self, wav: Tensor, state: list | None = None) -> tuple[Tensor, list]:
        b, c, t = wav.shape
        hop, n_fft = self.cfg.hop, self.cfg.n_fft
        history, contexts = (None, [None] * len(self.blocks)) if state is None else state
        if history is None:
            history = wav.new_zeros(b, c, n_fft - hop)
        x = torch.cat([history, wav], dim=-1)
        new_history = x[..., x.shape[-1] - (n_fft - hop) :]
        frames = x.reshape(b * c, -1).unfold(-1, n_fft, hop)  # [B*C, F, n_fft]
        spec = torch.fft.rfft(frames * self.window, dim=-1)  # [B*C, F, bins]
        mag = spec.abs()
        unit = spec / mag.clamp_min(1e-7)
        feats = torch.cat([torch.log(mag + 1e-5), unit.real, unit.imag], dim=-1)
        f = feats.shape[1]
        feats = feats.reshape(b, c, f, -1).permute(0, 1, 3, 2).reshape(b, -1, f)
        h = self.embed(feats)
        if self.cfg.pitch_input:
            f0, periodicity = yin(frames, PitchConfig(sample_rate=self.cfg.sample_rate))
            pitch = torch.stack([torch.log2(f0 / 100.0), periodicity], dim=-1)  # [B*C, F, 2]
            pitch = pitch.reshape(b, c, f, 2).permute(0, 1, 3, 2).reshape(b, -1, f)
            h = h + self.pitch_embed(pitch)
        else:
            pitch = None
        new_contexts = []
        for block, ctx in zip(self.blocks, contexts, strict=True):
            h, ctx = block(h, ctx)
            new_contexts.append(ctx)
        z = self.out(self.norm(h.transpose(1, 2))).transpose(1, 2)
        if self.cfg.pitch_skip and pitch is not None:
            z = z + self.pitch_to_latent(pitch.transpose(1, 2)).transpose(1, 2)
        return z, [new_history, new_contexts]
