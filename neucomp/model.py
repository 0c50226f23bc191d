"""The codec model: audio ⇄ RVQ codes ``[B, K, F]``, whole-signal or streaming.

:class:`CodecConfig` is everything needed to rebuild the network (stored as JSON in the
model file, see :mod:`neucomp.registry`), including the bandwidths the model offers and
the one check that a bandwidth is one of them (:meth:`CodecConfig.n_codebooks_for`).
"""

from __future__ import annotations

import copy
import math
from dataclasses import asdict, dataclass, field

import torch
from torch import Tensor, nn
from torch.nn.utils import parametrize

from neucomp import BANDWIDTHS, DEFAULT_MODEL
from neucomp.errors import ModelError, UsageError
from neucomp.nn.envelope import (
    EnvelopeCoder,
    EnvelopeEqualiser,
    envelope_slots,
    interleave,
    split,
)
from neucomp.nn.framedecoder import (
    FrameDecoder,
    FrameDecoderConfig,
    FrameEncoder,
    FrameEncoderConfig,
)
from neucomp.nn.pitch import PitchConfig, centred_frames, f0_contour, yin
from neucomp.nn.quantizer import ResidualVectorQuantizer
from neucomp.nn.seanet import SEANetConfig, SEANetDecoder, SEANetEncoder

# Buffers of the quantizer that only training updates: never stored in model files.
TRAINING_STATE = ("cluster_size", "embed_sum", "initialized")


# The encoder's default beams (Codec.envelope_beam / learned_beam; docs/EXPERIMENTS.md
# E20), chosen for what they buy on speech at 6 kbps against what they cost in encode
# time. The learned RVQ's search costs its beam times its stages, so its beam shrinks
# at the higher bandwidths to keep that product within LEARNED_SEARCH_BUDGET (8 at
# 3 and 6 kbps, 4 at 12, 2 at 24). The envelope's search runs frame by frame (each
# frame is predicted from the last decoded one), so even a small beam costs more there.
ENVELOPE_BEAM = 1
LEARNED_BEAM = 8
LEARNED_SEARCH_BUDGET = 32
# What `compress --effort` offers: (envelope beam, learned beam). "default" is the two
# above (or what a Codec's envelope_beam / learned_beam were set to).
SEARCH_EFFORTS = {"fast": (1, 1), "default": (ENVELOPE_BEAM, LEARNED_BEAM), "best": (16, 8)}


