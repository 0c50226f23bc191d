"""`make demo`: compress and decompress a short real recording through the real CLI.

Runs `neucomp compress` / `neucomp decompress` as a user would (in a subprocess), puts
everything in build/demo/, and prints sizes, bitrates and the compression ratio.
"""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import numpy as np

from neucomp import BANDWIDTHS as _BANDWIDTHS
from neucomp import DEFAULT_BANDWIDTH, DEFAULT_MODEL

REPO = Path(__file__).resolve().parent.parent
SAMPLE = REPO / "tests" / "data" / "sample.flac"
OUT = REPO / "build" / "demo"
BANDWIDTHS = tuple(f"{b:g}" for b in _BANDWIDTHS)
MAIN_BANDWIDTH = f"{DEFAULT_BANDWIDTH:g}"


def neucomp(*args: str | Path, echo: bool = True) -> None:
    """Run the CLI exactly as a user would; stop the demo if it fails."""
    args = tuple(_short(a) for a in args)  # paths relative to the repo, as a user types them
    if echo:
        print("$ neucomp " + " ".join(args))
    done = subprocess.run([sys.executable, "-m", "neucomp", *args], cwd=REPO)
    if done.returncode:
        sys.exit(done.returncode)


def _short(arg: str | Path) -> str:
    path = Path(arg)
    return str(path.relative_to(REPO)) if path.is_absolute() and REPO in path.parents else str(arg)


def _input() -> Path:
    """The bundled recording, or a synthetic one (clearly announced) if it is missing."""
    if SAMPLE.is_file():
        return SAMPLE
    import soundfile as sf

    print(f"note: {_short(SAMPLE)} is missing; using a synthetic 5 s chord instead.\n")
    rate = 44100
    t = np.arange(5 * rate) / rate
    chord = sum(np.sin(2 * np.pi * f * t) for f in (220.0, 277.2, 329.6)) / 4
    path = OUT / "synthetic.wav"
    sf.write(path, (chord * np.minimum(1, t * 4)).astype(np.float32), rate)
    return path


def _model_installed() -> bool:
    from neucomp.errors import ModelError
    from neucomp.registry import resolve_model_path

    try:
        resolve_model_path(None)
    except ModelError as err:
        print(f"neucomp demo: {err}", file=sys.stderr)
        print("The default model ships in models/; see README.md.", file=sys.stderr)
        return False
    return True


def _lm_installed() -> bool:
    from neucomp.registry import lm_path

    return lm_path(DEFAULT_MODEL).is_file()


def main() -> None:
    import soundfile as sf

    sys.stdout.reconfigure(line_buffering=True)  # keep our lines in order with the CLI's
    OUT.mkdir(parents=True, exist_ok=True)
    if not _model_installed():
        sys.exit(5)
    src = _input()
    info = sf.info(str(src))
    seconds = info.frames / info.samplerate
    print(
        f"input: {_short(src)}: {seconds:.1f} s, {info.samplerate} Hz, {info.channels} ch, "
        f"{src.stat().st_size:,} bytes\n"
    )

    ecdc = OUT / f"{src.stem}.ecdc"
    decoded = OUT / f"{src.stem}.decoded.wav"
    neucomp("compress", "-f", "-b", MAIN_BANDWIDTH, src, ecdc)
    neucomp("decompress", "-f", ecdc, decoded)
    neucomp("info", ecdc)

    size = ecdc.stat().st_size
    print(
        f"\n{MAIN_BANDWIDTH} kbps: {src.stat().st_size:,} bytes → {size:,} bytes "
        f"({size * 8 / seconds / 1000:.2f} kbps actual, ratio {src.stat().st_size / size:.0f}:1)"
    )
    print(f"decoded audio: {_short(decoded)}\n")

    print("other bandwidths:")
    for bw in BANDWIDTHS:
        if bw == MAIN_BANDWIDTH:
            continue
        path = OUT / f"{src.stem}.{bw}kbps.ecdc"
        neucomp("compress", "-q", "-f", "-b", bw, src, path, echo=False)
        n = path.stat().st_size
        print(f"  {bw:>4} kbps: {n:>9,} bytes  {n * 8 / seconds / 1000:6.2f} kbps  {_short(path)}")

    if _lm_installed():
        path = OUT / f"{src.stem}.lm.ecdc"
        neucomp("compress", "-q", "-f", "--lm", "-b", MAIN_BANDWIDTH, src, path, echo=False)
        n = path.stat().st_size
        print(
            f"  {MAIN_BANDWIDTH:>4} kbps with --lm (LM range coder): {n:,} bytes, "
            f"{n * 8 / seconds / 1000:.2f} kbps  {_short(path)}"
        )

    print(
        "\nHow it sounds depends entirely on the trained weights in models/: a placeholder "
        "or\nlightly trained model gives poor audio at any bitrate. Listen to "
        f"{_short(decoded)}."
    )


if __name__ == "__main__":
    main()
