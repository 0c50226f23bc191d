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

__all__ = ["__version__", "compress", "decompress", "load_model"]


def compress(
    audio: np.ndarray,
    sample_rate: int,
    bandwidth: float = 6.0,
    *,
    lm: bool = False,
    model: str | None = None,
) -> bytes:
    """Compress float audio ``[T]`` or ``[C, T]`` in [-1, 1] to `.ecdc` bytes."""
    from neucomp.api import compress as _compress

    return _compress(audio, sample_rate, bandwidth, lm=lm, model=model)


def decompress(
    data: bytes, *, salvage: bool = False, model: str | None = None
) -> tuple[np.ndarray, int]:
    """`.ecdc` bytes → ``(audio [C, T] float32, sample_rate)`` as the original was."""
    from neucomp.api import decompress as _decompress

    return _decompress(data, salvage=salvage, model=model)


def load_model(name: str | None = None) -> Codec:
    """A codec model by name or path (None: the default 24 kHz model), cached."""
    from neucomp.loader import load_model as _load_model

    return _load_model(name)
