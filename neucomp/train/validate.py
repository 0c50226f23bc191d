"""Periodic validation on the dev-eval clips: SI-SNR and mel distance per bandwidth.

Only for watching the curve during training (on at most `max_clips` clips, cut to
`max_seconds`); the metrics are `neucomp.eval.metrics`', the same definitions as
`neucomp eval` reports. Clips are loaded once, resampled to the model's rate and channels.
"""

from __future__ import annotations

import csv
from pathlib import Path

import numpy as np
import soundfile as sf
import soxr
import torch

from neucomp.eval import metrics
from neucomp.model import Codec, CodecConfig


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
            if config.channels == 1:
                audio = audio.mean(axis=1, keepdims=True)
            elif audio.shape[1] == 1:
                audio = np.repeat(audio, config.channels, axis=1)
            if sr != config.sample_rate:
                audio = soxr.resample(audio, sr, config.sample_rate)
            category = path.parent.name
            self.clips.append((category, torch.from_numpy(np.ascontiguousarray(audio.T))[None]))

    @torch.no_grad()
    def run(self, model: Codec, step: int, log_path: Path) -> dict[str, float]:
        if not self.clips:
            return {}
        was_training = model.training
        model.eval()
        device = next(model.parameters()).device
        results: dict[str, float] = {}
        for bw in self.config.bandwidths:
            n_q = self.config.n_codebooks_for(bw)
            snrs, mels = [], []
            for _, clip in self.clips:
                x = clip.to(device)
                y = model.decode(model.encode(x, n_q))[..., : x.shape[-1]]
                ref, deg = x[0].cpu().numpy(), y[0].cpu().float().numpy()
                snrs.append(metrics.si_snr(ref, deg))
                mels.append(metrics.mel_distance(ref, deg, self.config.sample_rate))
            results[f"sisnr_{bw:g}"] = float(np.mean(snrs))
            results[f"meldist_{bw:g}"] = float(np.mean(mels))
        model.train(was_training)
        append_row(log_path, {"step": step, **results})
        summary = "  ".join(
            f"{bw:g}k: {results[f'sisnr_{bw:g}']:.2f}dB/{results[f'meldist_{bw:g}']:.3f}"
            for bw in self.config.bandwidths
        )
        print(f"[val step {step}] SI-SNR/mel  {summary}", flush=True)
        return results


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
    tmp = path.with_name(path.name + ".tmp")
    with tmp.open("w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=columns, restval="")
        writer.writeheader()
        writer.writerows([*rows, row])
    tmp.replace(path)
