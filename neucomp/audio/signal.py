"""Signal rules shared by everything that touches audio: the one resampler (soxr, high
quality; streaming for the engine, whole-signal for the offline tools) and the one
channel rule.

Channel rule (:func:`to_model_channels` / :func:`from_model_channels`):

* mono model: every input is mixed down to the mean of its channels; on the way out the
  mono signal is copied to every original channel;
* stereo model: mono is duplicated to both sides, stereo passes through, more than two
  channels are folded onto two (even-numbered channels → left, odd-numbered → right,
  each side the mean of its channels); on the way out channel ``i`` gets side ``i % 2``
  and a mono original gets the mean of both sides.
"""

from __future__ import annotations

import numpy as np

RESAMPLE_QUALITY = "HQ"  # soxr's high quality: what every resampling in neucomp uses


class Resampler:
    """Streaming soxr resampler over ``[C, n]`` blocks; a no-op when the rates match."""

    def __init__(self, in_rate: int, out_rate: int, channels: int) -> None:
        self.channels = channels
        self._stream = None
        if in_rate != out_rate:
            import soxr

            self._stream = soxr.ResampleStream(
                in_rate, out_rate, channels, dtype="float32", quality=RESAMPLE_QUALITY
            )

    def push(self, block: np.ndarray, last: bool = False) -> np.ndarray:
        if self._stream is None:
            return block
        out = self._stream.resample_chunk(np.ascontiguousarray(block.T), last=last)
        return np.ascontiguousarray(out.T)

    def flush(self) -> np.ndarray:
        """The samples still held back by the filter; call once at the end."""
        return self.push(np.zeros((self.channels, 0), np.float32), last=True)


def resample(audio: np.ndarray, rate_in: int, rate_out: int) -> np.ndarray:
    """A whole ``[T]`` or ``[C, T]`` signal at ``rate_out`` (the same array at equal rates)."""
    if rate_in == rate_out:
        return audio
    import soxr

    x = np.asarray(audio)
    mono = x.ndim == 1  # soxr takes [T] or [T, C]
    out = soxr.resample(
        x if mono else np.ascontiguousarray(x.T), rate_in, rate_out, quality=RESAMPLE_QUALITY
    )
    return out if mono else np.ascontiguousarray(out.reshape(out.shape[0], -1).T)


def to_model_channels(block: np.ndarray, model_channels: int) -> np.ndarray:
    """Map ``[C, n]`` to the model's 1 or 2 channels (rule in the module docstring)."""
    c = block.shape[0]
    if c == model_channels:
        return block
    if model_channels == 1:
        return block.mean(axis=0, keepdims=True)
    if model_channels == 2:
        if c == 1:
            return np.concatenate([block, block], axis=0)
        return np.stack([block[0::2].mean(axis=0), block[1::2].mean(axis=0)])
    raise ValueError(f"models have 1 or 2 channels, not {model_channels}")


def from_model_channels(block: np.ndarray, channels: int) -> np.ndarray:
    """Map the model's ``[M, n]`` back to the original channel count."""
    m = block.shape[0]
    if m == channels:
        return block
    if channels == 1:
        return block.mean(axis=0, keepdims=True)
    return np.ascontiguousarray(block[[i % m for i in range(channels)]])


def fit_length(block: np.ndarray, length: int) -> np.ndarray:
    """Trim or zero-pad ``[C, n]`` to exactly ``length`` frames."""
    n = block.shape[1]
    if n >= length:
        return block[:, :length]
    return np.pad(block, ((0, 0), (0, length - n)))


def to_mono(audio: np.ndarray) -> np.ndarray:
    """``[C, T]`` (or ``[T]``) → mono ``[T]`` by the channel rule (the mean of the channels)."""
    x = np.asarray(audio)
    return x if x.ndim == 1 else to_model_channels(x, 1)[0]
