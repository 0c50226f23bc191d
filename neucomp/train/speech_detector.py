"""Train the encoder's speech detector (neucomp.audio.speech) on the corpus.

    python -m neucomp.train speech-detector --corpus data/corpus24 --deveval data/deveval \
        [--windows 40] [--out neucomp/audio/speech_weights.py]

Windows of 2, 5 and 10 s are cut from each corpus package, joining its files one after
another as a recording would run (speech prompts with their pauses, short effects
back to back), half of them with a noise floor 40-60 dB down as real recordings have
(the corpus's prompts are padded with digital silence); a window is speech when its
package's files are. Every package gives the
same number of windows, and each class weighs half, so the 17,535 speech prompts do not
drown the 271 music files. The fit is a one-hidden-layer classifier on standardised
features (neucomp.audio.speech.speech_probability); it is judged leave-one-package-out
(no package is in its own test) and on the dev-eval clips, whole and as 2 s live
windows, and the weights are written out as a Python module with those numbers in its
docstring.
"""

from __future__ import annotations

import argparse
import csv
import json
import time
from collections import defaultdict
from pathlib import Path

import numpy as np
import soundfile as sf

from neucomp.audio.speech import (
    FrameAnalyser,
    speech_probability,
    window_feature_names,
    window_features,
)

WINDOW_SECONDS = (2.0, 5.0, 10.0)
RATE = 24000


def _features(audio: np.ndarray, rate: int) -> np.ndarray:
    rows, bands = FrameAnalyser(rate).push(audio)
    return window_features(rows, bands)


def _read(path: Path) -> np.ndarray:
    audio, rate = sf.read(str(path), dtype="float32", always_2d=True)
    if rate != RATE:
        raise SystemExit(f"{path}: expected {RATE} Hz, got {rate}")
    return audio.mean(axis=1)


def corpus_windows(
    corpus: Path, per_package: int, seed: int
) -> tuple[np.ndarray, np.ndarray, list[str]]:
    """Features [N, F], labels [N] (1 = speech) and the package of each window."""
    groups: dict[tuple[str, bool], list[str]] = defaultdict(list)
    with open(corpus / "manifest.tsv", newline="") as fh:
        for row in csv.DictReader(fh, delimiter="\t"):
            groups[(row["package"], row["category"] == "speech")].append(row["path"])
    rng = np.random.default_rng(seed)
    feats, labels, packages = [], [], []
    for (package, speech), paths in sorted(groups.items()):
        for i in range(per_package):
            length = int(WINDOW_SECONDS[i % len(WINDOW_SECONDS)] * RATE)
            parts, have = [], 0
            for _ in range(200):  # enough files to fill the window, or as many as there are
                if have >= length:
                    break
                audio = _read(corpus / paths[rng.integers(len(paths))])
                parts.append(audio)
                have += len(audio)
            audio = np.concatenate(parts)[:length]
            rms = float(np.sqrt(np.mean(audio**2)))
            if i % 2:  # a recording's noise floor, 40-60 dB down, in half the windows
                floor = rms * 10 ** (-rng.uniform(40, 60) / 20)
                audio = audio + floor * rng.standard_normal(len(audio)).astype(np.float32)
            if len(audio) > length // 2 and rms > 1e-4:
                feats.append(_features(audio, RATE))
                labels.append(int(speech))
                packages.append(package)
    return np.array(feats), np.array(labels), packages


def fit_classifier(
    x: np.ndarray, y: np.ndarray, weight: np.ndarray, hidden: int = 16, seed: int = 0
) -> dict:
    """A one-hidden-layer (tanh) classifier on standardised features, by full-batch Adam
    on the weighted cross-entropy with weight decay; small, so it fits in seconds."""
    import torch

    torch.manual_seed(seed)
    mean, scale = x.mean(axis=0), x.std(axis=0) + 1e-9
    z = torch.tensor((x - mean) / scale, dtype=torch.float32)
    t = torch.tensor(y, dtype=torch.float32)
    w = torch.tensor(weight / weight.mean(), dtype=torch.float32)
    net = torch.nn.Sequential(
        torch.nn.Linear(z.shape[1], hidden), torch.nn.Tanh(), torch.nn.Linear(hidden, 1)
    )
    opt = torch.optim.AdamW(net.parameters(), lr=1e-2, weight_decay=1e-2)
    for _ in range(400):
        opt.zero_grad()
        logits = net(torch.clamp(z, -8, 8)).squeeze(1)
        loss = (
            w * torch.nn.functional.binary_cross_entropy_with_logits(logits, t, reduction="none")
        ).mean()
        loss.backward()
        opt.step()
    first, last = net[0], net[2]
    return {
        "names": window_feature_names(),
        "mean": mean.tolist(),
        "scale": scale.tolist(),
        "w1": first.weight.detach().T.tolist(),
        "b1": first.bias.detach().tolist(),
        "w2": last.weight.detach()[0].tolist(),
        "b2": float(last.bias.detach()[0]),
    }


