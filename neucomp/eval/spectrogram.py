"""Spectrogram sheets: one PNG per clip, its decodings side by side on one dB scale.

What a listener hears as haze, missing formants or tonal lines shows here at a glance.
matplotlib (Agg backend) is imported only when a sheet is drawn.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import numpy as np

from neucomp.audio.signal import to_mono
from neucomp.eval.metrics import MissingDependencyError

#: STFT size at 24 kHz (scaled with the rate); hop n_fft / 4, Hann window.
N_FFT = 1024
#: Colour range below the loudest bin of all panels, in dB.
DYNAMIC_RANGE_DB = 90.0


def power_db(x: np.ndarray, sample_rate: int, n_fft: int = N_FFT) -> np.ndarray:
    """Power spectrogram [bins, frames] in dB re a full-scale sine (floor −120 dB)."""
    a = to_mono(np.asarray(x, dtype=np.float64))
    n_fft = max(256, int(round(n_fft * sample_rate / 24000 / 2)) * 2)
    hop = n_fft // 4
    a = np.pad(a, (n_fft // 2, n_fft // 2 + (-len(a)) % hop))
    frames = np.lib.stride_tricks.sliding_window_view(a, n_fft)[::hop]
    window = np.hanning(n_fft + 1)[:-1]
    # Scaled so that a full-scale sine peaks at 0 dB.
    spec = np.fft.rfft(frames * window, axis=1) / (window.sum() / 2)
    return 10.0 * np.log10(np.abs(spec.T) ** 2 + 1e-12)


def write(
    path: str | Path,
    panels: Sequence[tuple[str, np.ndarray]],
    sample_rate: int,
    title: str = "",
    dynamic_range_db: float = DYNAMIC_RANGE_DB,
) -> None:
    """Draw `panels` ((label, audio) pairs, e.g. reference first) side by side as a PNG.

    All panels share one colour scale: the loudest bin of any panel down to
    `dynamic_range_db` below it, so a codec's added noise is as visible as its losses.
    Raises MissingDependencyError when matplotlib is absent.
    """
    if not panels:
        raise ValueError("nothing to draw")
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        raise MissingDependencyError(
            "spectrograms need matplotlib: pip install 'neucomp[eval]'"
        ) from None

    specs = [power_db(x, sample_rate) for _, x in panels]
    top = max(float(s.max()) for s in specs)
    extent_khz = sample_rate / 2000
    fig, axes = plt.subplots(
        1,
        len(panels),
        figsize=(2.6 * len(panels) + 0.8, 3.4),
        squeeze=False,
        sharey=True,
        layout="constrained",
    )
    image = None
    for ax, (label, x), spec in zip(axes[0], panels, specs, strict=True):
        seconds = len(np.asarray(x).reshape(-1)) / sample_rate
        image = ax.imshow(
            spec,
            origin="lower",
            aspect="auto",
            cmap="magma",
            vmin=top - dynamic_range_db,
            vmax=top,
            extent=(0.0, seconds, 0.0, extent_khz),
            interpolation="nearest",
        )
        ax.set_title(label, fontsize=9)
        ax.set_xlabel("s")
    axes[0][0].set_ylabel("kHz")
    fig.colorbar(image, ax=list(axes[0]), label="dB re full scale", pad=0.01, fraction=0.03)
    if title:
        fig.suptitle(title, fontsize=10)
    Path(path).parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(str(path), dpi=100)
    plt.close(fig)
