"""neucomp: a neural audio codec for the command line and for Python.

    import neucomp
    data = neucomp.compress(audio, 44100, bandwidth=6.0)   # audio: [T] or [C, T] float
    audio, rate = neucomp.decompress(data)                 # original rate, channels, length

Importing the package is cheap: torch and the model load only when first used.
"""

from __future__ import annotations

from importlib.metadata import PackageNotFoundError, version
from typing import TYPE_CHECKING

try:
    __version__ = version("neucomp")
except PackageNotFoundError:  # running from a source tree that was never installed
    __version__ = "0.0.0+unknown"

if TYPE_CHECKING:
    import numpy as np

    from neucomp.model import Codec

__all__ = [
    "BANDWIDTHS",
    "DEFAULT_BANDWIDTH",
    "DEFAULT_MODEL",
    "HQ_BANDWIDTHS",
    "HQ_MODEL",
    "MODELS",
    "MODEL_ALIASES",
    "__version__",
    "compress",
    "decompress",
    "load_model",
]

# The defaults, in one place and torch-free (the CLI's options and help need them
# before anything heavy loads). A model file's config lists the bandwidths it offers;
# these are what the shipped models offer and what a new CodecConfig starts from.
DEFAULT_MODEL = "neucomp_24khz"
BANDWIDTHS = (1.5, 3.0, 6.0, 12.0, 24.0)  # kbps; 2, 4, 8, 16, 32 codebooks at 24 kHz
DEFAULT_BANDWIDTH = 6.0
# The full-band stereo model (`--model 48khz`, `--hq`): 75 frames/s like the 24 kHz one,
# so 3 / 6 / 12 / 24 kbps are 4 / 8 / 16 / 32 codebooks for both channels together.
HQ_MODEL = "neucomp_48khz"
HQ_BANDWIDTHS = (3.0, 6.0, 12.0, 24.0)
# The project's models by name, what each is, and the short names users may give.
MODELS = {DEFAULT_MODEL: "24 kHz mono", HQ_MODEL: "48 kHz stereo"}
MODEL_ALIASES = {"24khz": DEFAULT_MODEL, "48khz": HQ_MODEL}


def compress(
    audio: np.ndarray,
    sample_rate: int,
    bandwidth: float = DEFAULT_BANDWIDTH,
    *,
    coder: str | None = None,
    lm: bool | None = None,
    model: str | None = None,
    content: str = "auto",
    effort: str = "default",
) -> bytes:
    """Compress float audio ``[T]`` or ``[C, T]`` in [-1, 1] to `.ecdc` bytes.

    ``coder`` is "plain", "fast" or "lm"; None (the default) is "fast" where the model's
    tables are installed, else "plain". ``lm=True`` / ``lm=False`` still mean "lm" /
    "plain". ``model`` is a name ("neucomp_24khz", the default; "neucomp_48khz" for
    full-band stereo; or their short names "24khz", "48khz") or a model file's path.
    ``content``: "auto" (each chunk judged speech or not), "speech" or "other"; the
    decoder postfilters the speech chunks. ``effort``: how hard the encoder searches
    for the codes: "fast" (greedy), "default" or "best" (slower, a little closer)."""
    from neucomp.api import compress as _compress

    return _compress(
        audio,
        sample_rate,
        bandwidth,
        coder=coder,
        lm=lm,
        model=model,
        content=content,
        effort=effort,
    )


def decompress(
    data: bytes,
    *,
    salvage: bool = False,
    model: str | None = None,
    postfilter: bool | None = None,
    speech_decoder: bool | None = None,
) -> tuple[np.ndarray, int]:
    """`.ecdc` bytes → ``(audio [C, T] float32, sample_rate)`` as the original was.
    ``postfilter``: the decoder's formant postfilter, for speech, on or off everywhere
    (None: the default, on the chunks the encoder flagged speech); ``speech_decoder``
    the same for a model's second decoder, trained for speech, where it has one."""
    from neucomp.api import decompress as _decompress

    return _decompress(
        data,
        salvage=salvage,
        model=model,
        postfilter=postfilter,
        speech_decoder=speech_decoder,
    )


def load_model(name: str | None = None) -> Codec:
    """A codec model by name ("neucomp_48khz", or the short "48khz") or path (None: the
    default 24 kHz model), cached."""
    from neucomp.registry import load_model as _load_model

    return _load_model(name)
