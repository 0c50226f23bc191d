"""The codec model: audio ⇄ RVQ codes, whole-signal or streaming; model files and hashes.

A model file (`models/<name>.pt`) holds the config needed to rebuild the network, the
inference weights (fp16, weight norm folded in) and a sha256 over both. The hash goes
into every .ecdc header, so a file is only ever decoded by the weights that made it.
"""

from __future__ import annotations

import copy
import hashlib
import io
import json
import math
import os
from dataclasses import asdict, dataclass, field
from pathlib import Path

import torch
from torch import Tensor, nn
from torch.nn.utils import parametrize

from neucomp.errors import ModelError, UsageError
from neucomp.nn.framedecoder import (
    FrameDecoder,
    FrameDecoderConfig,
    FrameEncoder,
    FrameEncoderConfig,
)
from neucomp.nn.quantizer import ResidualVectorQuantizer
from neucomp.nn.seanet import SEANetConfig, SEANetDecoder, SEANetEncoder

DEFAULT_MODEL = "neucomp_24khz"
MODEL_FILE_FORMAT = "neucomp-model"
MODEL_FILE_VERSION = 1


@dataclass
class CodecConfig:
    """Everything needed to rebuild a Codec; stored as JSON in the model file."""

    name: str = DEFAULT_MODEL
    sample_rate: int = 24000
    seanet: SEANetConfig = field(default_factory=SEANetConfig)
    n_codebooks: int = 32
    codebook_size: int = 1024
    # Bandwidths (kbps) offered to users; each must map to a whole number of codebooks.
    bandwidths: list[float] = field(default_factory=lambda: [1.5, 3.0, 6.0, 12.0, 24.0])
    # "seanet": the mirrored SEANet decoder; "frame": ConvNeXt at the frame rate + iSTFT.
    decoder: str = "seanet"
    frame_decoder: dict = field(default_factory=dict)  # FrameDecoderConfig fields
    # "seanet": strided convs at the sample rate; "frame": causal STFT + ConvNeXt.
    encoder: str = "seanet"
    frame_encoder: dict = field(default_factory=dict)  # FrameEncoderConfig fields

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
        raise UsageError(f"unsupported bandwidth {bandwidth:g} kbps (choose one of {offered})")

    def bandwidth_for(self, n_codebooks: int) -> float:
        return n_codebooks * self.frame_rate * self.bits_per_codebook / 1000

    def to_dict(self) -> dict:
        return asdict(self)

    @classmethod
    def from_dict(cls, d: dict) -> CodecConfig:
        d = dict(d)
        d["seanet"] = SEANetConfig(**d.get("seanet", {}))
        return cls(**d)


