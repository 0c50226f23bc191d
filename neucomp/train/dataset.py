"""Random training crops from the corpus manifest, with EnCodec-style augmentation.

Crops are drawn with the corpus's sampling weights (categories balanced, band-limited
files down-weighted), given a random gain, and sometimes mixed with a crop of another
category (speech over music, effects over speech …). The sampler owns its RNG so that
a resumed run draws exactly the crops the interrupted one would have drawn.

Crops have the model's channels: a mono model gets the mean of a file's channels, a
stereo model the file mapped by the one channel rule (neucomp.audio.signal: mono
duplicated, more than two channels folded), so it trains on what the engine feeds it.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
import soundfile as sf
import torch

from neucomp.audio.signal import to_model_channels
from neucomp.data.manifest import Entry, load_manifest, sampling_weights


@dataclass
class AugmentConfig:
    mix_prob: float = 0.3  # chance a crop is a mixture of two sources
    mix_snr_db: tuple[float, float] = (-5.0, 10.0)  # level of the main source over the other
    target_rms_db: tuple[float, float] = (-32.0, -14.0)  # random loudness of the result
    min_rms_db: float = -50.0  # crops quieter than this are drawn again
    # Stereo models: chance that left and right are swapped (a mirrored stereo image is
    # as real as the original; no RNG draw at all for mono, so mono runs replay exactly).
    swap_prob: float = 0.0


class CropSampler:
    def __init__(
        self,
        corpus_dir: str | Path,
        sample_rate: int,
        segment_s: float,
        seed: int,
        augment: AugmentConfig | None = None,
        channels: int = 1,
        shares: dict[str, float] | None = None,
        preload: bool = False,
    ) -> None:
        self.root = Path(corpus_dir)
        self.entries = load_manifest(self.root / "manifest.tsv")
        if not self.entries:
            raise RuntimeError(f"no audio in {self.root / 'manifest.tsv'}: run `make data` first")
        weights = np.asarray(sampling_weights(self.entries, shares), dtype=np.float64)
        self.probs = weights / weights.sum()
        self.categories = np.array([e.category for e in self.entries])
        self.sample_rate = sample_rate
        self.length = int(round(segment_s * sample_rate))
        self.channels = channels
        self.augment = augment or AugmentConfig()
        self.rng = np.random.default_rng(seed)
        # Decoded once, when asked: a GPU step takes tens of milliseconds, and decoding
        # an Opus shard crop by crop would starve it. The crops drawn are the same.
        self.cache: list[np.ndarray] | None = None
        if preload:
            self.cache = [self._decode(e) for e in self.entries]

    def _decode(self, entry: Entry) -> np.ndarray:
        audio, _ = sf.read(str(self.root / entry.path), dtype="float32", always_2d=True)
        return self._to_channels(audio)

    def _to_channels(self, audio: np.ndarray) -> np.ndarray:
        """[frames, file channels] → [model channels, frames] (mono: [frames])."""
        if self.channels == 1:
            return audio.mean(axis=1)
        return to_model_channels(np.ascontiguousarray(audio.T), self.channels)

    def _read_crop(self, idx: int) -> np.ndarray:
        if self.cache is not None:
            whole = self.cache[idx]
            total = whole.shape[-1]
            crop = whole
            if total > self.length:
                start = int(self.rng.integers(0, total - self.length + 1))
                crop = whole[..., start : start + self.length]
        else:
            with sf.SoundFile(str(self.root / self.entries[idx].path)) as f:
                total = f.frames
                if total > self.length:
                    start = int(self.rng.integers(0, total - self.length + 1))
                    f.seek(start)
                    audio = f.read(self.length, dtype="float32", always_2d=True)
                else:
                    audio = f.read(dtype="float32", always_2d=True)
            crop = self._to_channels(audio)
        if crop.shape[-1] < self.length:  # short file: place it at a random offset
            out = np.zeros((*crop.shape[:-1], self.length), dtype=np.float32)
            offset = int(self.rng.integers(0, self.length - crop.shape[-1] + 1))
            out[..., offset : offset + crop.shape[-1]] = crop
            crop = out
        return crop

    def _draw(self, exclude_category: str | None = None) -> np.ndarray:
        probs = self.probs
        if exclude_category is not None:
            probs = np.where(self.categories == exclude_category, 0.0, probs)
            if probs.sum() == 0:
                probs = self.probs
            probs = probs / probs.sum()
        for _ in range(8):
            idx = int(self.rng.choice(len(self.entries), p=probs))
            crop = self._read_crop(idx)
            if _rms_db(crop) > self.augment.min_rms_db:
                return crop
        return crop  # a quiet crop now and then does no harm

    def sample(self) -> np.ndarray:
        aug = self.augment
        idx = int(self.rng.choice(len(self.entries), p=self.probs))
        self.last_category = str(self.categories[idx])  # of the main crop, before any mix
        main = self._read_crop(idx)
        if _rms_db(main) <= aug.min_rms_db:
            main = self._draw()
        if self.rng.random() < aug.mix_prob:
            other = self._draw(exclude_category=str(self.categories[idx]))
            snr = self.rng.uniform(*aug.mix_snr_db)
            gain = 10 ** ((_rms_db(main) - _rms_db(other) - snr) / 20)
            main = main + gain * other
        target = self.rng.uniform(*aug.target_rms_db)
        main = main * 10 ** ((target - _rms_db(main)) / 20)
        peak = float(np.abs(main).max())
        if peak > 0.99:
            main = main * (0.99 / peak)
        if self.channels == 2 and aug.swap_prob and self.rng.random() < aug.swap_prob:
            main = main[::-1]
        return np.ascontiguousarray(main, dtype=np.float32)

    def batch(self, batch_size: int) -> torch.Tensor:
        """[batch_size, channels, length] float32; ``batch_categories`` then holds each
        crop's category (its main file's: a mix keeps the category it was mixed into)."""
        crops, categories = [], []
        for _ in range(batch_size):
            crops.append(self.sample())
            categories.append(self.last_category)
        self.batch_categories = categories
        crops = np.stack(crops)
        return torch.from_numpy(crops if self.channels > 1 else crops[:, None])

    def state_dict(self) -> dict:
        return {"rng": self.rng.bit_generator.state}

    def load_state_dict(self, state: dict) -> None:
        self.rng.bit_generator.state = state["rng"]


def _rms_db(x: np.ndarray) -> float:
    return float(10 * np.log10(np.mean(np.square(x, dtype=np.float64)) + 1e-12))