@dataclass
class CodecConfig:
    """Everything needed to rebuild a Codec; stored as JSON in the model file."""

    name: str = DEFAULT_MODEL
    sample_rate: int = 24000
    seanet: SEANetConfig = field(default_factory=SEANetConfig)
    n_codebooks: int = 32
    codebook_size: int = 1024
    # Bandwidths (kbps) offered to users; each must map to a whole number of codebooks.
    bandwidths: list[float] = field(default_factory=lambda: list(BANDWIDTHS))
    # "seanet": the mirrored SEANet decoder; "frame": ConvNeXt at the frame rate + iSTFT.
    decoder: str = "seanet"
    frame_decoder: dict = field(default_factory=dict)  # FrameDecoderConfig fields
    # "seanet": strided convs at the sample rate; "frame": causal STFT + ConvNeXt.
    encoder: str = "seanet"
    frame_encoder: dict = field(default_factory=dict)  # FrameEncoderConfig fields
    # A second decoder of the same type, for the chunks the encoder flagged as speech
    # (container version 4); the general decoder serves the rest (docs/EXPERIMENTS.md E17).
    speech_decoder: bool = False
    # The weights hashes of earlier models whose streams this one decodes: the same
    # encoder and RVQ, and their general decoder as its own, so what that decoder serves
    # comes out as before (a grafted speech decoder, neucomp.train.export). Their LM and
    # table files stay valid for it too.
    predecessors: list[str] = field(default_factory=list)
    # A coded spectral envelope (neucomp.nn.envelope, EXPERIMENTS E18): with this many
    # log-mel bands (0: none), every other codebook of a stream (0, 2, 4, …) codes the
    # causal envelope (its own RVQ of `envelope_codebooks` stages, on n_fft-sample
    # windows), and the decoder's output is equalised to it (`envelope_equalise`).
    envelope_bands: int = 0
    envelope_codebooks: int = 16
    envelope_n_fft: int = 640
    envelope_equalise: bool = True
    # Closed-loop DPCM of the envelope (neucomp.nn.envelope, E19): each frame predicted
    # from the last decoded one with this factor (0: each frame coded on its own).
    envelope_prediction: float = 0.0
    # Which stream codebooks are the envelope's ("e") and which are learned ("l"), one
    # letter each ("": they alternate, the envelope's first).
    envelope_layout: str = ""
    # The equaliser spreads band gains over the bins in the log domain (E19; False: as a
    # mean of the linear gains, as the session-15 weights do).
    envelope_log_spread: bool = False
    # The weights hashes of models whose streams are this model's networks without the
    # envelope (the model `add-envelope` started from): all codebooks learned, nothing
    # equalised. This model decodes them as that model did (Codec.without_envelope).
    plain_predecessors: list[str] = field(default_factory=list)
    # The weights hashes of models with these networks and another envelope coder (its
    # envelope_* settings here; its codebooks in the model's `past_envelopes`), whose
    # streams this model decodes as they did (Codec.predecessor_view).
    envelope_predecessors: dict[str, dict] = field(default_factory=dict)

    @property
    def channels(self) -> int:
        return self.seanet.channels

    @property
    def hop_length(self) -> int:
        return math.prod(self.seanet.ratios)

    @property
    def frame_rate(self) -> float:
        return self.sample_rate / self.hop_length

    @property
    def bits_per_codebook(self) -> int:
        return int(math.log2(self.codebook_size))

    def n_codebooks_for(self, bandwidth: float) -> int:
        """Number of codebooks that gives `bandwidth` kbps; UsageError if not offered."""
        for bw in self.bandwidths:
            if abs(bw - bandwidth) < 1e-6:
                per_codebook = self.frame_rate * self.bits_per_codebook / 1000
                return int(round(bw / per_codebook))
        offered = ", ".join(f"{b:g}" for b in self.bandwidths)
        raise UsageError(
            f"unsupported bandwidth {bandwidth:g} kbps for model '{self.name}' "
            f"(it offers {offered})"
        )

    def check(self) -> None:
        """ModelError unless every offered bandwidth is a whole number of codebooks (at
        this frame rate and codebook size) that the quantizer has."""
        if self.envelope_bands:
            layout = self.envelope_layout
            if layout and (len(layout) != self.n_codebooks or set(layout) - set("el")):
                raise ModelError(
                    f"model '{self.name}': the codebook layout '{layout}' is not "
                    f"{self.n_codebooks} letters e or l"
                )
            need = envelope_slots(self.n_codebooks, layout)[0]
            if self.envelope_codebooks < need:
                raise ModelError(
                    f"model '{self.name}': {self.n_codebooks} codebooks need {need} "
                    f"envelope codebooks, it has {self.envelope_codebooks}"
                )
        if self.envelope_bands and self.speech_decoder:
            raise ModelError(f"model '{self.name}': an envelope and a speech decoder")
        per_codebook = self.frame_rate * self.bits_per_codebook / 1000
        for bw in self.bandwidths:
            k = bw / per_codebook
            if abs(k - round(k)) > 1e-6 or not 1 <= round(k) <= self.n_codebooks:
                raise ModelError(
                    f"model '{self.name}': {bw:g} kbps is {k:g} codebooks at "
                    f"{self.frame_rate:g} frames/s × {self.bits_per_codebook} bits "
                    f"(it has {self.n_codebooks})"
                )

    def bandwidth_for(self, n_codebooks: int) -> float:
        return n_codebooks * self.frame_rate * self.bits_per_codebook / 1000

    def to_dict(self) -> dict:
        d = asdict(self)
        for key in (
            "speech_decoder",
            "predecessors",
            "envelope_bands",
            "plain_predecessors",
            "envelope_prediction",
            "envelope_layout",
            "envelope_predecessors",
            "envelope_log_spread",
        ):
            if not d[key]:
                # models without these keep the config (so the weights hash) they always had
                del d[key]
        if "envelope_bands" not in d:
            for key in ("envelope_codebooks", "envelope_n_fft", "envelope_equalise"):
                del d[key]
        return d

    @classmethod
    def from_dict(cls, d: dict) -> CodecConfig:
        d = dict(d)
        d["seanet"] = SEANetConfig(**d.get("seanet", {}))
        return cls(**d)


