"""The evaluation loop behind `neucomp eval`: files × codecs × settings → report rows.

Every codec sees the same reference, in the domain of the model under test (its
:class:`Domain`): for the 24 kHz model the input mixed to mono and resampled to 24 kHz;
for the 48 kHz stereo model the input in stereo at 48 kHz (mono duplicated, more than two
channels folded by the channel rule). No codec is scored on content another never
received. The neucomp codec is passed in as a function, so tests (and models not yet
shipped) can stand in for the real Python API.
"""

from __future__ import annotations

import math
import os
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from neucomp.audio import AUDIO_EXTENSIONS, load_reference
from neucomp.audio.signal import fit_length, resample, to_model_channels, to_mono
from neucomp.errors import InputError
from neucomp.eval import metrics
from neucomp.eval.baselines import Baseline, round_trip
from neucomp.eval.report import CATEGORY_ORDER, REFERENCE, Row

#: Rate every codec is scored at by default (the 24 kHz model's domain).
EVAL_RATE = 24000


@dataclass(frozen=True)
class Domain:
    """What every codec is fed and scored on: a sample rate and 1 or 2 channels (the
    model's own; references and decodings are ``[T]`` in mono, ``[2, T]`` in stereo)."""

    rate: int = EVAL_RATE
    channels: int = 1

    @classmethod
    def of(cls, config) -> Domain:
        """The domain of a model (its CodecConfig)."""
        return cls(config.sample_rate, config.channels)

    @property
    def label(self) -> str:
        return f"{self.rate / 1000:g} kHz {'mono' if self.channels == 1 else 'stereo'}"


#: The 24 kHz model's domain.
DEFAULT_DOMAIN = Domain()


def table_note(domain: Domain = DEFAULT_DOMAIN) -> str:
    """Shown above the tables so nobody compares numbers of different domains."""
    khz = f"{domain.rate / 1000:g}"
    if domain.channels == 1:
        where = f"the reference mixed to mono and resampled to {khz} kHz (the model's domain)"
        lsd = f"LSD (dB, per band, active frames) at {khz} kHz"
    else:
        where = (
            f"the reference in stereo at {khz} kHz (the model's domain: mono files on both "
            "sides, more than two channels folded by the channel rule)"
        )
        lsd = (
            f"LSD (dB, per band, active frames, mean of both channels) at {khz} kHz, side "
            "LSD on S = (L − R)/2 and the inter-channel level difference error"
        )
    return (
        f"All codecs coded and scored on {where}. PESQ-wb, STOI, ViSQOL speech mode and "
        "DNSMOS (each clip peak-normalised) on the mono mix at 16 kHz on speech files only; "
        f"{lsd} and ViSQOL audio mode (mono mix) at 48 kHz on every file. "
        "Means over the files each metric was measured on; kbps from the compressed size; "
        "the reference row is the uncoded file's own DNSMOS."
    )


TABLE_NOTE = table_note()

#: References with no sample above this are silent: PESQ and STOI have no answer.
SILENT = 1e-6

#: audio [T] (or [2, T] in a stereo domain) at `rate`, bandwidth → (decoded [T] or
#: [C, T], its rate, compressed bytes).
CodecFn = Callable[[np.ndarray, int, float], tuple[np.ndarray, int, int]]


@dataclass(frozen=True)
class MetricSet:
    """Which optional metrics to compute (SI-SNR, mel distance and LSD always are)."""

    visqol: bool = True
    pesq: bool = True  # speech files only, as STOI and DNSMOS
    stoi: bool = True
    dnsmos: bool = False


@dataclass(frozen=True)
class EvalFile:
    path: Path
    category: str


def neucomp_codec(
    lm: bool = False, model: str | None = None, postfilter: bool | None = None
) -> CodecFn:
    """The real codec through the public Python API (``postfilter``: None for the
    decoder's default)."""

    def run(audio: np.ndarray, rate: int, bandwidth: float) -> tuple[np.ndarray, int, int]:
        import neucomp

        data = neucomp.compress(audio, rate, bandwidth=bandwidth, lm=lm, model=model)
        decoded, out_rate = neucomp.decompress(data, model=model, postfilter=postfilter)
        return decoded, out_rate, len(data)

    return run


def category_of(path: Path) -> str:
    """The nearest enclosing folder named speech/music/sfx, or "other"."""
    for part in reversed(path.parent.parts):
        if part.lower() in CATEGORY_ORDER:
            return part.lower()
    return "other"


