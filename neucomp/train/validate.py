"""Periodic validation on the dev-eval clips: SI-SNR and mel distance per bandwidth.

Only for watching the curve during training; the numbers users see come from
`neucomp eval`. Clips are loaded once, resampled to the model's rate and channels.
"""

from __future__ import annotations

import csv
from pathlib import Path

import numpy as np
import soundfile as sf
import soxr
import torch

from neucomp.model import Codec, CodecConfig
from neucomp.train.losses import MultiScaleMelLoss, si_snr


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
        self.mel = MultiScaleMelLoss(config.sample_rate)

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
                snrs.append(float(si_snr(x, y).mean()))
                mels.append(float(self.mel(x, y)))
            results[f"sisnr_{bw:g}"] = float(np.mean(snrs))
            results[f"mel_{bw:g}"] = float(np.mean(mels))
        model.train(was_training)
        new = not log_path.exists()
        with log_path.open("a", newline="") as f:
            w = csv.DictWriter(f, fieldnames=["step", *results])
            if new:
                w.writeheader()
            w.writerow({"step": step, **results})
        summary = "  ".join(
            f"{bw:g}k: {results[f'sisnr_{bw:g}']:.2f}dB/{results[f'mel_{bw:g}']:.3f}"
            for bw in self.config.bandwidths
        )
        print(f"[val step {step}] SI-SNR/mel  {summary}", flush=True)
        return results