def _envelope_coder(config: CodecConfig) -> EnvelopeCoder:
    return EnvelopeCoder(
        config.sample_rate,
        config.hop_length,
        config.seanet.latent_dim,
        config.envelope_bands,
        config.envelope_codebooks,
        config.codebook_size,
        config.envelope_n_fft,
        config.envelope_prediction,
    )


def _predecessor_config(config: CodecConfig, weights_hash: str) -> CodecConfig:
    """The config of a predecessor: this one with the envelope settings it had (session
    15's defaults, then what envelope_predecessors stored for it)."""
    out = CodecConfig.from_dict(config.to_dict())
    out.envelope_prediction, out.envelope_layout = 0.0, ""
    out.envelope_log_spread = False
    for key, value in config.envelope_predecessors.get(weights_hash, {}).items():
        setattr(out, key, value)
    out.envelope_predecessors, out.plain_predecessors, out.predecessors = {}, [], []
    return out


def _frame_config(config: CodecConfig, cls: type, fields: dict):
    """A frame-rate encoder/decoder config: shapes shared with the codec, then `fields`."""
    shared = {
        "latent_dim": config.seanet.latent_dim,
        "hop": config.hop_length,
        "channels": config.channels,
        "sample_rate": config.sample_rate,
    }
    return cls(**{**shared, **fields})


def make_encoder(config: CodecConfig) -> nn.Module:
    if config.encoder == "seanet":
        return SEANetEncoder(config.seanet)
    if config.encoder == "frame":
        return FrameEncoder(_frame_config(config, FrameEncoderConfig, config.frame_encoder))
    raise ModelError(f"unknown encoder type {config.encoder!r}")


def make_decoder(config: CodecConfig) -> nn.Module:
    if config.decoder == "seanet":
        return SEANetDecoder(config.seanet)
    if config.decoder == "frame":
        return FrameDecoder(_frame_config(config, FrameDecoderConfig, config.frame_decoder))
    raise ModelError(f"unknown decoder type {config.decoder!r}")