def find_files(refs: Iterable[str | os.PathLike]) -> list[EvalFile]:
    """Audio files named by `refs` (files, or folders searched recursively), sorted."""
    found: list[Path] = []
    for ref in refs:
        path = Path(ref)
        if path.is_dir():
            found.extend(audio_files_under(path))
        elif path.is_file():
            found.append(path)
        else:
            raise InputError(f"'{ref}' does not exist")
    if not found:
        raise InputError("no audio files found in " + ", ".join(str(r) for r in refs))
    return [EvalFile(p, category_of(p)) for p in dict.fromkeys(found)]


def audio_files_under(folder: Path) -> list[Path]:
    """Audio files below `folder`, sorted, skipping hidden files and folders (scratch, .git)."""
    return [
        p
        for p in sorted(folder.rglob("*"))
        if p.suffix.lower() in AUDIO_EXTENSIONS
        and not any(part.startswith(".") for part in p.relative_to(folder).parts)
        and p.is_file()
    ]


def _in_domain(decoded: np.ndarray, rate: int, domain: Domain, length: int) -> np.ndarray:
    """A decoding as the domain's signal: its channels ([T] mono, [2, T] stereo), its
    rate, the reference's length."""
    x = np.asarray(decoded, dtype=np.float32)
    if domain.channels == 1:
        return fit_length(resample(to_mono(x), rate, domain.rate)[None], length)[0]
    x = to_model_channels(x if x.ndim == 2 else x[None], domain.channels)
    return fit_length(resample(x, rate, domain.rate), length)


def score(
    ref: np.ndarray,
    deg: np.ndarray,
    category: str,
    use_visqol: bool,
    use: MetricSet | None = None,
    domain: Domain = DEFAULT_DOMAIN,
) -> dict[str, float | None]:
    """The metrics of one decoded signal against its reference (both in `domain`).

    `use` picks the optional metrics (default: ViSQOL as `use_visqol`, PESQ and STOI,
    no DNSMOS); None marks a metric not measured or without an answer. A stereo domain
    adds the side LSD and the level-difference error.
    """
    use = use or MetricSet(visqol=use_visqol)
    rate = domain.rate
    out: dict[str, float | None] = {
        "si_snr": metrics.si_snr(ref, deg),
        "mel_distance": metrics.mel_distance(ref, deg, rate),
        "visqol_audio": None,
        "visqol_speech": None,
    }
    out.update(_finite(metrics.lsd_bands(ref, deg, rate)))
    if domain.channels == 2:
        out.update(_finite(metrics.stereo_scores(ref, deg, rate)))
    if use.visqol:
        out["visqol_audio"] = _visqol_or_none(ref, deg, "audio", rate)
        if category == "speech":
            out["visqol_speech"] = _visqol_or_none(ref, deg, "speech", rate)
    if category == "speech":
        if use.pesq:
            out["pesq"] = _or_none(metrics.pesq_wb, ref, deg, rate)
        if use.stoi:
            out["stoi"] = _or_none(metrics.stoi, ref, deg, rate)
        if use.dnsmos:
            out.update(_finite(metrics.dnsmos(deg, rate)))
    return out


def _finite(values: dict[str, float]) -> dict[str, float | None]:
    """NaN (no answer) as None, so the JSON stays valid and means skip it."""
    return {k: None if math.isnan(v) else v for k, v in values.items()}


def _or_none(
    metric: Callable[[np.ndarray, np.ndarray, int], float],
    ref: np.ndarray,
    deg: np.ndarray,
    rate: int = EVAL_RATE,
) -> float | None:
    """PESQ or STOI, or None where it has no answer (silence, no speech found, too short)."""
    if float(np.abs(ref).max(initial=0.0)) < SILENT:
        return None
    try:
        value = metric(ref, deg, rate)
    except (RuntimeError, ValueError):  # pesq's errors are RuntimeErrors
        return None
    return None if math.isnan(value) else value


def _visqol_or_none(
    ref: np.ndarray, deg: np.ndarray, mode: str, rate: int = EVAL_RATE
) -> float | None:
    """ViSQOL, or None where it has no answer: a silent reference (NaN) or a clip too
    short for its spectrogram (ValueError, under about 0.1 s)."""
    try:
        value = metrics.visqol(ref, deg, rate, mode=mode)
    except ValueError:
        return None
    return None if math.isnan(value) else value


