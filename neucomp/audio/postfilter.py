"""The decoder's formant postfilter: deeper valleys between the formants of decoded speech.

Speech decoders since CELP end with an adaptive postfilter (Chen and Gersho, 1995; G.729
§4.2): a pole-zero filter built from the decoded signal's own LPC polynomial A(z),

    H(z) = A(z / gamma_num) / A(z / gamma_den),   gamma_num < gamma_den < 1,

keeps the spectral envelope's peaks and lowers the valleys between them, where coding
noise is most audible, and a gain control keeps the loudness. neucomp's decoder leaves a
noise-like haze under the right envelope (docs/EXPERIMENTS.md E1–E13); PESQ punishes
that added haze more than the energy the postfilter takes out of the valleys: with
G.729's gamma_num 0.55 and gamma_den 0.7, +0.12 PESQ-wb at 6 kbps on every dev-eval
speech clip, but −0.25 ViSQOL on music (E14), so the decoder runs it only on the chunks
the encoder flagged as speech (:class:`SwitchedPostfilter`; format version 4), or when
asked.

It is causal and block-independent: the LPC of every subframe comes from the `window_s`
of audio before it (no look-ahead, so no added latency), and the input history, the
subframe grid and the gain run on across blocks, so any split of a stream into blocks
gives the same samples.

The filter runs as an FIR: every pole of A(z / gamma_den) lies inside radius gamma_den
(A's own are inside the unit circle), so H's impulse response decays like gamma_den^n
and its first samples, down to 1e-10, are H to float precision. That needs no IIR
routine (scipy.signal alone takes ~0.5 s to import, time a decoder's first audio would
pay) and switches coefficients between subframes without filter-state transients.
"""

from __future__ import annotations

import numpy as np


def lpc(frame: np.ndarray, order: int, lag_window: np.ndarray) -> np.ndarray:
    """A(z) coefficients [1, a_1 … a_order] of a windowed frame (autocorrelation method,
    Levinson-Durbin, with a lag window and a -40 dB white-noise floor for stability)."""
    n = len(frame)
    r = np.array([frame[: n - lag] @ frame[lag:] for lag in range(order + 1)])
    a = np.zeros(order + 1)
    a[0] = 1.0
    if r[0] <= 1e-10:
        return a
    r = r * lag_window
    r[0] *= 1.0001
    err = r[0]
    for i in range(1, order + 1):
        k = -(r[i] + a[1:i] @ r[i - 1 : 0 : -1]) / err
        a[1 : i + 1] += k * a[i - 1 :: -1]  # a_j += k a_(i-j); the product is a new array
        err *= 1.0 - k * k
        if err <= 0:  # numerically singular: keep the stable part found so far
            a[i:] = 0.0
            break
    return a


class FormantPostfilter:
    """Streaming postfilter for [channels, n] float blocks at `sample_rate`."""

    def __init__(
        self,
        sample_rate: int,
        channels: int = 1,
        *,
        gamma_num: float = 0.55,
        gamma_den: float = 0.7,
        order: int = 16,
        subframe_s: float = 0.01,
        window_s: float = 0.02,
        gain_smoothing: float = 0.95,
    ) -> None:
        if not 0 < gamma_num < gamma_den <= 0.95:
            raise ValueError("need 0 < gamma_num < gamma_den <= 0.95")
        # the impulse response decays like gamma_den^n: cut it where that is 1e-10
        taps = max(32, int(np.ceil(np.log(1e-10) / np.log(gamma_den))))
        self.order, self.taps = order, taps
        self.sub = max(1, round(subframe_s * sample_rate))
        self.win = max(order + 1, round(window_s * sample_rate))
        self.smoothing = gain_smoothing
        self.window = np.hanning(self.win)
        lags = np.arange(order + 1)
        self.lag_window = np.exp(-0.5 * (2 * np.pi * 60.0 / sample_rate * lags) ** 2)
        self.pow_num = gamma_num**lags
        self.pow_den = gamma_den**lags
        self.n_fft = 1 << int(np.ceil(np.log2(4 * taps)))
        self.channels = channels
        self.history = np.zeros((channels, max(self.win, taps - 1)))
        identity = np.zeros(taps)
        identity[0] = 1.0
        self.response = [identity] * channels
        self.gain = np.ones(channels)
        self.started = np.zeros(channels, dtype=bool)
        self.energy = np.zeros((channels, 2))  # this subframe so far: input, filter output
        self.position = 0  # samples seen, on the subframe grid
        self.stale = False  # skip() was called: restart from the history before filtering

    def _impulse_response(self, a: np.ndarray) -> np.ndarray:
        """The first `taps` samples of A(z / gamma_num) / A(z / gamma_den)."""
        num = np.fft.rfft(a * self.pow_num, self.n_fft)
        den = np.fft.rfft(a * self.pow_den, self.n_fft)
        return np.fft.irfft(num / den, self.n_fft)[: self.taps]

    def _new_subframe(self) -> None:
        """At a subframe boundary: the gain from the one that ended, then the filter from
        the LPC of the `win` samples before this one."""
        for c in range(self.channels):
            e_in, e_out = self.energy[c]
            if e_out > 1e-12 and e_in > 1e-12:
                target = np.sqrt(e_in / e_out)
                if self.started[c]:
                    self.gain[c] = self.smoothing * self.gain[c] + (1 - self.smoothing) * target
                else:  # the first subframe with sound sets it: no fade-in from 1
                    self.gain[c], self.started[c] = target, True
            past = self.history[c, -self.win :]
            self.response[c] = self._impulse_response(
                lpc(past * self.window, self.order, self.lag_window)
            )
        self.energy[:] = 0.0

    def skip(self, block: np.ndarray) -> None:
        """Take in a block that is not to be filtered: it only becomes the history that
        the next process() builds its first filter and gain from."""
        x = np.asarray(block, dtype=np.float64)
        keep = self.history.shape[1]
        if x.shape[1] >= keep:
            self.history = x[:, -keep:].copy()
        elif x.shape[1]:
            self.history = np.concatenate([self.history[:, x.shape[1] :], x], axis=1)
        self.stale = True

    def _restart(self) -> None:
        """After skipped audio: a new subframe grid from here, its filter from the
        history's LPC and its gain from the history's last subframe through that filter
        (so the first subframe needs no fade-in of the gain). process() then starts that
        grid's first subframe, which finds the same filter and keeps the gain."""
        self.stale = False
        self.position = 0
        self.energy[:] = 0.0
        self._new_subframe()
        keep = self.history.shape[1]
        for c in range(self.channels):
            past = self.history[c, keep - self.sub :] if keep >= self.sub else self.history[c]
            y = np.convolve(self.history[c], self.response[c])[keep - len(past) : keep]
            e_in, e_out = float(past @ past), float(y @ y)
            if e_in > 1e-12 and e_out > 1e-12:
                self.gain[c], self.started[c] = np.sqrt(e_in / e_out), True

    def process(self, block: np.ndarray) -> np.ndarray:
        """The postfiltered block, same shape and dtype."""
        if self.stale:
            self._restart()
        x = np.asarray(block, dtype=np.float64)
        out = np.empty_like(x)
        i, n = 0, x.shape[1]
        keep = self.history.shape[1]
        while i < n:
            if self.position % self.sub == 0:
                self._new_subframe()
            j = min(n, i + self.sub - self.position % self.sub)
            seg = x[:, i:j]
            ext = np.concatenate([self.history[:, keep - (self.taps - 1) :], seg], axis=1)
            for c in range(self.channels):
                y = np.convolve(ext[c], self.response[c])[self.taps - 1 : self.taps - 1 + j - i]
                self.energy[c] += (np.dot(seg[c], seg[c]), np.dot(y, y))
                out[c, i:j] = y * self.gain[c]
            if seg.shape[1] >= keep:
                self.history = seg[:, -keep:].copy()
            else:
                self.history = np.concatenate([self.history[:, seg.shape[1] :], seg], axis=1)
            self.position += j - i
            i = j
        return out.astype(block.dtype, copy=False)


