"""Is this chunk speech? The encoder's content flag, which turns the decoder's postfilter on.

The formant postfilter (neucomp.audio.postfilter) raises speech PESQ-wb by 0.12 at
6 kbps but costs music 0.25 ViSQOL (docs/EXPERIMENTS.md E14), and a decoder cannot tell
one from the other in its own haze. The encoder sees the input, so it decides, one bit
per chunk (docs/FORMAT.md, version 4), with the classic speech/music cues (Scheirer and
Slaney, 1997): speech alternates voiced syllables and pauses about four times a second,
so its loudness is strongly modulated near 4 Hz, many of its frames are far below the
mean energy, and its spectrum swings between voiced (harmonic, low centroid) and
unvoiced (flat, high) frames; music is steadier, and effects are rarely voiced.

Each 20 ms frame (a 40 ms Hann window of the audio before levelling, averaged down to about
12 kHz: the cues lie below 6 kHz, and it keeps the cost near 3 ms per second of audio) gives a few
numbers (:class:`FrameAnalyser`); a window of frames gives their means, spreads and
modulation (:func:`window_features`); a one-hidden-layer classifier trained on the
corpus (`python -m neucomp.train speech-detector`, weights in
neucomp.audio.speech_weights) turns those into P(speech). A chunk is judged on its own
frames, extended back to at least `min_context_s` of the stream, so a 93 ms live chunk
is judged on the last 2 s
and a 10 s chunk on itself; a decision flips only past a margin (hysteresis), so live
chunks do not flicker.
"""

from __future__ import annotations

import numpy as np

FRAME_HOP_S = 0.02
FRAME_WIN_S = 0.04
# Frame features, in this order (see frame_features).
FRAME_NAMES = ("log_energy", "centroid", "flatness", "rolloff", "zcr", "voicing", "flux")
N_BANDS = 16  # mel-spaced bands from 100 Hz to 6 kHz: the spectral shape and its motion


def _mel_edges(n: int, lo: float = 100.0, hi: float = 6000.0) -> np.ndarray:
    mel = np.linspace(2595 * np.log10(1 + lo / 700), 2595 * np.log10(1 + hi / 700), n + 1)
    return 700 * (10 ** (mel / 2595) - 1)


# How far under a window's mean energy its frames and bands count (4: 40 dB).
FLOOR_DECADES = 4.0
# Below this mean power (-70 dBFS) a window is silence, never speech.
SILENCE_POWER = 1e-7


def window_feature_names() -> list[str]:
    # the mean log energy is left out: the decision must not depend on the level
    names = [f"{n}_{s}" for n in FRAME_NAMES for s in ("mean", "std")][1:]
    names += ["low_energy_share", "voiced_share", "modulation_4hz", "energy_delta_std"]
    for what in ("shape", "spread", "motion"):
        names += [f"band{b}_{what}" for b in range(N_BANDS)]
    return names