class Codec(nn.Module):
    """SEANet encoder → RVQ → SEANet decoder."""

    def __init__(self, config: CodecConfig) -> None:
        super().__init__()
        config.check()
        self.config = config
        self.encoder = make_encoder(config)
        self.decoder = make_decoder(config)
        self.speech_decoder: nn.Module | None = None
        if config.speech_decoder:
            if config.decoder != "seanet":
                # switching warms the incoming decoder up on past codes, discarding its
                # output: only a decoder that holds no samples back can be switched so
                raise ModelError("a speech decoder needs the SEANet decoder type")
            self.speech_decoder = make_decoder(config)
        self.quantizer = ResidualVectorQuantizer(
            config.seanet.latent_dim, config.n_codebooks, config.codebook_size
        )
        self.envelope: EnvelopeCoder | None = None
        if config.envelope_bands:
            self.envelope = _envelope_coder(config)
        # the envelope coders of envelope_predecessors, by the first 16 hex of their hash
        self.past_envelopes = nn.ModuleDict(
            {
                h[:16]: _envelope_coder(_predecessor_config(config, h))
                for h in config.envelope_predecessors
            }
        )
        self.weights_hash: str = ""
        # The encoder's search (neucomp.nn.search): how many partial codings the beam
        # over the stages keeps, for the envelope's codes and for the learned RVQ's.
        # Encoder-side only (any beam's streams decode alike), so not in the config.
        self.envelope_beam = ENVELOPE_BEAM
        self.learned_beam = LEARNED_BEAM

    @property
    def hop_length(self) -> int:
        return self.config.hop_length

    @property
    def code_hashes(self) -> tuple[str, ...]:
        """The weights hashes whose streams (and LM and table files) this model takes:
        its own, then its predecessors', then those it decodes without its envelope."""
        return (
            self.weights_hash,
            *self.config.predecessors,
            *self.config.plain_predecessors,
            *self.config.envelope_predecessors,
        )

    @property
    def coder_hashes(self) -> tuple[str, ...]:
        """The weights hashes an LM or table file may name to code this model's streams:
        those with this model's codes (its own and its predecessors'). The streams of
        its plain predecessors are another layout, read with their own files."""
        return (self.weights_hash, *self.config.predecessors)

    def without_envelope(self, weights_hash: str) -> Codec:
        """This model's networks as the model ``weights_hash`` (one of its
        plain_predecessors) was: no envelope, every codebook learned, no equaliser. The
        networks are shared, not copied."""
        if weights_hash not in self.config.plain_predecessors:
            raise ModelError(f"model '{self.config.name}' was not made from {weights_hash[:12]}…")
        config = _predecessor_config(self.config, weights_hash)
        config.envelope_bands = 0
        return self._view(config, None, weights_hash)

    def predecessor_view(self, weights_hash: str) -> Codec:
        """This model as the model ``weights_hash`` was: the same networks and another
        envelope coder (an envelope_predecessor's, or none for a plain_predecessor)."""
        if weights_hash in self.config.plain_predecessors:
            return self.without_envelope(weights_hash)
        if weights_hash not in self.config.envelope_predecessors:
            raise ModelError(f"model '{self.config.name}' was not made from {weights_hash[:12]}…")
        config = _predecessor_config(self.config, weights_hash)
        return self._view(config, self.past_envelopes[weights_hash[:16]], weights_hash)

    def _view(
        self, config: CodecConfig, envelope: EnvelopeCoder | None, weights_hash: str
    ) -> Codec:
        """A model sharing this one's networks, with ``config`` and ``envelope``."""
        view = Codec.__new__(Codec)
        nn.Module.__init__(view)
        view.config = config
        view.encoder, view.decoder, view.quantizer = self.encoder, self.decoder, self.quantizer
        view.speech_decoder, view.envelope = self.speech_decoder, envelope
        view.past_envelopes = nn.ModuleDict()
        view.weights_hash = weights_hash
        return view.eval()

    def pad_to_frames(self, wav: Tensor) -> Tensor:
        """Zero-pad the end of wav [B, C, T] to a whole number of frames."""
        extra = (-wav.shape[-1]) % self.hop_length
        return torch.nn.functional.pad(wav, (0, extra)) if extra else wav

    def forward(
        self, wav: Tensor, n_q: int, teacher_f0: bool = True
    ) -> tuple[Tensor, Tensor, Tensor]:
        """Training pass: wav [B, C, T] → (reconstruction [B, C, T'], codes, commit loss).

        A harmonic frame decoder runs its oscillator at the reference's own pitch here
        (teacher forcing; else at its own prediction, as in inference) and leaves its f0
        loss in `self.aux_losses`."""
        wav = self.pad_to_frames(wav)
        z, _ = self.encoder(wav)
        if self.envelope is not None:  # some codebooks are the (fixed) envelope's
            layout = self.config.envelope_layout
            n_env, n_learned = envelope_slots(n_q, layout)
            env_codes, _ = self.envelope.encode(self.envelope.analysis(wav)[0], n_env)
            q = self.envelope.latent(self.envelope.decode(env_codes)[0])
            if n_learned:
                learned, codes, commit = self.quantizer(z, n_learned)
                q, codes = q + learned, interleave(env_codes, codes, layout)
            else:
                codes, commit = env_codes, z.new_zeros(())
        else:
            q, codes, commit = self.quantizer(z, n_q)
        self.aux_losses: dict[str, Tensor] = {}
        if getattr(getattr(self.decoder, "cfg", None), "harmonic", False):
            f0, voiced = self._reference_pitch(wav)
            y, _ = self.decoder(q, teacher_f0=f0 if teacher_f0 else None)
            err = (self.decoder.last_log_f0 - torch.log2(f0 / 100.0)).abs()
            self.aux_losses["f0"] = (err * voiced).sum() / voiced.sum().clamp_min(1.0)
        else:
            y, _ = self.decoder(q)
        return y, codes, commit

    def _reference_pitch(self, wav: Tensor) -> tuple[Tensor, Tensor]:
        """The pitch contour on the decoder's synthesis grid [B, C, F] and where it is
        voiced (a float mask): what the harmonic oscillator is taught to follow."""
        cfg = self.decoder.cfg
        pitch = PitchConfig(sample_rate=self.config.sample_rate)
        with torch.no_grad():
            f0, periodicity = yin(centred_frames(wav, cfg.hop, cfg.n_fft), pitch)
            voiced = periodicity > 1 - pitch.voiced_below
            return f0_contour(f0, voiced, pitch.default_f0), voiced.float()

    @torch.no_grad()
    def encode(self, wav: Tensor, n_q: int) -> Tensor:
        """wav [B, C, T] → codes [B, n_q, ceil(T / hop)]."""
        wav = self.pad_to_frames(wav)
        z, _ = self.encoder(wav)
        return self.codes_of(z, n_q, wav)[0]

    def codes_of(
        self,
        z: Tensor,
        n_q: int,
        wav: Tensor,
        envelope_past: tuple | None = None,
        effort: str = "default",
    ) -> tuple[Tensor, tuple | None]:
        """The encoder output z (and, with an envelope, the audio it came from) → codes
        [B, n_q, F], and the envelope's state for the next piece of a stream (the
        analysis's sample history and the envelope coder's state). ``effort`` (one of
        SEARCH_EFFORTS) sets the search's beams."""
        envelope_beam, learned_beam = self.search_beams(effort)
        if self.envelope is None:
            return self.quantizer.encode(z, n_q, self.learned_beam_for(n_q, learned_beam)), None
        history, coder_state = (None, None) if envelope_past is None else envelope_past
        env, history = self.envelope.analysis(wav, history)
        layout = self.config.envelope_layout
        n_env, n_learned = envelope_slots(n_q, layout)
        codes, coder_state = self.envelope.encode(env, n_env, coder_state, envelope_beam)
        if n_learned:
            beam = self.learned_beam_for(n_learned, learned_beam)
            learned = self.quantizer.encode(z, n_learned, beam)
            codes = interleave(codes, learned, layout)
        return codes, (history, coder_state)

    def search_beams(self, effort: str = "default") -> tuple[int, int]:
        """(envelope beam, learned beam) of an encoder ``effort`` (SEARCH_EFFORTS)."""
        if effort == "default":
            return self.envelope_beam, self.learned_beam
        if effort not in SEARCH_EFFORTS:
            offered = ", ".join(SEARCH_EFFORTS)
            raise ValueError(f"unknown effort '{effort}' (offered: {offered})")
        return SEARCH_EFFORTS[effort]

    def learned_beam_for(self, n_learned: int, beam: int | None = None) -> int:
        """The learned RVQ's beam (``beam``, default this codec's) for a search over
        `n_learned` stages, within LEARNED_SEARCH_BUDGET."""
        beam = self.learned_beam if beam is None else beam
        return max(1, min(beam, LEARNED_SEARCH_BUDGET // max(1, n_learned)))

    def split_codes(self, codes: Tensor) -> tuple[Tensor, Tensor]:
        """A stream's codes → (envelope codes, learned codes), by this model's layout."""
        return split(codes, self.config.envelope_layout)

    def decode_envelope(
        self, codes: Tensor, state: Tensor | None = None
    ) -> tuple[Tensor, Tensor | None]:
        """A stream's codes [B, K, F] → (the decoded envelope [B, bands, F], the state
        for the stream's next piece)."""
        assert self.envelope is not None
        return self.envelope.decode(self.split_codes(codes)[0], state)

    def decoder_input(self, codes: Tensor, env: Tensor | None = None) -> Tensor:
        """codes [B, K, F] (and, with an envelope, its decoding if already known) → the
        decoder's input latent [B, D, F] (differentiable in the envelope's projection,
        which decoder-only training learns)."""
        if self.envelope is None:
            return self.quantizer.decode(codes)
        learned = self.split_codes(codes)[1]
        if env is None:
            env = self.decode_envelope(codes)[0]
        latent = self.envelope.latent(env)
        if learned.shape[1]:
            latent = latent + self.quantizer.decode(learned)
        return latent

    @property
    def algorithmic_latency(self) -> int:
        """Samples from an input sample to the last output sample it changes: a causal
        encoder and decoder wait for the rest of the frame; the envelope's equaliser
        holds one frame more (its window reaches into the next frame)."""
        return self.hop_length * (2 if self.equaliser() is not None else 1)

    def equaliser(self) -> EnvelopeEqualiser | None:
        """A fresh equaliser for one stream of decoder output (None: the model has none)."""
        if self.envelope is None or not self.config.envelope_equalise:
            return None
        return EnvelopeEqualiser(
            self.envelope.analysis, self.config.channels, self.config.envelope_log_spread
        )

    @torch.no_grad()
    def decode(self, codes: Tensor) -> Tensor:
        """codes [B, K, F] → wav [B, C, F * hop]."""
        if self.envelope is None:
            return self.decoder(self.decoder_input(codes))[0]
        env = self.decode_envelope(codes)[0]
        y, _ = self.decoder(self.decoder_input(codes, env))
        equaliser = self.equaliser()
        if equaliser is None:
            return y
        return torch.cat([equaliser.push(y, env), equaliser.flush(y.shape[0])], dim=-1)

    def stream_encoder(self, n_q: int, effort: str = "default") -> StreamingEncoder:
        self.search_beams(effort)  # an unknown effort fails here, before any audio
        return StreamingEncoder(self, n_q, effort)

    def stream_decoder(self, speech: bool = False) -> StreamingDecoder:
        """A streaming decoder: the general one, or with ``speech`` the speech decoder
        (ModelError if the model has none)."""
        if not speech:
            return StreamingDecoder(self)
        if self.speech_decoder is None:
            raise ModelError(f"model '{self.config.name}' has no speech decoder")
        return StreamingDecoder(self, self.speech_decoder)


class StreamingEncoder:
    """Encodes audio pushed in arbitrary pieces; whole frames out as soon as possible."""

    def __init__(self, codec: Codec, n_q: int, effort: str = "default") -> None:
        self.codec = codec
        self.n_q = n_q
        self.effort = effort
        self.state = None
        self.envelope_past: tuple | None = None
        self.pending: Tensor | None = None

    @torch.no_grad()
    def push(self, wav: Tensor) -> Tensor:
        """wav [B, C, T] → codes [B, n_q, f] for every whole frame now available."""
        if self.pending is not None:
            wav = torch.cat([self.pending, wav], dim=-1)
        hop = self.codec.hop_length
        usable = wav.shape[-1] // hop * hop
        self.pending = wav[..., usable:]
        return self._run(wav[..., :usable])

    @torch.no_grad()
    def flush(self) -> Tensor:
        """Encode what is left, zero-padded to a whole frame (empty if nothing is left)."""
        pending, self.pending = self.pending, None
        if pending is None or pending.shape[-1] == 0:
            b = 1 if pending is None else pending.shape[0]
            return torch.zeros(b, self.n_q, 0, dtype=torch.long)
        return self._run(self.codec.pad_to_frames(pending))

    def _run(self, wav: Tensor) -> Tensor:
        if wav.shape[-1] == 0:
            return torch.zeros(wav.shape[0], self.n_q, 0, dtype=torch.long)
        z, self.state = self.codec.encoder(wav, self.state)
        codes, self.envelope_past = self.codec.codes_of(
            z, self.n_q, wav, self.envelope_past, self.effort
        )
        return codes


class StreamingDecoder:
    """Decodes codes pushed a few frames at a time, carrying the decoder's state.

    A decoder with look-ahead (the frame decoder's overlap-add) holds back its last
    samples until more frames or `flush` arrive; the SEANet decoder holds back nothing.
    Over a whole stream, the pushes plus the flush give exactly `frames * hop` samples.
    """

    def __init__(self, codec: Codec, decoder: nn.Module | None = None) -> None:
        self.codec = codec
        self.decoder = codec.decoder if decoder is None else decoder
        self.state = None
        self.streams = hasattr(self.decoder, "stream")
        self.equaliser = codec.equaliser()  # holds back a frame, like a look-ahead decoder
        self.envelope_state: Tensor | None = None  # a predictive envelope's last frame

    @torch.no_grad()
    def push(self, codes: Tensor) -> Tensor:
        """codes [B, K, f] → wav [B, C, ≤ f * hop] (what is final so far)."""
        if codes.shape[-1] == 0:
            return torch.zeros(codes.shape[0], self.codec.config.channels, 0)
        env = None
        if self.codec.envelope is not None:
            env, self.envelope_state = self.codec.decode_envelope(codes, self.envelope_state)
        latent = self.codec.decoder_input(codes, env)
        if self.streams:
            y, self.state = self.decoder.stream(latent, self.state)
        else:
            y, self.state = self.decoder(latent, self.state)
        if self.equaliser is not None:
            y = self.equaliser.push(y, env)
        return y

    @torch.no_grad()
    def flush(self, batch: int = 1) -> Tensor:
        """The samples held back so far; the decoder then starts a new stream."""
        self.envelope_state = None
        if self.equaliser is not None:
            self.state = None
            return self.equaliser.flush(batch)
        if not self.streams:
            return torch.zeros(batch, self.codec.config.channels, 0)
        y = self.decoder.stream_flush(self.state, batch)
        self.state = None
        return y


class SwitchedDecoder:
    """A model's general and speech decoders over one code stream, chunk by chunk.

    Register each chunk with :meth:`start_chunk` before pushing its codes. A chunk is
    decoded by the decoder its flag asks for; a decoder out of its turn does not run, so
    steady speech or steady music costs one decoder. At a switch the incoming decoder
    first runs, its output discarded, over the last ``warmup_frames`` frames of codes
    (a fresh state would start the chunk with a transient), and the output crossfades
    from the outgoing decoder to it over the chunk's first ``fade`` samples. The samples
    depend on the chunks' flags alone, not on how the pushes split the stream.
    """

    def __init__(self, codec: Codec, fade: int, warmup_frames: int = 75) -> None:
        self.decoders = {False: codec.stream_decoder(), True: codec.stream_decoder(speech=True)}
        self.fade = max(1, fade)
        self.warmup_frames = warmup_frames
        self.active: bool | None = None  # the decoder of the current chunk (speech or not)
        self.outgoing: bool | None = None  # the one fading out, if a fade is under way
        self.faded = 0  # samples of that fade done
        self.recent: Tensor | None = None  # the last warmup_frames frames of codes

    def start_chunk(self, speech: bool) -> None:
        if self.active is None or speech == self.active:
            self.active = speech  # a stream's first chunk starts as it means to go on
            return
        if self.outgoing is not None:  # a chunk shorter than the fade: that fade ends here
            self.decoders[self.outgoing].state = None
        incoming = self.decoders[speech]
        incoming.state = None
        if self.recent is not None:
            incoming.push(self.recent)
        self.outgoing, self.active, self.faded = self.active, speech, 0

    @torch.no_grad()
    def push(self, codes: Tensor) -> Tensor:
        """codes [B, K, f] → wav [B, C, f * hop]."""
        if self.active is None:
            raise RuntimeError("start_chunk() before the first push")
        y = self.decoders[self.active].push(codes)
        if self.outgoing is not None and y.shape[-1]:
            old = self.decoders[self.outgoing].push(codes)
            i = torch.arange(self.faded, self.faded + y.shape[-1], dtype=y.dtype)
            y = old + (y - old) * ((i + 1) / self.fade).clamp(max=1.0)
            self.faded += y.shape[-1]
            if self.faded >= self.fade:
                self.decoders[self.outgoing].state = None
                self.outgoing = None
        if codes.shape[-1]:
            both = codes if self.recent is None else torch.cat([self.recent, codes], dim=-1)
            self.recent = both[..., -self.warmup_frames :]
        return y

    @torch.no_grad()
    def flush(self, batch: int = 1) -> Tensor:
        """Nothing is held back (both are SEANet decoders); the stream starts anew."""
        for decoder in self.decoders.values():
            decoder.state = None
        self.active = self.outgoing = self.recent = None
        return torch.zeros(batch, self.decoders[False].codec.config.channels, 0)


# ---------------------------------------------------------------------------------------
# Inference weights (written to model files by neucomp.registry)


def inference_copy(codec: Codec) -> Codec:
    """A copy with weight norm folded into plain weights (faster, smaller to store)."""
    config = CodecConfig.from_dict(copy.deepcopy(codec.config.to_dict()))
    config.seanet.weight_norm = False
    out = Codec(config)
    state = {}
    with torch.no_grad():
        for name, module in codec.named_modules():
            prefix = f"{name}." if name else ""
            if parametrize.is_parametrized(module):
                for pname in module.parametrizations:
                    state[prefix + pname] = getattr(module, pname).detach().clone()
            for pname, param in module.named_parameters(recurse=False):
                state[prefix + pname] = param.detach().clone()
            for bname, buf in module.named_buffers(recurse=False):
                if bname not in module._non_persistent_buffers_set:  # e.g. an STFT window
                    state[prefix + bname] = buf.detach().clone()
    # Weight norm's own sub-modules hold the g/v factors already folded in above.
    out.load_state_dict({k: v for k, v in state.items() if ".parametrizations." not in k})
    out.weights_hash = codec.weights_hash
    return out.eval()


def inference_state(codec: Codec) -> dict[str, Tensor]:
    """Weights and codebooks only (EMA statistics are training state), in fp16."""
    keep = {}
    for key, t in codec.state_dict().items():
        if key.endswith(TRAINING_STATE):
            continue
        keep[key] = t.detach().to(torch.float16) if t.is_floating_point() else t.detach()
    return keep
