"""Periodic validation on the dev-eval clips, per bandwidth: SI-SNR, mel distance and
log-spectral distance per band on every clip (a stereo model: also the side LSD and the
level-difference error); PESQ-wb and STOI on the speech clips.

Only for watching the curve during training (on at most `max_clips` clips, cut to
`max_seconds`); the metrics are `neucomp.eval.metrics`', the same definitions as
`neucomp eval` reports. Clips are loaded once, resampled to the model's rate and channels.
PESQ and STOI columns are left out when pesq or pystoi cannot be imported; PESQ costs
about 0.1–0.3 s per 5-s clip and bandwidth.
"""

from __future__ import annotations

import csv
from pathlib import Path

import numpy as np
import soundfile as sf
import torch

from neucomp.audio.signal import resample, to_model_channels
from neucomp.audio.writers import atomic_write
from neucomp.eval import metrics
from neucomp.model import Codec, CodecConfig

#: The category of clips that get PESQ and STOI (their parent folder's name).
SPEECH = "speech"


class Validator:
    def __init__(
        self, deveval_dir: str | Path, config: CodecConfig, max_clips: int, max_seconds: float
    ) -> None:
        self.config = config
        self.clips: list[tuple[str, torch.Tensor]] = []
        root = Path(deveval_dir)
        files = sorted(root.rglob("*.flac")) + sorted(root.rglob("*.wav"))
        # Spread the picks over categories: files are sorted by sub-folder.
        if len(files) > max_clips:
            picks = np.linspace(0, len(files) - 1, max_clips).round().astype(int)
            files = [files[i] for i in picks]
        for path in files:
            audio, sr = sf.read(str(path), dtype="float32", always_2d=True)
            audio = audio[: int(max_seconds * sr)]
            audio = to_model_channels(np.ascontiguousarray(audio.T), config.channels)
            audio = resample(audio, sr, config.sample_rate)
            category = path.parent.name
            self.clips.append((category, torch.from_numpy(np.ascontiguousarray(audio))[None]))
        # Checked once: a missing package drops its columns without a word.
        self.speech_metrics = [m for m in ("pesq", "stoi") if metrics.missing_for(m) is None]

    @torch.no_grad()
    def run(self, model: Codec, step: int, log_path: Path) -> dict[str, float]:
        if not self.clips:
            return {}
        was_training = model.training
        model.eval()
        device = next(model.parameters()).device
        rate = self.config.sample_rate
        results: dict[str, float] = {}
        for bw in self.config.bandwidths:
            n_q = self.config.n_codebooks_for(bw)
            values: dict[str, list[float]] = {}
            for category, clip in self.clips:
                x = clip.to(device)
                y = model.decode(model.encode(x, n_q))[..., : x.shape[-1]]
                ref, deg = x[0].cpu().numpy(), y[0].cpu().float().numpy()
                scores = {
                    "sisnr": metrics.si_snr(ref, deg),
                    "meldist": metrics.mel_distance(ref, deg, rate),
                    **metrics.lsd_bands(ref, deg, rate),
                }
                if self.config.channels == 2:  # does the stereo image survive?
                    scores.update(metrics.stereo_scores(ref, deg, rate))
                if category == SPEECH:
                    scores.update(_speech_scores(self.speech_metrics, ref, deg, rate))
                for key, value in scores.items():
                    values.setdefault(key, []).append(value)
            for key, vals in values.items():
                finite = [v for v in vals if np.isfinite(v)]
                if finite:  # no column for a band above Nyquist or a clip PESQ finds silent
                    results[f"{key}_{bw:g}"] = float(np.mean(finite))
        model.train(was_training)
        append_row(log_path, {"step": step, **results})
        print(f"[val step {step}] {self._summary(results)}", flush=True)
        return results

    def _summary(self, results: dict[str, float]) -> str:
        """One line: SI-SNR/mel (and PESQ when measured) per bandwidth."""
        parts = []
        for bw in self.config.bandwidths:
            part = f"{bw:g}k: {results[f'sisnr_{bw:g}']:.2f}dB/{results[f'meldist_{bw:g}']:.3f}"
            if f"pesq_{bw:g}" in results:
                part += f"/{results[f'pesq_{bw:g}']:.2f}"
            parts.append(part)
        names = "SI-SNR/mel/PESQ" if any(k.startswith("pesq_") for k in results) else "SI-SNR/mel"
        return f"{names}  " + "  ".join(parts)


def _speech_scores(
    names: list[str], ref: np.ndarray, deg: np.ndarray, rate: int
) -> dict[str, float]:
    """PESQ and/or STOI; NaN where PESQ finds no speech or the clip is too short."""
    out: dict[str, float] = {}
    if float(np.abs(ref).max(initial=0.0)) < 1e-6:  # silence: PESQ divides by its peak
        return dict.fromkeys(names, float("nan"))
    for name in names:
        fn = metrics.pesq_wb if name == "pesq" else metrics.stoi
        try:
            out[name] = fn(ref, deg, rate)
        except RuntimeError:  # pesq's errors, e.g. a clip under 0.25 s
            out[name] = float("nan")
    return out


def append_row(path: Path, row: dict) -> None:
    """Append `row` to a CSV log. A column the file lacks widens its header (the file is
    rewritten atomically, older rows get empty cells), so a run that outlives a change of
    metrics keeps one continuous log."""
    columns: list[str] = []
    if path.exists():
        with path.open(newline="") as f:
            columns = next(csv.reader(f), [])  # the header only: the usual case appends
    missing = [k for k in row if k not in columns]
    if columns and not missing:
        with path.open("a", newline="") as f:
            csv.DictWriter(f, fieldnames=columns, restval="").writerow(row)
        return
    rows: list[dict] = []
    if columns:
        with path.open(newline="") as f:
            rows = list(csv.DictReader(f))
    columns += missing
    with atomic_write(path, text=True) as f:
        writer = csv.DictWriter(f, fieldnames=columns, restval="")
        writer.writeheader()
        writer.writerows([*rows, row])
