"""The models this process has loaded: codec models, LM coders and torch threads.

Each model and LM is loaded once per process and cached, so batch workers and repeated
API calls pay the load cost only once. :func:`model_for` and :func:`lm_coder` also check
that what is installed is what a stream was made with.
"""

from __future__ import annotations

import os
import sys
from typing import TYPE_CHECKING

from neucomp.errors import FormatError, ModelError, UsageError

if TYPE_CHECKING:
    from neucomp.container import Header
    from neucomp.model import Codec

_MODELS: dict[str, Codec] = {}  # loaded models by resolved path, one load per process
_LMS: dict[str, object] = {}  # LM coders likewise
_threads: int | None = None  # torch threads asked for by the CLI, applied when torch loads


def set_threads(threads: int) -> None:
    """Run inference on ``threads`` CPU threads (the CLI's --threads, default 1).

    torch is only imported once there is work to do, so that errors about bad inputs
    come back instantly; the setting is applied then.
    """
    global _threads
    _threads = threads
    if "torch" in sys.modules:
        sys.modules["torch"].set_num_threads(threads)


def load_model(name: str | os.PathLike | None = None) -> Codec:
    """The codec model called ``name`` (or at that path; None = the default 24 kHz model).

    Loaded once per process and cached, so batch workers and repeated API calls pay the
    load cost only once.
    """
    from neucomp.model import resolve_model_path

    path = resolve_model_path(name)
    key = str(path.resolve())
    if key not in _MODELS:
        from neucomp.model import load_model as _load

        if _threads is not None:
            set_threads(_threads)

        _MODELS[key] = _load(path)
    return _MODELS[key]


def model_for(header: Header, model: Codec | str | os.PathLike | None) -> Codec:
    """The model that made this stream (installed, or the one given by name or path),
    or a ModelError saying what is missing."""
    from neucomp.model import installed_model_path

    want = header.model_hash.hex()
    if isinstance(model, (str, os.PathLike)):
        model = load_model(model)
    if model is None:
        # A name read from a file is looked up in the models folder only, never as a path.
        try:
            path = installed_model_path(header.model_name)
        except ModelError:
            raise ModelError(
                f"this file needs model '{header.model_name}' with weights {want[:12]}…, "
                "which is not installed"
            ) from None
        model = load_model(path)
    if model.weights_hash != want:
        raise ModelError(
            f"this file was made by different weights of model '{header.model_name}' "
            f"(hash {want[:12]}…; installed: {model.weights_hash[:12]}…)"
        )
    cfg = model.config
    mismatch = [
        label
        for label, ours, theirs in (
            ("sample rate", cfg.sample_rate, header.model_sample_rate),
            ("channels", cfg.channels, header.model_channels),
            ("hop length", cfg.hop_length, header.hop_length),
            ("codebook size", cfg.codebook_size, header.codebook_size),
        )
        if ours != theirs
    ]
    if mismatch or header.num_codebooks > cfg.n_codebooks:
        raise FormatError(
            f"the header does not fit model '{cfg.name}' "
            f"({', '.join(mismatch) or 'number of codebooks'} differ)"
        )
    return model


def lm_coder(model: Codec, want_hash: bytes | None = None):
    """The LM range coder of ``model`` (``<models>/<name>.lm``), checked against the codec
    weights and, when decoding, against the LM hash the stream records."""
    try:
        from neucomp.coding.range import LMCoder, default_lm_path
    except ImportError:
        raise UsageError("the LM coder is not available in this installation") from None
    name = model.config.name
    path = default_lm_path(name)
    if not path.is_file():
        hint = f" with hash {want_hash.hex()[:12]}…" if want_hash else ""
        raise ModelError(f"the LM for model '{name}'{hint} is not installed ({path} is missing)")
    key = str(path.resolve())
    if key not in _LMS:
        _LMS[key] = LMCoder.load(path)
    coder = _LMS[key]
    coder.check_codec(model.weights_hash)
    if want_hash is not None and hash_bytes(coder.hash) != want_hash:
        raise ModelError(
            f"this file was coded with a different LM for model '{name}' "
            f"(hash {want_hash.hex()[:12]}…; installed: {hash_bytes(coder.hash).hex()[:12]}…)"
        )
    return coder


def check_options(model: str | os.PathLike | None, bandwidth: float, lm: bool) -> None:
    """Raise the error a compression with these options would give, without any audio."""
    codec = load_model(model)
    codec.config.n_codebooks_for(bandwidth)
    if lm:
        lm_coder(codec)


def hash_bytes(h: str | bytes) -> bytes:
    return bytes.fromhex(h) if isinstance(h, str) else bytes(h)