def _frame_config(config: CodecConfig, cls: type, fields: dict):
    """A frame-rate encoder/decoder config: shapes shared with the codec, then `fields`."""
    shared = {
        "latent_dim": config.seanet.latent_dim,
        "hop": config.hop_length,
        "channels": config.channels,
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
        self.config = config
        self.encoder = make_encoder(config)
        self.decoder = make_decoder(config)
        self.quantizer = ResidualVectorQuantizer(
            config.seanet.latent_dim, config.n_codebooks, config.codebook_size
        )
        self.weights_hash: str = ""

    @property
    def hop_length(self) -> int:
        return self.config.hop_length

    def pad_to_frames(self, wav: Tensor) -> Tensor:
        """Zero-pad the end of wav [B, C, T] to a whole number of frames."""
        extra = (-wav.shape[-1]) % self.hop_length
        return torch.nn.functional.pad(wav, (0, extra)) if extra else wav

    def forward(self, wav: Tensor, n_q: int) -> tuple[Tensor, Tensor, Tensor]:
        """Training pass: wav [B, C, T] → (reconstruction [B, C, T'], codes, commit loss)."""
        z, _ = self.encoder(self.pad_to_frames(wav))
        q, codes, commit = self.quantizer(z, n_q)
        y, _ = self.decoder(q)
        return y, codes, commit

    @torch.no_grad()
    def encode(self, wav: Tensor, n_q: int) -> Tensor:
        """wav [B, C, T] → codes [B, n_q, ceil(T / hop)]."""
        z, _ = self.encoder(self.pad_to_frames(wav))
        return self.quantizer.encode(z, n_q)

    @torch.no_grad()
    def decode(self, codes: Tensor) -> Tensor:
        """codes [B, K, F] → wav [B, C, F * hop]."""
        y, _ = self.decoder(self.quantizer.decode(codes))
        return y

    def stream_encoder(self, n_q: int) -> StreamingEncoder:
        return StreamingEncoder(self, n_q)

    def stream_decoder(self) -> StreamingDecoder:
        return StreamingDecoder(self)


class StreamingEncoder:
    """Encodes audio pushed in arbitrary pieces; whole frames out as soon as possible."""

    def __init__(self, codec: Codec, n_q: int) -> None:
        self.codec = codec
        self.n_q = n_q
        self.state = None
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
        return self.codec.quantizer.encode(z, self.n_q)


class StreamingDecoder:
    """Decodes codes pushed a few frames at a time, carrying the decoder's state.

    A decoder with look-ahead (the frame decoder's overlap-add) holds back its last
    samples until more frames or `flush` arrive; the SEANet decoder holds back nothing.
    Over a whole stream, the pushes plus the flush give exactly `frames * hop` samples.
    """

    def __init__(self, codec: Codec) -> None:
        self.codec = codec
        self.state = None
        self.streams = hasattr(codec.decoder, "stream")

    @torch.no_grad()
    def push(self, codes: Tensor) -> Tensor:
        """codes [B, K, f] → wav [B, C, ≤ f * hop] (what is final so far)."""
        if codes.shape[-1] == 0:
            return torch.zeros(codes.shape[0], self.codec.config.channels, 0)
        latent = self.codec.quantizer.decode(codes)
        if self.streams:
            y, self.state = self.codec.decoder.stream(latent, self.state)
        else:
            y, self.state = self.codec.decoder(latent, self.state)
        return y

    @torch.no_grad()
    def flush(self, batch: int = 1) -> Tensor:
        """The samples held back so far; the decoder then starts a new stream."""
        if not self.streams:
            return torch.zeros(batch, self.codec.config.channels, 0)
        y = self.codec.decoder.stream_flush(self.state, batch)
        self.state = None
        return y


# ---------------------------------------------------------------------------------------
# Model files


def models_dir() -> Path:
    """Where shipped models live: $NEUCOMP_MODEL_DIR, else <repo>/models."""
    env = os.environ.get("NEUCOMP_MODEL_DIR")
    if env:
        return Path(env)
    return Path(__file__).resolve().parent.parent / "models"


def _hash_weights(config: dict, state: dict[str, Tensor]) -> str:
    h = hashlib.sha256()
    h.update(json.dumps(config, sort_keys=True).encode())
    for key in sorted(state):
        t = state[key].contiguous().cpu()
        h.update(key.encode())
        h.update(str(t.dtype).encode())
        h.update(str(tuple(t.shape)).encode())
        h.update(t.view(torch.uint8).numpy().tobytes() if t.numel() else b"")
    return h.hexdigest()


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


def _inference_state(codec: Codec) -> dict[str, Tensor]:
    """Weights and codebooks only (EMA statistics are training state), in fp16."""
    keep = {}
    for key, t in codec.state_dict().items():
        if key.endswith(("cluster_size", "embed_sum", "initialized")):
            continue
        keep[key] = t.detach().to(torch.float16) if t.is_floating_point() else t.detach()
    return keep


def save_model(codec: Codec, path: str | Path) -> str:
    """Write an inference model file (atomic) and return its hash."""
    plain = inference_copy(codec)
    config = plain.config.to_dict()
    state = _inference_state(plain)
    digest = _hash_weights(config, state)
    payload = {
        "format": MODEL_FILE_FORMAT,
        "version": MODEL_FILE_VERSION,
        "config": config,
        "state_dict": state,
        "hash": digest,
    }
    from neucomp.audio.writers import atomic_write

    with atomic_write(path) as fp:
        torch.save(payload, fp)
    return digest


def resolve_model_path(name_or_path: str | Path | None) -> Path:
    """A model name (looked up in models_dir()) or a path to a model file: for names the
    user gives (--model, the Python API), never for names read from a .ecdc file."""
    if name_or_path is None:
        name_or_path = DEFAULT_MODEL
    candidate = Path(name_or_path)
    if candidate.suffix == ".pt" or candidate.is_file():
        if not candidate.is_file():
            raise ModelError(f"model file not found: {candidate}")
        return candidate
    return installed_model_path(str(name_or_path))


def installed_model_path(name: str) -> Path:
    """The file of the installed model ``name``: only ever inside models_dir()."""
    path = models_dir() / f"{name}.pt"
    if Path(name).name != name or name in ("", ".", "..") or not path.is_file():
        available = sorted(p.stem for p in models_dir().glob("*.pt"))
        hint = f" (available: {', '.join(available)})" if available else ""
        raise ModelError(f"model '{name}' is not installed in {models_dir()}{hint}")
    return path


def load_model(name_or_path: str | Path | None = None) -> Codec:
    """Load an inference model by name or path, verifying its hash."""
    path = resolve_model_path(name_or_path)
    try:
        payload = torch.load(io.BytesIO(path.read_bytes()), map_location="cpu", weights_only=True)
    except Exception as err:  # torch raises many types for a damaged file
        raise ModelError(f"cannot load model file {path}: {type(err).__name__}") from None
    if not isinstance(payload, dict) or payload.get("format") != MODEL_FILE_FORMAT:
        raise ModelError(f"{path} is not a neucomp model file")
    if payload.get("version") != MODEL_FILE_VERSION:
        raise ModelError(f"{path}: unsupported model file version {payload.get('version')}")
    config, state = payload["config"], payload["state_dict"]
    if _hash_weights(config, state) != payload["hash"]:
        raise ModelError(f"{path} is damaged: its weights do not match the recorded hash")
    codec = Codec(CodecConfig.from_dict(config))
    missing, unexpected = codec.load_state_dict(
        {k: v.float() if v.is_floating_point() else v for k, v in state.items()}, strict=False
    )
    missing = [k for k in missing if not k.endswith(("cluster_size", "embed_sum", "initialized"))]
    if missing or unexpected:
        raise ModelError(
            f"{path} does not fit its config (missing {missing[:3]}, extra {unexpected[:3]})"
        )
    codec.weights_hash = payload["hash"]
    return codec.eval()