class FrameAnalyser:
    """Streaming 20 ms frames of [n] mono float blocks at `sample_rate` → feature rows.

    Frames lie on a fixed grid from the stream's first sample, so any split of the stream
    into blocks gives the same rows."""

    def __init__(self, sample_rate: int) -> None:
        self.decimation = max(1, sample_rate // 12000)
        self.undecimated = np.zeros(0, np.float64)
        sample_rate = sample_rate / self.decimation
        self.rate = sample_rate
        self.hop = max(1, round(FRAME_HOP_S * sample_rate))
        self.win = max(2 * self.hop, round(FRAME_WIN_S * sample_rate))
        self.n_fft = 1 << int(np.ceil(np.log2(self.win)))
        self.window = np.hanning(self.win)
        freqs = np.fft.rfftfreq(self.n_fft, 1.0 / sample_rate)
        self.freqs = freqs
        self.flat_bins = (freqs >= 100) & (freqs <= min(8000, sample_rate / 2))
        edges = _mel_edges(N_BANDS)
        self.band_bins = [
            (freqs >= lo) & (freqs < hi) for lo, hi in zip(edges[:-1], edges[1:], strict=True)
        ]
        # pitch lags 2.5 … 16 ms: 60 … 400 Hz
        self.lag_lo = max(1, int(sample_rate / 400))
        self.lag_hi = min(self.win - 1, int(sample_rate / 60))
        # samples not yet in a complete frame; frame 0 is centred on the stream's start
        self.pending = np.zeros(self.win - self.hop, np.float64)
        self.prev_spectrum: np.ndarray | None = None

    def push(self, x: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Samples → (frame features [T, 7], band log-energies [T, N_BANDS]) of the
        frames completed by them."""
        d = self.decimation
        raw = np.concatenate([self.undecimated, np.asarray(x, np.float64)])
        usable = len(raw) - len(raw) % d
        self.undecimated = raw[usable:]
        # a boxcar of d samples, then every d-th: a crude low-pass, enough for these cues
        x = raw[:usable].reshape(-1, d).mean(axis=1)
        buf = np.concatenate([self.pending, x])
        count = 0 if len(buf) < self.win else 1 + (len(buf) - self.win) // self.hop
        self.pending = buf[count * self.hop :]
        if count == 0:
            return np.zeros((0, len(FRAME_NAMES))), np.zeros((0, N_BANDS))
        frames = np.lib.stride_tricks.sliding_window_view(buf, self.win)[:: self.hop][:count]
        return self._frames(frames)

    def _frames(self, frames: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        power = np.abs(np.fft.rfft(frames * self.window, self.n_fft, axis=1)) ** 2
        total = power.sum(axis=1) + 1e-12
        log_energy = np.log10(np.mean(frames**2, axis=1) + 1e-10)
        centroid = (power @ self.freqs) / total / (self.rate / 2)
        p = power[:, self.flat_bins] + 1e-12
        flatness = np.mean(np.log(p), axis=1) - np.log(np.mean(p, axis=1))
        cum = np.cumsum(power, axis=1)
        rolloff = (cum < 0.85 * total[:, None]).sum(axis=1) / power.shape[1]
        zcr = np.mean(np.abs(np.diff(np.signbit(frames).astype(np.int8), axis=1)), axis=1)
        ac = np.fft.irfft(power, self.n_fft, axis=1)
        voicing = np.maximum(ac[:, self.lag_lo : self.lag_hi].max(axis=1), 0) / (ac[:, 0] + 1e-12)
        # the shape of the spectrum, 60 dB deep: a level change is no flux
        spectrum = np.log10(power / total[:, None] + 1e-6)
        prev = spectrum[:1] if self.prev_spectrum is None else self.prev_spectrum[None]
        flux = np.mean(np.diff(np.concatenate([prev, spectrum]), axis=0) ** 2, axis=1)
        self.prev_spectrum = spectrum[-1]
        bands = np.stack([np.log10(power[:, b].sum(axis=1) + 1e-12) for b in self.band_bins], 1)
        rows = np.stack([log_energy, centroid, flatness, rolloff, zcr, voicing, flux], axis=1)
        return rows, bands


def window_features(rows: np.ndarray, bands: np.ndarray) -> np.ndarray:
    """A window's frame rows [T, 7] and band log-energies [T, N_BANDS] → its features
    (window_feature_names)."""
    t = rows.shape[0]
    if t == 0:
        return np.zeros(len(window_feature_names()))
    # Energies no deeper than FLOOR_DECADES under the window's mean: digital silence
    # between a corpus's prompts must not look like a cue that real recordings lack.
    rows = rows.copy()
    rows[:, 0] = np.maximum(rows[:, 0], np.log10(np.mean(10.0 ** rows[:, 0])) - FLOOR_DECADES)
    bands = np.maximum(bands, np.log10(np.mean(10.0**bands, axis=0)) - FLOOR_DECADES)
    stats = np.stack([rows.mean(axis=0), rows.std(axis=0)], axis=1).reshape(-1)[1:]
    energy = 10.0 ** rows[:, 0]
    low = float(np.mean(energy < 0.5 * energy.mean()))
    voiced = float(np.mean(rows[:, 5] > 0.5))
    # the share of the band envelopes' fluctuation that lies between 2 and 8 Hz
    if t >= 16:
        env = bands - bands.mean(axis=0)
        spec = np.abs(np.fft.rfft(env * np.hanning(t)[:, None], axis=0)) ** 2
        freqs = np.fft.rfftfreq(t, FRAME_HOP_S)
        band = (freqs >= 2) & (freqs <= 8)
        mod = float(spec[band].sum() / (spec[1:].sum() + 1e-12))
    else:
        mod = 0.0
    delta = float(np.std(np.diff(rows[:, 0]))) if t > 1 else 0.0
    # the bands relative to the frame's own energy: shape, not level
    rel = bands - np.log10(np.sum(10.0**bands, axis=1, keepdims=True) + 1e-12)
    motion = np.mean(np.abs(np.diff(bands, axis=0)), axis=0) if t > 1 else np.zeros(N_BANDS)
    return np.concatenate([stats, [low, voiced, mod, delta], rel.mean(0), bands.std(0), motion])


def is_silent(rows: np.ndarray) -> bool:
    return rows.shape[0] == 0 or float(np.mean(10.0 ** rows[:, 0])) < SILENCE_POWER


def speech_probability(features: np.ndarray, weights: dict | None = None) -> float:
    """P(speech) of one window's features, by the shipped classifier: standardised
    features, one tanh hidden layer, a logistic output."""
    if weights is None:
        from neucomp.audio.speech_weights import WEIGHTS as weights
    z = (np.asarray(features) - np.asarray(weights["mean"])) / np.asarray(weights["scale"])
    hidden = np.tanh(z @ np.asarray(weights["w1"]) + np.asarray(weights["b1"]))
    logit = float(hidden @ np.asarray(weights["w2"]) + weights["b2"])
    return float(1.0 / (1.0 + np.exp(-np.clip(logit, -50, 50))))


class SpeechDetector:
    """The encoder's per-chunk decision: push each chunk's model-rate audio [C, n] as it
    was before levelling (the levelling of 93 ms live chunks would flatten the syllable
    rhythm the cues measure), get whether it is speech."""

    def __init__(
        self,
        sample_rate: int,
        *,
        min_context_s: float = 2.0,
        margin: float = 0.1,
        weights: dict | None = None,
    ) -> None:
        self.analyser = FrameAnalyser(sample_rate)
        self.context = max(1, round(min_context_s / FRAME_HOP_S))
        self.margin = margin
        self.weights = weights
        self.rows = np.zeros((0, len(FRAME_NAMES)))
        self.bands = np.zeros((0, N_BANDS))
        self.state = False
        self.last_probability = 0.0

    def push_chunk(self, x: np.ndarray) -> bool:
        mono = np.asarray(x, np.float64).mean(axis=0) if x.ndim == 2 else np.asarray(x)
        rows, bands = self.analyser.push(mono)
        n_new = rows.shape[0]
        self.rows = np.concatenate([self.rows, rows])
        self.bands = np.concatenate([self.bands, bands])
        use = max(n_new, self.context)
        self.rows, self.bands = self.rows[-use:], self.bands[-use:]
        if is_silent(self.rows):
            p = 0.0
        else:
            p = speech_probability(window_features(self.rows, self.bands), self.weights)
        self.last_probability = p
        if self.state:
            self.state = p > 0.5 - self.margin
        else:
            self.state = p > 0.5 + self.margin
        # only the context is kept for the next chunk
        self.rows, self.bands = self.rows[-self.context :], self.bands[-self.context :]
        return self.state
