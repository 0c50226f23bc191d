"""Objective quality metrics for decoded audio: SI-SNR, mel distance, ViSQOL, bitrate.

Every metric is a pure function of a reference and a degraded float signal (`[T]` or
`[C, T]`) at a given sample rate, so training validation and `neucomp eval` report the
same numbers. Signals of different lengths are compared over their common start
(codecs may pad the end). torch and visqol are imported only when a metric needs them.
"""

from __future__ import annotations

import functools
import logging
from collections.abc import Sequence

import numpy as np

from neucomp.audio.signal import resample, to_mono
from neucomp.errors import NeucompError

#: STFT sizes of the mel distance (hop = n_fft / 4, Hann window).
MEL_FFT_SIZES: tuple[int, ...] = (512, 1024, 2048)
#: Mel bands of the mel distance, at every STFT size.
MEL_BANDS = 80
#: Floor of the mel magnitudes before the log, so silence does not dominate (-100 dB).
MEL_FLOOR = 1e-5
#: The rate ViSQOL expects for each mode.
VISQOL_RATES = {"audio": 48000, "speech": 16000}


class MissingDependencyError(NeucompError):
    """An optional tool or package (visqol-python, matplotlib, opusenc, lame) is absent."""


def _as_2d(x: np.ndarray) -> np.ndarray:
    a = np.asarray(x, dtype=np.float64)
    if a.ndim == 1:
        return a[None, :]
    if a.ndim != 2:
        raise ValueError(f"expected audio [T] or [C, T], got shape {a.shape}")
    return a