class SwitchedPostfilter:
    """The postfilter on the chunks that ask for it: register each chunk (in order, before
    its samples come out) with whether it is to be filtered, then push the decoded audio.

    Where a chunk switches the filter on or off, the output crossfades between the plain
    and the filtered signal over `fade_s` from the chunk's first sample, so no switch
    clicks. The filter runs only where it is heard (a fade's end included), and it
    restarts from the audio before the switch (FormantPostfilter.skip), so the samples
    depend on the chunks' flags alone, never on how the stream is split into blocks.
    """

    def __init__(self, sample_rate: int, channels: int = 1, fade_s: float = 0.01) -> None:
        self.filter = FormantPostfilter(sample_rate, channels)
        self.fade = max(1, round(fade_s * sample_rate))
        self.chunks: list[tuple[int, int, bool, bool]] = []  # start, end, on, fade from off/on
        self.end = 0
        self.position = 0
        self.previous: bool | None = None  # the last chunk's flag (None: no chunk yet)

    def add_chunk(self, samples: int, on: bool, fade: bool = True) -> None:
        """The next `samples` are filtered or not; ``fade=False`` switches at once (a
        chunk of silence in place of a damaged one, into which nothing may ring). The
        first chunk starts as it means to go on."""
        before = on if self.previous is None or not fade else self.previous
        self.chunks.append((self.end, self.end + samples, on, before))
        self.end += samples
        self.previous = on

    def _weights(self, lo: int, hi: int) -> np.ndarray:
        """The filtered signal's share in the output for samples [lo, hi)."""
        w = np.zeros(hi - lo)
        for start, end, on, before in self.chunks:
            a, b = max(lo, start), min(hi, end)
            if a >= b:
                continue
            i = np.arange(a, b) - start
            if on == before:
                w[a - lo : b - lo] = float(on)
            else:
                ramp = np.minimum((i + 1) / self.fade, 1.0)
                w[a - lo : b - lo] = ramp if on else 1.0 - ramp
        return w

    def process(self, block: np.ndarray) -> np.ndarray:
        n = block.shape[1]
        lo, hi = self.position, self.position + n
        self.position = hi
        w = self._weights(lo, hi)
        self.chunks = [c for c in self.chunks if c[1] > hi]
        if not w.any():
            self.filter.skip(block)
            return block
        out = np.array(block, copy=True)
        # runs of samples that are heard filtered (w > 0) and that are not
        heard = w > 0
        edges = np.flatnonzero(np.diff(heard.astype(np.int8))) + 1
        bounds = [0, *edges.tolist(), n]
        for a, b in zip(bounds[:-1], bounds[1:], strict=True):
            seg = block[:, a:b]
            if not heard[a]:
                self.filter.skip(seg)
                continue
            y = self.filter.process(seg)
            out[:, a:b] = seg + (y - seg) * w[a:b].astype(block.dtype)
        return out
