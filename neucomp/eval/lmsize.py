"""How much smaller the fast coder and the LM make whole `.ecdc` files than plain
packing (`make lm-size`).

    python -m neucomp.eval.lmsize data/deveval [--bandwidth 1.5,3,6,12,24] [--json FILE]

Every file is coded as `neucomp eval` codes it (mono, 24 kHz) through the public API,
with each installed coder (plain always; fast if the model's tables are installed; the
LM if its LM is), and the *whole* container sizes (header, chunk headers and trailer
included) are summed per bandwidth and category. A coder's saving is
1 − Σ its bytes / Σ plain bytes: what a user sees on disk, not the payload alone.
"""

from __future__ import annotations

import argparse
import json
from collections import defaultdict
from pathlib import Path

from tqdm import tqdm

from neucomp.audio import load_reference
from neucomp.eval.report import CATEGORY_ORDER
from neucomp.eval.runner import EVAL_RATE, find_files

CODERS = ("plain", "fast", "lm")


def installed_coders(model: str | None = None) -> list[str]:
    """The coders this model can use here: plain, and fast / lm where installed."""
    from neucomp import registry
    from neucomp.errors import ModelError, UsageError

    codec = registry.load_model(model)
    found = ["plain"]
    for name in CODERS[1:]:
        try:
            registry.coder(codec, name)
        except (ModelError, UsageError):
            continue
        found.append(name)
    return found


def measure(refs: list[str], bandwidths: list[float], model: str | None = None) -> dict:
    """{bandwidth: {category | "all": {"plain": bytes, "fast": bytes, "lm": bytes,
    "files": n}}}, a coder's key only where it is installed."""
    import neucomp

    coders = installed_coders(model)
    sizes: dict = defaultdict(lambda: defaultdict(lambda: {**dict.fromkeys(coders, 0), "files": 0}))
    files = find_files(refs)
    for item in tqdm(files, desc="lm-size", unit="file"):
        audio = load_reference(item.path, EVAL_RATE)
        for bw in bandwidths:
            coded = {
                c: len(neucomp.compress(audio, EVAL_RATE, bandwidth=bw, coder=c, model=model))
                for c in coders
            }
            for key in (item.category, "all"):
                cell = sizes[bw][key]
                for c in coders:
                    cell[c] += coded[c]
                cell["files"] += 1
    return {bw: dict(per_cat) for bw, per_cat in sizes.items()}


def saving(cell: dict, coder: str = "lm") -> float:
    """Percent by which the files of ``coder`` are smaller than the plain ones."""
    return 100.0 * (1.0 - cell[coder] / cell["plain"])


def table(sizes: dict) -> str:
    categories = [c for c in (*CATEGORY_ORDER, "other") if any(c in v for v in sizes.values())]
    cols = [*categories, "all"]
    first = next(iter(sizes.values()))["all"]
    coders = [c for c in CODERS[1:] if c in first]
    lines = [
        "| kbps | coder | " + " | ".join(cols) + " | bytes | plain bytes |",
        "|---:|---|" + "---:|" * (len(cols) + 2),
    ]
    for bw, per_cat in sizes.items():
        total = per_cat["all"]
        for coder in coders:
            cells = [f"{saving(per_cat[c], coder):.1f} %" if c in per_cat else "-" for c in cols]
            lines.append(
                f"| {bw:g} | {coder} | "
                + " | ".join(cells)
                + f" | {total[coder]} | {total['plain']} |"
            )
    if not coders:
        lines.append("| | (neither the fast tables nor the LM is installed) |")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m neucomp.eval.lmsize", description=__doc__)
    ap.add_argument("refs", nargs="+", help="audio files or folders (speech/music/sfx)")
    ap.add_argument("--bandwidth", default="1.5,3,6,12,24", help="kbps, comma-separated")
    ap.add_argument("--model", default=None, help="codec model name or path")
    ap.add_argument("--json", type=Path, default=None, help="also write the sizes here")
    args = ap.parse_args(argv)
    bandwidths = [float(b) for b in args.bandwidth.split(",")]
    sizes = measure(args.refs, bandwidths, args.model)
    print("File-size saving of each coder over plain packing (whole .ecdc files):\n")
    print(table(sizes))
    if args.json:
        doc = {f"{bw:g}": per_cat for bw, per_cat in sizes.items()}
        args.json.write_text(json.dumps(doc, indent=1) + "\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