def _aligned(ref: np.ndarray, deg: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Both signals as float64 [C, T] over their common length (channels must agree)."""
    r, d = _as_2d(ref), _as_2d(deg)
    if r.shape[0] != d.shape[0]:
        raise ValueError(f"channel counts differ: {r.shape[0]} vs {d.shape[0]}")
    n = min(r.shape[1], d.shape[1])
    if n == 0:
        raise ValueError("cannot compare empty signals")
    return r[:, :n], d[:, :n]


def si_snr(ref: np.ndarray, deg: np.ndarray, eps: float = 1e-12) -> float:
    """Scale-invariant signal-to-noise ratio in dB, averaged over channels.

    The mean of each channel is removed and `deg` is projected on `ref`, so gain and DC
    offsets do not count as errors; what remains (noise, distortion, phase) does.
    An exact copy gives a very large value (≈ 200+ dB, limited only by `eps`).
    """
    r, d = _aligned(ref, deg)
    r = r - r.mean(axis=1, keepdims=True)
    d = d - d.mean(axis=1, keepdims=True)
    scale = (d * r).sum(axis=1, keepdims=True) / ((r * r).sum(axis=1, keepdims=True) + eps)
    target = scale * r
    noise = d - target
    ratio = ((target**2).sum(axis=1) + eps) / ((noise**2).sum(axis=1) + eps)
    return float(np.mean(10.0 * np.log10(ratio)))


@functools.lru_cache(maxsize=16)
def mel_filterbank(sample_rate: int, n_fft: int, n_mels: int = MEL_BANDS) -> np.ndarray:
    """Triangular filters `[n_mels, n_fft // 2 + 1]` on the HTK mel scale, 0 Hz to Nyquist.

    Peak-normalised (each filter reaches 1.0), so a band's value is a weighted magnitude
    of its bins and comparable across STFT sizes.
    """

    def hz_to_mel(f: np.ndarray) -> np.ndarray:
        return 2595.0 * np.log10(1.0 + f / 700.0)

    def mel_to_hz(m: np.ndarray) -> np.ndarray:
        return 700.0 * (10.0 ** (m / 2595.0) - 1.0)

    bins = np.linspace(0.0, sample_rate / 2, n_fft // 2 + 1)
    edges = mel_to_hz(np.linspace(0.0, hz_to_mel(np.array(sample_rate / 2)), n_mels + 2))
    lower, centre, upper = edges[:-2, None], edges[1:-1, None], edges[2:, None]
    rising = (bins[None, :] - lower) / (centre - lower)
    falling = (upper - bins[None, :]) / (upper - centre)
    return np.clip(np.minimum(rising, falling), 0.0, None)


def log_mel(x: np.ndarray, sample_rate: int, n_fft: int, n_mels: int = MEL_BANDS):
    """log10 mel magnitude spectrogram `[C, n_mels, frames]` (a torch tensor) of float audio."""
    import torch

    wav = torch.as_tensor(_as_2d(x), dtype=torch.float32)
    spec = torch.stft(
        wav,
        n_fft=n_fft,
        hop_length=n_fft // 4,
        window=torch.hann_window(n_fft, dtype=torch.float32),
        center=True,
        pad_mode="constant",  # zeros, not reflection: works for clips shorter than n_fft
        return_complex=True,
    ).abs()
    fb = torch.as_tensor(mel_filterbank(sample_rate, n_fft, n_mels), dtype=torch.float32)
    mel = torch.einsum("mf,cft->cmt", fb, spec)
    return torch.log10(mel.clamp_min(MEL_FLOOR))


def mel_distance(
    ref: np.ndarray,
    deg: np.ndarray,
    sample_rate: int,
    fft_sizes: Sequence[int] = MEL_FFT_SIZES,
    n_mels: int = MEL_BANDS,
) -> float:
    """Mean absolute difference of log10 mel magnitudes, averaged over STFT sizes.

    Definition: for each n_fft in `fft_sizes` (hop n_fft/4, Hann window, centred frames,
    zero-padded ends), take |STFT|, apply `n_mels` triangular HTK-mel filters from 0 Hz to
    Nyquist, floor at 1e-5 and take log10; the distance is the mean
    |log_mel(ref) - log_mel(deg)| over channels, bands and frames, then averaged over the
    sizes. 0 means identical spectra;
    0.1 is about a 2 dB average error per band. Lower is better.
    """
    r, d = _aligned(ref, deg)
    total = 0.0
    for n_fft in fft_sizes:
        total += float(
            (log_mel(r, sample_rate, n_fft, n_mels) - log_mel(d, sample_rate, n_fft, n_mels))
            .abs()
            .mean()
        )
    return total / len(fft_sizes)


def kbps(n_bytes: int, seconds: float) -> float:
    """Actual bitrate in kilobits per second of `n_bytes` holding `seconds` of audio."""
    if seconds <= 0:
        raise ValueError("duration must be positive")
    return n_bytes * 8 / seconds / 1000.0


# ----------------------------------------------------------------------------- ViSQOL


def visqol_available() -> bool:
    """True if the visqol-python package can be imported."""
    try:
        import visqol  # noqa: F401
    except ImportError:
        return False
    return True


@functools.lru_cache(maxsize=2)
def _visqol_api(mode: str):
    try:
        from visqol import VisqolApi
    except ImportError:
        raise MissingDependencyError(
            "ViSQOL needs the visqol-python package: pip install 'neucomp[eval]'"
        ) from None
    # The speech mode warns once when the lattice mapper (ai-edge-litert) is missing and
    # falls back to a polynomial mapping; keep that warning out of progress bars.
    logging.getLogger("visqol").setLevel(logging.ERROR)
    api = VisqolApi()
    api.create(mode=mode)
    return api


def visqol_speech_mapper() -> str:
    """Which MOS mapping speech mode uses: 'lattice' (as Google's C++ default) or 'polynomial'."""
    try:
        import ai_edge_litert  # noqa: F401
    except ImportError:
        return "polynomial"
    return "lattice"


def visqol(ref: np.ndarray, deg: np.ndarray, sample_rate: int, mode: str = "audio") -> float:
    """ViSQOL MOS-LQO (1 … 5, higher is better) of `deg` against `ref`.

    Both signals are mixed to mono and resampled to the mode's rate (48 kHz for "audio",
    16 kHz for "speech") as ViSQOL requires. Raises MissingDependencyError when
    visqol-python is not installed. Cost: about 0.3 s per second of audio in audio mode
    and 0.06 s/s in speech mode on one core with numba; several times more without it.
    """
    if mode not in VISQOL_RATES:
        raise ValueError(f"ViSQOL mode must be one of {sorted(VISQOL_RATES)}, got {mode!r}")
    api = _visqol_api(mode)
    rate = VISQOL_RATES[mode]
    r, d = _aligned(ref, deg)
    r, d = (
        resample(to_mono(r), sample_rate, rate),
        resample(to_mono(d), sample_rate, rate),
    )
    n = min(len(r), len(d))
    return float(api.measure_from_arrays(r[:n], d[:n], rate).moslqo)


# ------------------------------------------------------------ speech scores and spectra

#: PESQ wideband and STOI are defined at 16 kHz.
SPEECH_RATE = 16000
#: Bands (Hz) of the log-spectral distance; 12–20 kHz only exists at rates above 40 kHz
#: (the 48 kHz model's top octave), and is NaN below.
LSD_BANDS: tuple[tuple[int, int], ...] = (
    (0, 4000),
    (4000, 8000),
    (8000, 12000),
    (12000, 20000),
)
#: Frames quieter than this many dB below the reference's loudest frame are not scored.
LSD_ACTIVE_DB = 40.0


def rms_db(x: np.ndarray) -> float:
    """RMS level in dBFS (a full-scale square wave is 0 dB)."""
    a = np.asarray(x, dtype=np.float64)
    return float(10.0 * np.log10(np.mean(a * a) + 1e-20))


def pesq_wb(ref: np.ndarray, deg: np.ndarray, sample_rate: int) -> float:
    """PESQ wideband MOS-LQO (ITU-T P.862.2; about 1.0 … 4.64) at 16 kHz, mono.

    Raises MissingDependencyError without the `pesq` package (it builds from source, so
    installing it needs a C compiler). NaN when PESQ finds no speech in the reference.
    """
    try:
        from pesq import NoUtterancesError, pesq
    except ImportError:
        raise MissingDependencyError(
            "PESQ needs the pesq package (pip install 'neucomp[eval]'; needs a C compiler)"
        ) from None
    r, d = _speech_pair(ref, deg, sample_rate)
    try:
        return float(pesq(SPEECH_RATE, r, d, "wb"))
    except NoUtterancesError:
        return float("nan")


def stoi(ref: np.ndarray, deg: np.ndarray, sample_rate: int) -> float:
    """Short-time objective intelligibility (0 … 1) at 16 kHz, mono (pystoi, classic)."""
    try:
        from pystoi import stoi as _stoi
    except ImportError:
        raise MissingDependencyError(
            "STOI needs the pystoi package: pip install 'neucomp[eval]'"
        ) from None
    r, d = _speech_pair(ref, deg, sample_rate)
    return float(_stoi(r, d, SPEECH_RATE, extended=False))


def speech_scores(ref: np.ndarray, deg: np.ndarray, sample_rate: int) -> dict[str, float]:
    """{"pesq": PESQ-wb, "stoi": STOI} of a speech signal."""
    return {"pesq": pesq_wb(ref, deg, sample_rate), "stoi": stoi(ref, deg, sample_rate)}


def _speech_pair(
    ref: np.ndarray, deg: np.ndarray, sample_rate: int
) -> tuple[np.ndarray, np.ndarray]:
    r, d = _aligned(ref, deg)
    r = resample(to_mono(r), sample_rate, SPEECH_RATE)
    d = resample(to_mono(d), sample_rate, SPEECH_RATE)
    n = min(len(r), len(d))
    return r[:n].astype(np.float64), d[:n].astype(np.float64)


def _lsd_fft(sample_rate: int, n_fft: int = 1024) -> int:
    """The STFT size of the spectral metrics: n_fft at 24 kHz, scaled with the rate."""
    return max(256, int(round(n_fft * sample_rate / 24000 / 2)) * 2)


def _power(x: np.ndarray, n_fft: int) -> np.ndarray:
    """Power spectrogram ``[C, F, T]`` of ``[C, T]`` float64 audio (Hann, hop n_fft/4,
    centred frames, zero-padded ends)."""
    import torch

    window = torch.hann_window(n_fft, dtype=torch.float64)
    spec = torch.stft(
        torch.from_numpy(np.ascontiguousarray(x)),
        n_fft,
        n_fft // 4,
        window=window,
        center=True,
        pad_mode="constant",
        return_complex=True,
    )
    return (spec.abs() ** 2).numpy()


def lsd_bands(
    ref: np.ndarray,
    deg: np.ndarray,
    sample_rate: int,
    bands: Sequence[tuple[int, int]] = LSD_BANDS,
    n_fft: int = 1024,
) -> dict[str, float]:
    """Log-spectral distance in dB per band, over the reference's active frames.

    Definition: Hann-windowed STFT of each channel (n_fft 1024 at 24 kHz, scaled with
    the rate; hop n_fft/4); power spectra in dB with a floor 100 dB below the
    reference's peak bin (over all channels); a frame is active when the reference's
    energy in it (all channels) is within 40 dB of the loudest frame's. Per band and
    channel, LSD = mean over active frames of sqrt(mean over the band's bins of
    (dB_ref − dB_deg)²), then the mean over channels (mono: the one channel; eval scores
    stereo as two channels, so an error on one side is not averaged away in a mix).
    Keys: "lsd_0_4k", "lsd_4_8k", …, "lsd_12_20k". Bands above Nyquist are NaN.
    Lower is better; 0 means identical spectra.
    """
    r, d = _aligned(ref, deg)
    n_fft = _lsd_fft(sample_rate, n_fft)
    p_ref, p_deg = _power(r, n_fft), _power(d, n_fft)  # [C, F, T]
    floor = max(float(p_ref.max()), 1e-20) * 1e-10
    db_ref = 10 * np.log10(np.maximum(p_ref, floor))
    db_deg = 10 * np.log10(np.maximum(p_deg, floor))
    frame_energy = 10 * np.log10(p_ref.sum(axis=(0, 1)) + 1e-30)
    active = frame_energy > frame_energy.max() - LSD_ACTIVE_DB
    freqs = np.arange(p_ref.shape[1]) * sample_rate / n_fft
    out: dict[str, float] = {}
    for lo, hi in bands:
        key = f"lsd_{lo // 1000}_{hi // 1000}k"
        sel = (freqs >= lo) & (freqs < hi)
        if hi > sample_rate / 2 + 1 or not sel.any():
            out[key] = float("nan")
            continue
        diff = db_ref[:, sel][:, :, active] - db_deg[:, sel][:, :, active]  # [C, bins, T]
        out[key] = float(np.mean(np.sqrt(np.mean(diff**2, axis=1))))
    return out


# ------------------------------------------------------------------------- the stereo image

#: Highest frequency the stereo metrics look at (Hz; or Nyquist, if lower).
STEREO_FMAX = 20000.0
#: Bands of the inter-channel level difference: log-spaced from 100 Hz to STEREO_FMAX.
ILD_BANDS = 24
#: Level differences are clipped to ±this (dB): a hard-panned source has an infinite one.
ILD_CLIP_DB = 30.0


def mid_side(x: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Mid M = (L + R) / 2 and side S = (L − R) / 2 of stereo ``[2, T]``."""
    a = _as_2d(x)
    if a.shape[0] != 2:
        raise ValueError(f"mid/side needs two channels, got {a.shape[0]}")
    return (a[0] + a[1]) / 2, (a[0] - a[1]) / 2


def side_lsd(ref: np.ndarray, deg: np.ndarray, sample_rate: int, n_fft: int = 1024) -> float:
    """Log-spectral distance (dB) of the side channel S = (L − R) / 2: does the stereo
    image survive?

    As :func:`lsd_bands` over one band, 0 Hz to min(20 kHz, Nyquist), on S, except that
    the floor is 100 dB below the reference's *mid* peak bin and the active frames are
    those of the whole reference (mid and side), not of S alone: a near-mono reference
    has a side at the floor, and a decoding that invents width is then as far off as one
    that loses it. 0 means the side spectra are identical; a side 6 dB too loud (or too
    quiet) everywhere above the floor scores 6.02.
    """
    r, d = _aligned(ref, deg)
    n_fft = _lsd_fft(sample_rate, n_fft)
    (r_mid, r_side), (_, d_side) = mid_side(r), mid_side(d)
    p_mid = _power(r_mid[None], n_fft)[0]
    p_ref, p_deg = _power(r_side[None], n_fft)[0], _power(d_side[None], n_fft)[0]
    floor = max(float(p_mid.max()), float(p_ref.max()), 1e-20) * 1e-10
    frame_energy = 10 * np.log10((p_mid + p_ref).sum(axis=0) + 1e-30)
    active = frame_energy > frame_energy.max() - LSD_ACTIVE_DB
    freqs = np.arange(p_ref.shape[0]) * sample_rate / n_fft
    sel = freqs < min(STEREO_FMAX, sample_rate / 2)
    diff = 10 * np.log10(np.maximum(p_ref[sel][:, active], floor)) - 10 * np.log10(
        np.maximum(p_deg[sel][:, active], floor)
    )
    return float(np.mean(np.sqrt(np.mean(diff**2, axis=0))))


def ild_error(ref: np.ndarray, deg: np.ndarray, sample_rate: int, n_fft: int = 1024) -> float:
    """Mean absolute error (dB) of the inter-channel level difference: is each sound
    still where it was between the speakers?

    Definition: STFT as :func:`lsd_bands`; bin powers summed into ILD_BANDS bands
    log-spaced from 100 Hz to min(20 kHz, Nyquist); per band and frame (a tile),
    ILD = 10·log10(P_L / P_R), each power floored 100 dB below the reference's loudest
    tile and the ILD clipped to ±30 dB; the error is the mean |ILD_ref − ILD_deg| over
    the tiles whose reference power (L + R) is within 40 dB of the loudest tile's.
    0: every tile has its original balance; a reference panned 6.02 dB to the left
    decoded as centred scores 6.02.
    """
    r, d = _aligned(ref, deg)
    if r.shape[0] != 2:
        raise ValueError(f"the level difference needs two channels, got {r.shape[0]}")
    n_fft = _lsd_fft(sample_rate, n_fft)
    p_ref, p_deg = _power(r, n_fft), _power(d, n_fft)  # [2, F, T]
    freqs = np.arange(p_ref.shape[1]) * sample_rate / n_fft
    top = min(STEREO_FMAX, sample_rate / 2)
    edges = np.geomspace(100.0, top, ILD_BANDS + 1)
    band = np.digitize(freqs, edges) - 1  # bin → band index; outside: -1 or ILD_BANDS
    keep = (band >= 0) & (band < ILD_BANDS)
    members = [np.flatnonzero(keep & (band == b)) for b in range(ILD_BANDS)]
    members = [m for m in members if m.size]  # at low rates the lowest bands hold no bin

    def tiles(p: np.ndarray) -> np.ndarray:
        return np.stack([p[:, m].sum(axis=1) for m in members], axis=1)  # [2, bands, T]

    t_ref, t_deg = tiles(p_ref), tiles(p_deg)
    total = t_ref.sum(axis=0)
    floor = max(float(total.max()), 1e-20) * 1e-10

    def ild(t: np.ndarray) -> np.ndarray:
        level = 10 * np.log10(np.maximum(t, floor))
        return np.clip(level[0] - level[1], -ILD_CLIP_DB, ILD_CLIP_DB)

    active = 10 * np.log10(total + 1e-30) > 10 * np.log10(total.max() + 1e-30) - LSD_ACTIVE_DB
    return float(np.mean(np.abs(ild(t_ref) - ild(t_deg))[active]))


def stereo_scores(ref: np.ndarray, deg: np.ndarray, sample_rate: int) -> dict[str, float]:
    """{"side_lsd": …, "ild_error": …} of a stereo decoding (see their functions)."""
    return {
        "side_lsd": side_lsd(ref, deg, sample_rate),
        "ild_error": ild_error(ref, deg, sample_rate),
    }


# ------------------------------------------------------------ optional packages and DNSMOS

#: Modules each optional metric imports, and the pip hint shown when one is missing.
METRIC_PACKAGES: dict[str, tuple[tuple[str, ...], str]] = {
    "pesq": (("pesq",), "pesq (builds from source: needs a C compiler)"),
    "stoi": (("pystoi",), "pystoi"),
    # speechmos declares no dependencies of its own; it needs these at import.
    "dnsmos": (
        ("onnxruntime", "librosa", "speechmos.dnsmos"),
        "speechmos, onnxruntime, librosa, requests",
    ),
}
#: DNSMOS scores: P.835 signal, background, overall, and the P.808 MOS.
DNSMOS_KEYS: tuple[str, ...] = ("dnsmos_sig", "dnsmos_bak", "dnsmos_ovrl", "dnsmos_p808")


def missing_for(metric: str) -> str | None:
    """Why `metric` ("pesq", "stoi", "dnsmos") cannot run here, or None when it can.

    Imports the modules for real, so a broken install is caught too (DNSMOS's first
    import pulls in librosa and can take several seconds).
    """
    import importlib

    modules, hint = METRIC_PACKAGES[metric]
    for name in modules:
        try:
            importlib.import_module(name)
        except Exception as err:  # ImportError, or a broken native extension
            culprit = getattr(err, "name", None) or name.split(".")[0]
            return (
                f"{culprit} cannot be imported ({type(err).__name__}); "
                f"pip install 'neucomp[eval]' ({hint})"
            )
    return None


@functools.lru_cache(maxsize=1)
def _dnsmos_model():
    """speechmos's DNSMOS with single-threaded ONNX sessions (its own use every core)."""
    from pathlib import Path

    try:
        import onnxruntime as ort
        from speechmos import dnsmos as sm
    except ImportError:
        raise MissingDependencyError(
            "DNSMOS needs speechmos, onnxruntime, librosa, requests: pip install 'neucomp[eval]'"
        ) from None

    class SingleThreaded(sm.DNSMOS):
        def __init__(self, primary: str, p808: str) -> None:
            opts = ort.SessionOptions()
            opts.intra_op_num_threads = 1
            opts.inter_op_num_threads = 1
            cpu = ["CPUExecutionProvider"]
            self.primary_model_path = primary
            self.onnx_sess = ort.InferenceSession(primary, opts, providers=cpu)
            self.p808_onnx_sess = ort.InferenceSession(p808, opts, providers=cpu)

    models = Path(sm.__file__).parent / "dnsmos_models"
    return SingleThreaded(str(models / "sig_bak_ovr.onnx"), str(models / "model_v8.onnx"))


def dnsmos(x: np.ndarray, sample_rate: int) -> dict[str, float]:
    """DNSMOS (non-intrusive, 1 … 5, higher is better) of one speech signal.

    Keys DNSMOS_KEYS: P.835 SIG/BAK/OVRL (polynomial-mapped, not personalised) and the
    P.808 MOS. The signal is mixed to mono, resampled to 16 kHz and peak-normalised
    first, so the score does not depend on level; clips under 9.01 s are looped to that
    length by speechmos, longer ones scored in 9-s windows 1 s apart. All NaN for a
    silent signal. Raises MissingDependencyError without speechmos/onnxruntime/librosa.
    Cost: about 0.1 s per second of audio on one core, plus a few seconds at first use.
    """
    model = _dnsmos_model()
    mono = resample(to_mono(_as_2d(x)), sample_rate, SPEECH_RATE)
    peak = float(np.abs(mono).max()) if len(mono) else 0.0
    if peak < 1e-6:
        return dict.fromkeys(DNSMOS_KEYS, float("nan"))
    scores = model((mono / peak).astype(np.float32), SPEECH_RATE, False)
    return {
        "dnsmos_sig": float(scores["sig_mos"]),
        "dnsmos_bak": float(scores["bak_mos"]),
        "dnsmos_ovrl": float(scores["ovrl_mos"]),
        "dnsmos_p808": float(scores["p808_mos"]),
    }
