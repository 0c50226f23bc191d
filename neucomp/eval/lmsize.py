"""How much smaller `--lm` makes whole `.ecdc` files than plain packing (`make lm-size`).

    python -m neucomp.eval.lmsize data/deveval [--bandwidth 1.5,3,6,12,24] [--json FILE]

Every file is coded as `neucomp eval` codes it (mono, 24 kHz) through the public API,
once plainly and once with the LM, and the *whole* container sizes (header, chunk
headers and trailer included) are summed per bandwidth and category. The saving is
1 − Σ lm bytes / Σ plain bytes: what a user sees on disk, not the payload alone.
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


def measure(refs: list[str], bandwidths: list[float], model: str | None = None) -> dict:
    """{bandwidth: {category | "all": {"plain": bytes, "lm": bytes, "files": n}}}."""
    import neucomp

    sizes: dict = defaultdict(lambda: defaultdict(lambda: {"plain": 0, "lm": 0, "files": 0}))
    files = find_files(refs)
    for item in tqdm(files, desc="lm-size", unit="file"):
        audio = load_reference(item.path, EVAL_RATE)
        for bw in bandwidths:
            plain = neucomp.compress(audio, EVAL_RATE, bandwidth=bw, model=model)
            coded = neucomp.compress(audio, EVAL_RATE, bandwidth=bw, lm=True, model=model)
            for key in (item.category, "all"):
                cell = sizes[bw][key]
                cell["plain"] += len(plain)
                cell["lm"] += len(coded)
                cell["files"] += 1
    return {bw: dict(per_cat) for bw, per_cat in sizes.items()}


def saving(cell: dict) -> float:
    """Percent by which the LM files are smaller than the plain ones."""
    return 100.0 * (1.0 - cell["lm"] / cell["plain"])


def table(sizes: dict) -> str:
    categories = [c for c in (*CATEGORY_ORDER, "other") if any(c in v for v in sizes.values())]
    cols = [*categories, "all"]
    lines = [
        "| kbps | " + " | ".join(cols) + " | plain bytes | lm bytes |",
        "|---:|" + "---:|" * (len(cols) + 2),
    ]
    for bw, per_cat in sizes.items():
        cells = [f"{saving(per_cat[c]):.1f} %" if c in per_cat else "-" for c in cols]
        total = per_cat["all"]
        lines.append(f"| {bw:g} | " + " | ".join(cells) + f" | {total['plain']} | {total['lm']} |")
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
    print("File-size saving of --lm over plain packing (whole .ecdc files):\n")
    print(table(sizes))
    if args.json:
        doc = {f"{bw:g}": per_cat for bw, per_cat in sizes.items()}
        args.json.write_text(json.dumps(doc, indent=1) + "\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
