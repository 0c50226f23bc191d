"""The codes the LM learns: crops of the training corpus (and the dev-eval clips) encoded
once by the codec, cached in the run folder under the codec's hash, so retraining after
a codec change is the same command. Files are split by a hash of their path: every 20th
file is held out for validation."""

from __future__ import annotations

import hashlib
import time
from pathlib import Path

import numpy as np
import soundfile as sf
import torch

from neucomp.audio.signal import to_model_channels
from neucomp.audio.writers import atomic_write
from neucomp.data.manifest import load_manifest, sampling_weights
from neucomp.level import chunk_gain_db


def log(msg: str) -> None:
    print(f"[{time.strftime('%H:%M:%S')}] {msg}", flush=True)


def _read_crop(path: Path, length: int, rng: np.random.Generator, channels: int = 1) -> np.ndarray:
    """Crop [channels, length] at a random offset (zero-padded if the file is short),
    mapped to the codec's channels by the one channel rule (mono: the mean)."""
    with sf.SoundFile(str(path)) as f:
        if f.frames > length:
            f.seek(int(rng.integers(0, f.frames - length + 1)))
        audio = f.read(min(length, f.frames), dtype="float32", always_2d=True)
    audio = to_model_channels(np.ascontiguousarray(audio.T), channels)
    out = np.zeros((channels, length), dtype=np.float32)
    out[:, : audio.shape[1]] = audio
    # At the level the container codes every chunk at (neucomp.level), not at a random
    # one: the envelope's codes carry the level, and an LM that learned random levels
    # spends bits on levels the streams never have (E18, E19).
    return np.clip(out * 10 ** (chunk_gain_db(out) / 20), -0.99, 0.99)


def _is_val(rel_path: str) -> bool:
    return hashlib.sha256(rel_path.encode()).digest()[0] % 20 == 0


def extract_codes(codec, cfg: dict, val: bool, n: int, seed: int) -> np.ndarray:
    """[n, n_codebooks, frames] int16 codes of random corpus crops (train or held-out files)."""
    entries = load_manifest(cfg["corpus"])
    weights = np.asarray(sampling_weights(entries), dtype=np.float64)
    keep = np.array([_is_val(e.path) == val for e in entries])
    if not keep.any():
        raise SystemExit(f"no {'validation' if val else 'training'} files in {cfg['corpus']}")
    probs = np.where(keep, weights, 0.0)
    probs /= probs.sum()
    rng = np.random.default_rng(seed)
    length = int(round(cfg["crop_s"] * codec.config.sample_rate))
    n_q, channels = codec.config.n_codebooks, codec.config.channels
    out = []
    for start in range(0, n, 8):
        idx = rng.choice(len(entries), size=min(8, n - start), p=probs)
        wav = np.stack([_read_crop(entries[i].full_path, length, rng, channels) for i in idx])
        with torch.inference_mode():
            out.append(codec.encode(torch.from_numpy(wav), n_q).to(torch.int16).numpy())
        if start % 400 == 0:
            log(f"  {'val' if val else 'train'} codes: {start}/{n}")
    return np.concatenate(out)


def load_codec(cfg: dict, standin: bool):
    """The codec whose codes the LM learns (or a seeded random-init stand-in for testing)."""
    from neucomp.model import Codec, CodecConfig
    from neucomp.registry import load_model

    if not standin:
        return load_model(cfg["codec"], cached=False)
    torch.manual_seed(1234)
    codec = Codec(CodecConfig()).eval()
    codec.weights_hash = "standin-" + hashlib.sha256(b"random-init seed 1234").hexdigest()[:16]
    return codec


def cached_codes(codec, cfg: dict) -> tuple[np.ndarray, np.ndarray]:
    """Train and validation codes, extracted once per codec hash and cached in run_dir."""
    run = Path(cfg["run_dir"])
    run.mkdir(parents=True, exist_ok=True)
    path = run / f"codes_{codec.weights_hash[:16]}_{cfg['train_crops']}_{cfg['val_crops']}.npz"
    if path.is_file():
        with np.load(path) as npz:
            return npz["train"], npz["val"]
    log(f"extracting codes with codec {codec.weights_hash[:12]} → {path}")
    train = extract_codes(codec, cfg, False, cfg["train_crops"], cfg["seed"])
    val = extract_codes(codec, cfg, True, cfg["val_crops"], cfg["seed"] + 1)
    with atomic_write(path) as fp:
        np.savez(fp, train=train, val=val)
    return train, val


def deveval_codes(codec, cfg: dict) -> list[np.ndarray]:
    """Codes [32, F] of every dev-eval clip (whole, at the codec's rate and channels),
    cached."""
    manifest = Path(cfg["deveval"])
    if not manifest.is_file():
        return []
    path = Path(cfg["run_dir"]) / f"deveval_{codec.weights_hash[:16]}.npz"
    if path.is_file():
        with np.load(path) as npz:
            return np.split(npz["codes"], npz["ends"][:-1], axis=1)
    from neucomp.audio import load_reference  # how `neucomp eval` feeds the codec too
    from neucomp.data.sources import read_tsv

    clips = []
    cfg_codec = codec.config
    for row in read_tsv(manifest):
        ref = load_reference(
            manifest.parent / row["file"], cfg_codec.sample_rate, cfg_codec.channels
        )
        wav = torch.from_numpy(ref if ref.ndim == 2 else ref[None])[None]
        with torch.inference_mode():
            clips.append(codec.encode(wav, codec.config.n_codebooks)[0].to(torch.int16).numpy())
    ends = np.cumsum([c.shape[1] for c in clips])
    with atomic_write(path) as fp:
        np.savez(fp, codes=np.concatenate(clips, axis=1), ends=ends)
    log(f"dev-eval: {len(clips)} clips, {ends[-1] / codec.config.frame_rate:.0f} s")
    return clips