def evaluate(
    files: Sequence[EvalFile],
    bandwidths: Sequence[float],
    baselines: Sequence[Baseline],
    codec: CodecFn | None,
    codec_label: str = "neucomp",
    use_visqol: bool = True,
    progress: bool = True,
    use: MetricSet | None = None,
    spectrogram_dir: Path | None = None,
    domain: Domain = DEFAULT_DOMAIN,
) -> list[Row]:
    """Rows for every file × (each bandwidth of `codec`, each baseline), every codec fed
    and scored in `domain`.

    With DNSMOS on, each speech file also gets a "reference" row with the uncoded
    file's scores. With `spectrogram_dir`, one PNG per file is written there
    (`spectrogram_panels` says which decodings it shows).
    """
    from tqdm import tqdm

    use = use or MetricSet(visqol=use_visqol)
    names = SpectrogramNames()
    rows: list[Row] = []
    rate = domain.rate
    for item in tqdm(files, desc="eval", unit="file", disable=not progress):
        ref = load_reference(item.path, rate, domain.channels)
        seconds = ref.shape[-1] / rate
        common = {"file": str(item.path), "category": item.category, "seconds": seconds}
        if use.dnsmos and item.category == "speech":
            rows.append(
                Row(
                    **common,
                    codec=REFERENCE,
                    setting=0.0,
                    kbps=None,
                    si_snr=None,
                    mel_distance=None,
                    **_finite(metrics.dnsmos(ref, rate)),
                )
            )
        decoded: list[tuple[str, float, np.ndarray]] = []
        for label, setting, deg, n_bytes in _decodings(
            ref, bandwidths, baselines, codec, codec_label, domain
        ):
            rows.append(
                Row(
                    **common,
                    codec=label,
                    setting=setting,
                    kbps=metrics.kbps(n_bytes, seconds),
                    **score(ref, deg, item.category, use.visqol, use, domain),
                )
            )
            if spectrogram_dir is not None:
                decoded.append((label, setting, deg))
        if spectrogram_dir is not None:
            from neucomp.eval import spectrogram

            spectrogram.write(
                Path(spectrogram_dir) / names.next(item),
                spectrogram_panels(ref, decoded, codec_label),
                rate,
                title=f"{item.path.name} ({item.category})",
            )
    return rows


def spectrogram_panels(
    ref: np.ndarray, decoded: Sequence[tuple[str, float, np.ndarray]], codec_label: str
) -> list[tuple[str, np.ndarray]]:
    """Reference, `codec_label` at each bandwidth, then Opus at each rate that equals one
    of those bandwidths (if none does, the Opus rate nearest to one of them)."""
    ours = [(s, x) for label, s, x in decoded if label == codec_label]
    opus = [(s, x) for label, s, x in decoded if label == "opus"]
    rates = {s for s, _ in ours}
    matching = [(s, x) for s, x in opus if s in rates]
    if not matching and opus and rates:
        matching = [min(opus, key=lambda o: min(abs(math.log(o[0] / r)) for r in rates))]
    panels = [("reference", ref)]
    panels += [(f"{codec_label} {s:g} kbps", x) for s, x in ours]
    panels += [(f"opus {s:g} kbps", x) for s, x in matching]
    return panels


@dataclass
class SpectrogramNames:
    """File names "<category>_<stem>.png", numbered where two files share one."""

    used: set[str] = field(default_factory=set)

    def next(self, item: EvalFile) -> str:
        base = f"{item.category}_{item.path.stem}"
        name, n = f"{base}.png", 2
        while name in self.used:
            name, n = f"{base}_{n}.png", n + 1
        self.used.add(name)
        return name


def _decodings(
    ref: np.ndarray,
    bandwidths: Sequence[float],
    baselines: Sequence[Baseline],
    codec: CodecFn | None,
    codec_label: str,
    domain: Domain = DEFAULT_DOMAIN,
) -> Iterator[tuple[str, float, np.ndarray, int]]:
    """(codec label, nominal kbps, decoded audio in `domain`, compressed bytes)."""
    length = ref.shape[-1]
    if codec is not None:
        for bw in bandwidths:
            decoded, rate, n_bytes = codec(ref, domain.rate, bw)
            yield codec_label, bw, _in_domain(decoded, rate, domain, length), n_bytes
    for b in baselines:
        result = round_trip(ref, domain.rate, b)
        yield b.codec, float(b.bitrate), result.audio, result.n_bytes
