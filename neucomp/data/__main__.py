"""`python -m neucomp.data {corpus,shard,summary,devset} …`: build the data (docs/DATA.md).

python -m neucomp.data corpus --out data                 # make data
python -m neucomp.data shard --out .shards/shard0        # make shard
python -m neucomp.data devset --out data/deveval         # make eval-data
python -m neucomp.data summary --corpus data/corpus24    # hours per category
"""

from __future__ import annotations

import argparse
import shutil
import sys
from pathlib import Path


def main(argv: list[str] | None = None) -> int:
    from neucomp.data.shards import SHARD_FORMATS

    parser = argparse.ArgumentParser(
        prog="python -m neucomp.data",
        description=__doc__,
        formatter_class=argparse.RawTextHelpFormatter,
    )
    sub = parser.add_subparsers(dest="cmd", required=True)
    b = sub.add_parser("corpus", help="fetch and convert the train packages")
    b.add_argument("--out", type=Path, default=Path("data"))
    b.add_argument("--packages", nargs="*", help="only these packages (default: all)")
    b.add_argument("--workers", type=int, default=2, help="conversion processes (max 2)")
    s = sub.add_parser("shard", help="a small weighted random subset for a GPU machine")
    s.add_argument("--corpus", type=Path, default=Path("data/corpus24"))
    s.add_argument("--out", type=Path, required=True)
    s.add_argument("--max-mib", type=float, default=24.0)
    s.add_argument("--format", choices=SHARD_FORMATS, default="opus", dest="fmt")
    s.add_argument("--seed", type=int, default=0)
    s.add_argument("--crop-s", type=float, default=8.0)
    s.add_argument(
        "--opus-level", type=float, default=0.75, help="0 best … 1 smallest (0.75: ~70 kbps)"
    )
    sub.add_parser("summary", help="hours per category of an existing corpus").add_argument(
        "--corpus", type=Path, default=Path("data/corpus24")
    )
    d = sub.add_parser("devset", help="fetch the dev-eval packages and write the clip set")
    d.add_argument("--out", type=Path, default=Path("data/deveval"))
    d.add_argument("--seed", type=int, default=0)
    d.add_argument("--cache", type=Path, default=None, help="folder for .deb files")
    args = parser.parse_args(argv)

    from neucomp.data.sources import DataBuildError

    try:
        if args.cmd == "corpus":
            from neucomp.data.corpus import build

            build(args.out, args.packages, workers=max(1, min(2, args.workers)))
        elif args.cmd == "shard":
            from neucomp.data.shards import make_shard

            if args.out.exists():
                shutil.rmtree(args.out)
            rows = make_shard(
                args.corpus / "manifest.tsv",
                args.out,
                args.max_mib,
                args.seed,
                args.crop_s,
                args.fmt,
                args.opus_level,
            )
            minutes = sum(float(r["duration_s"]) for r in rows) / 60
            print(f"{len(rows)} crops, {minutes:.1f} min of audio in {args.out}")
        elif args.cmd == "summary":
            from neucomp.data.corpus import summarize
            from neucomp.data.manifest import load_manifest

            print(summarize(load_manifest(args.corpus / "manifest.tsv")))
        else:
            _devset(args)
    except DataBuildError as err:
        print(f"error: {err}", file=sys.stderr)
        return 1
    return 0


def _devset(args: argparse.Namespace) -> None:
    from neucomp.data.devset import build

    rows = build(args.out, args.seed, args.cache)
    for cat in ("speech", "music", "sfx"):
        sel = [r for r in rows if r["category"] == cat]
        seconds = sum(float(r["duration_s"]) for r in sel)
        print(f"{cat:7s} {len(sel):3d} clips {seconds / 60:5.1f} min")
    print(f"manifest: {args.out / 'manifest.tsv'}")


if __name__ == "__main__":
    sys.exit(main())