def _balanced_weights(y: np.ndarray, packages: list[str]) -> np.ndarray:
    """Each class weighs half in all, and within a class each package the same."""
    weight = np.zeros(len(y))
    for label in (0, 1):
        in_class = np.flatnonzero(y == label)
        names = sorted({packages[i] for i in in_class})
        for name in names:
            idx = [i for i in in_class if packages[i] == name]
            weight[idx] = 0.5 / len(names) / len(idx)
    return weight * len(y)


def _predict(model: dict, x: np.ndarray) -> np.ndarray:
    return np.array([speech_probability(row, model) for row in x])


def leave_one_package_out(x: np.ndarray, y: np.ndarray, packages: list[str]) -> dict[str, float]:
    """Accuracy on each package's windows, by a model fitted without that package."""
    out = {}
    for name in sorted(set(packages)):
        test = np.array([p == name for p in packages])
        rest = [p for p, t in zip(packages, test, strict=True) if not t]
        model = fit_classifier(x[~test], y[~test], _balanced_weights(y[~test], rest))
        out[name] = float(np.mean((_predict(model, x[test]) > 0.5) == y[test]))
    return out


def deveval_scores(model: dict, deveval: Path) -> dict[str, dict[str, float]]:
    """Per dev-eval category: the share of clips judged speech, whole and in 2 s windows."""
    import soxr

    seen: dict[str, list[float]] = defaultdict(list)
    windows: dict[str, list[float]] = defaultdict(list)
    with open(deveval / "manifest.tsv", newline="") as fh:
        for row in csv.DictReader(fh, delimiter="\t"):
            audio, rate = sf.read(str(deveval / row["file"]), dtype="float32", always_2d=True)
            audio = soxr.resample(audio.mean(axis=1), rate, RATE)
            category = row["category"]
            seen[category].append(float(_predict(model, _features(audio, RATE)[None])[0] > 0.5))
            step = 2 * RATE
            for i in range(0, len(audio) - step + 1, step):
                f = _features(audio[i : i + step], RATE)
                windows[category].append(float(_predict(model, f[None])[0] > 0.5))
    return {
        c: {
            "clips": len(v),
            "judged_speech": float(np.mean(v)),
            "windows_2s": float(np.mean(windows[c])),
        }
        for c, v in seen.items()
    }


def write_module(path: Path, model: dict, report: dict) -> None:
    lines = [
        '"""The speech detector\'s weights (neucomp.audio.speech): written by',
        "`python -m neucomp.train speech-detector`, not by hand.",
        "",
        "How it scored when written:",
        "",
    ]
    lines += [f"    {line}" for line in json.dumps(report, indent=1).splitlines()]
    lines += ['"""', "", "WEIGHTS = " + json.dumps(model, indent=1), ""]
    path.write_text("\n".join(lines))


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m neucomp.train speech-detector")
    parser.add_argument("--corpus", default="data/corpus24")
    parser.add_argument("--deveval", default="data/deveval")
    parser.add_argument("--windows", type=int, default=40, help="windows per package and class")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--out", default="neucomp/audio/speech_weights.py")
    parser.add_argument("--cache", help="keep the corpus windows' features in this .npz")
    args = parser.parse_args(argv)
    t0 = time.time()
    cache = Path(args.cache) if args.cache else None
    if cache and cache.exists():
        saved = np.load(cache)
        x, y, packages = saved["x"], saved["y"], list(saved["packages"])
    else:
        x, y, packages = corpus_windows(Path(args.corpus), args.windows, args.seed)
        if cache:
            np.savez(cache, x=x, y=y, packages=np.array(packages))
    print(f"{len(y)} windows ({int(y.sum())} speech) in {time.time() - t0:.0f} s")
    lopo = leave_one_package_out(x, y, packages)
    for name, acc in lopo.items():
        print(f"  held out {name}: {acc:.3f}")
    model = fit_classifier(x, y, _balanced_weights(y, packages))
    train_acc = float(np.mean((_predict(model, x) > 0.5) == y))
    dev = deveval_scores(model, Path(args.deveval))
    print(json.dumps(dev, indent=1))
    report = {
        "windows": len(y),
        "speech_windows": int(y.sum()),
        "train_accuracy": round(train_acc, 4),
        "held_out_package_accuracy_mean": round(float(np.mean(list(lopo.values()))), 4),
        "held_out_package_accuracy_min": round(float(min(lopo.values())), 4),
        "deveval": dev,
    }
    write_module(Path(args.out), model, report)
    print(f"wrote {args.out}: train accuracy {train_acc:.3f}")
