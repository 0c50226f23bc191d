"""Entropy coders side by side on real codes (issue 14): size against plain packing and
one-thread coding speed, per bandwidth and category.

    python -m neucomp.eval.coders extract   # codes of ~2 h of corpus + every dev-eval clip
    python -m neucomp.eval.coders measure   # the table (markdown + JSON) in runs/fastcoder/
    python -m neucomp.eval.coders tables    # train and install models/<codec>.fct (make train-lm)

Codes come from the engine itself (`compress_stream` at 24 kbps: per-chunk levelling,
streaming encoder, 750-frame chunks), read back chunk by chunk; the first K rows of the
32 are the codes at K codebooks (residual VQ). They are cached under the codec's hash.
"""

from __future__ import annotations

import argparse
import csv
import io
import json
import time
from pathlib import Path

import numpy as np

RUN_DIR = Path("runs/fastcoder")
KS = (2, 4, 8, 16, 32)
FRAME_RATE = 75.0
#: Training minutes per corpus category (a mix like the inputs the codec meets).
TRAIN_MINUTES = {"speech": 50.0, "music": 50.0, "sfx": 20.0}
#: Longest excerpt taken from one training file, so long music tracks do not dominate.
MAX_EXCERPT_S = 40.0


def log(msg: str) -> None:
    print(f"[{time.strftime('%H:%M:%S')}] {msg}", flush=True)


# ---------------------------------------------------------------------------- codes


def engine_chunks(codec, audio: np.ndarray, rate: int) -> list[np.ndarray]:
    """The codes [32, f] of each container chunk the engine writes for `audio` [C, T]."""
    from neucomp.audio import ArrayReader
    from neucomp.coding.packing import PlainCoder, unpack_codes
    from neucomp.container import EcdcReader
    from neucomp.engine import compress_stream

    buf = io.BytesIO()
    n_q = codec.config.n_codebooks_for(max(codec.config.bandwidths))
    compress_stream(ArrayReader(audio, rate), buf, codec, n_q, PlainCoder())
    buf.seek(0)
    reader = EcdcReader(buf)
    k = reader.header.num_codebooks
    return [unpack_codes(c.payload, k, c.num_frames).astype(np.int16) for c in reader.iter_chunks()]


def _pack(chunks: list[np.ndarray], labels: list[str]) -> dict[str, np.ndarray]:
    return {
        "codes": np.concatenate(chunks, axis=1),
        "frames": np.array([c.shape[1] for c in chunks], dtype=np.int64),
        "labels": np.array(labels),
    }


def extract_train(codec, corpus: Path, seed: int) -> dict[str, np.ndarray]:
    """Codes of random corpus excerpts, TRAIN_MINUTES per category, no dev-eval package."""
    import soundfile as sf

    from neucomp.data.manifest import load_manifest
    from neucomp.data.packages import DEV_PACKAGES

    entries = [e for e in load_manifest(corpus) if e.package not in DEV_PACKAGES]
    rng = np.random.default_rng(seed)
    chunks: list[np.ndarray] = []
    labels: list[str] = []
    for category, minutes in TRAIN_MINUTES.items():
        pool = [e for e in entries if e.category == category]
        order = rng.permutation(len(pool))
        done = 0.0
        for i in order:
            if done >= minutes * 60:
                break
            e = pool[i]
            with sf.SoundFile(str(e.full_path)) as f:
                length = min(f.frames, int(MAX_EXCERPT_S * f.samplerate))
                if f.frames > length:
                    f.seek(int(rng.integers(0, f.frames - length + 1)))
                audio = f.read(length, dtype="float32", always_2d=True).T
                rate = f.samplerate
            if audio.shape[1] == 0:
                continue
            got = engine_chunks(codec, audio, rate)
            chunks += got
            labels += [category] * len(got)
            done += sum(c.shape[1] for c in got) / codec.config.frame_rate
        log(f"  train {category}: {done / 60:.1f} min")
    return _pack(chunks, labels)


def extract_deveval(codec, manifest: Path) -> dict[str, np.ndarray]:
    """Codes of every dev-eval clip, chunk by chunk as the engine writes them."""
    from neucomp.audio import read_audio

    chunks: list[np.ndarray] = []
    labels: list[str] = []
    clip_ids: list[int] = []
    with open(manifest, newline="", encoding="utf-8") as fp:
        rows = list(csv.DictReader(fp, delimiter="\t"))
    for n, row in enumerate(rows):
        audio, rate = read_audio(manifest.parent / row["file"])
        got = engine_chunks(codec, audio, rate)
        chunks += got
        labels += [row["category"]] * len(got)
        clip_ids += [n] * len(got)
    out = _pack(chunks, labels)
    out["clips"] = np.array(clip_ids, dtype=np.int64)
    return out


def codes_path(codec_hash: str, which: str) -> Path:
    return RUN_DIR / f"{which}_{codec_hash[:16]}.npz"


def load_chunks(path: Path) -> tuple[list[np.ndarray], list[str]]:
    """Per-chunk codes [32, f] and their categories from a cached codes file."""
    with np.load(path) as npz:
        ends = np.cumsum(npz["frames"])[:-1]
        return np.split(npz["codes"].astype(np.int64), ends, axis=1), list(npz["labels"])


def cmd_extract(args: argparse.Namespace) -> None:
    import torch

    from neucomp.registry import load_model

    torch.set_num_threads(1)
    codec = load_model(args.codec)
    RUN_DIR.mkdir(parents=True, exist_ok=True)
    for which, make in (
        ("deveval", lambda: extract_deveval(codec, Path(args.deveval))),
        ("train", lambda: extract_train(codec, Path(args.corpus), args.seed)),
    ):
        path = codes_path(codec.weights_hash, which)
        if path.is_file():
            log(f"{path} exists")
            continue
        t0 = time.time()
        data = make()
        tmp = path.with_name(path.name + ".tmp.npz")
        np.savez(tmp, **data, codec_hash=np.array(codec.weights_hash))
        tmp.replace(path)
        log(
            f"{which}: {data['codes'].shape[1] / codec.config.frame_rate / 60:.1f} min of codes in "
            f"{time.time() - t0:.0f} s → {path}"
        )


# ------------------------------------------------------------------------- coders


class Plain:
    name = "plain"
    table_bytes = 0

    def __init__(self, k: int) -> None:
        self.k = k

    def encode(self, codes: np.ndarray) -> bytes:
        from neucomp.coding.packing import pack_codes

        return pack_codes(codes)

    def decode(self, data: bytes, f: int) -> np.ndarray:
        from neucomp.coding.packing import unpack_codes

        return unpack_codes(data, self.k, f)


class Zstd:
    """zstandard on the codes as u16 symbols, codebook-major (row after row)."""

    def __init__(self, k: int, level: int, dictionary=None) -> None:
        import zstandard

        self.k = k
        self.name = f"zstd-{level}" + ("+dict" if dictionary is not None else "")
        self.table_bytes = len(dictionary.as_bytes()) if dictionary is not None else 0
        kw = {"dict_data": dictionary} if dictionary is not None else {}
        self.c = zstandard.ZstdCompressor(
            level=level, write_content_size=False, write_checksum=False, **kw
        )
        self.d = zstandard.ZstdDecompressor(**kw)

    def encode(self, codes: np.ndarray) -> bytes:
        return self.c.compress(codes.astype("<u2").tobytes())

    def decode(self, data: bytes, f: int) -> np.ndarray:
        raw = self.d.decompress(data, max_output_size=2 * self.k * f)
        return np.frombuffer(raw, "<u2").reshape(self.k, f).astype(np.int64)


def zstd_dictionary(train: list[np.ndarray], k: int, size: int = 64 << 10):
    import zstandard

    # zstd's trainer slows down steeply with the sample size: ~100× the dictionary is plenty.
    rng = np.random.default_rng(0)
    samples = [train[i][:k].astype("<u2").tobytes() for i in rng.permutation(len(train))]
    total, keep = 0, []
    for sample in samples:
        if total >= 100 * size:
            break
        keep.append(sample)
        total += len(sample)
    samples = keep
    return zstandard.train_dictionary(size, samples, level=19, threads=1)


class Table:
    def __init__(self, k: int, tables, name: str) -> None:
        self.k = k
        self.t = tables
        self.name = name
        self.table_bytes = tables.nbytes

    def encode(self, codes: np.ndarray) -> bytes:
        return self.t.encode(codes)

    def decode(self, data: bytes, f: int) -> np.ndarray:
        return self.t.decode(data, self.k, f)


def measure(coder, chunks: list[np.ndarray], repeats: int = 3) -> tuple[list[int], float, float]:
    """Payload bytes per chunk and the best-of-`repeats` total encode / decode seconds."""
    sizes: list[int] = []
    enc = dec = float("inf")
    for r in range(repeats):
        payloads = []
        t0 = time.perf_counter()
        for c in chunks:
            payloads.append(coder.encode(c))
        t1 = time.perf_counter()
        for c, p in zip(chunks, payloads, strict=True):
            out = coder.decode(p, c.shape[1])
            if r == 0 and not np.array_equal(out, c):
                raise AssertionError(f"{coder.name}: round trip failed")
        t2 = time.perf_counter()
        enc, dec = min(enc, t1 - t0), min(dec, t2 - t1)
        sizes = [len(p) for p in payloads]
    return sizes, enc, dec


CATEGORIES = {"speech": "speech", "music": "music", "sfx": "other"}


def cmd_measure(args: argparse.Namespace) -> None:
    import torch

    from neucomp.coding.tables import Tables, train_tables

    torch.set_num_threads(1)
    dev_path = sorted(RUN_DIR.glob("deveval_*.npz"))[-1]
    codec_hash = dev_path.stem.split("_")[1]
    train, _ = load_chunks(codes_path(codec_hash, "train"))
    dev, labels = load_chunks(dev_path)
    with np.load(dev_path) as npz:
        full_hash = bytes.fromhex(str(npz["codec_hash"]))
    cats = [CATEGORIES.get(lab, "other") for lab in labels]
    log(
        f"train {sum(c.shape[1] for c in train) / FRAME_RATE / 60:.1f} min, dev-eval "
        f"{sum(c.shape[1] for c in dev) / FRAME_RATE / 60:.1f} min in {len(dev)} chunks"
    )
    tables = {}
    for spec in args.contexts:  # "contexts of codebook 0 : contexts of the others"
        n0, n = (int(x) for x in spec.split(":"))
        path = RUN_DIR / f"tables_{codec_hash}_{n0}_{n}.fct"
        if not path.is_file():
            t0 = time.time()
            train_tables(train, full_hash, n_ctx=n, n_ctx0=n0).save(path)
            log(f"trained tables {spec} in {time.time() - t0:.0f} s")
        tables[(n0, n)] = Tables.load(path, full_hash)
    rows = []
    for k in args.ks:
        coders = [Plain(k)]
        for level in args.zstd_levels:
            coders.append(Zstd(k, level))
        dictionary = zstd_dictionary(train, k)
        for level in args.zstd_levels:
            coders.append(Zstd(k, level, dictionary))
        for (n0, n), t in tables.items():
            name = "static tables" if n0 == n == 1 else f"context tables {n0}:{n}"
            coders.append(Table(k, t, name))
        chunks = [np.ascontiguousarray(c[:k]) for c in dev]
        seconds = sum(c.shape[1] for c in chunks) / FRAME_RATE
        plain = None
        for coder in coders:
            sizes, enc, dec = measure(coder, chunks)
            if plain is None:
                plain = sizes
            row = {
                "k": k,
                "kbps": k * 0.75,
                "coder": coder.name,
                "table_bytes": coder.table_bytes,
                "encode_rtf": seconds / enc,
                "decode_rtf": seconds / dec,
            }
            for cat in ("speech", "music", "other", "all"):
                sel = [i for i, c in enumerate(cats) if cat in ("all", c)]
                row[cat] = sum(sizes[i] for i in sel) / sum(plain[i] for i in sel)
            rows.append(row)
            log(
                f"K={k:2d} {coder.name:22s} "
                + " ".join(f"{c} {100 * row[c]:5.1f}%" for c in ("speech", "music", "other", "all"))
                + f"  enc {row['encode_rtf']:7.0f}x  dec {row['decode_rtf']:7.0f}x"
            )
    out = RUN_DIR / "coders.json"
    if out.is_file():  # keep the rows of K values not measured this time
        rows = [r for r in json.loads(out.read_text()) if r["k"] not in args.ks] + rows
        rows.sort(key=lambda r: r["k"])
    out.write_text(json.dumps(rows, indent=1))
    (RUN_DIR / "coders.md").write_text(markdown(rows))
    log(f"wrote {out} and coders.md")


def markdown(rows: list[dict]) -> str:
    lines = [
        "| K | kbps | coder | tables | speech | music | other | all | encode | decode |",
        "|---|---|---|---|---|---|---|---|---|---|",
    ]
    for r in rows:
        size = f"{r['table_bytes'] / 1e6:.2f} MB" if r["table_bytes"] else "–"
        lines.append(
            f"| {r['k']} | {r['kbps']:g} | {r['coder']} | {size} | "
            + " | ".join(f"{100 * r[c]:.1f} %" for c in ("speech", "music", "other", "all"))
            + f" | {r['encode_rtf']:,.0f}× | {r['decode_rtf']:,.0f}× |"
        )
    return "\n".join(lines) + "\n"


def cmd_tables(args: argparse.Namespace) -> None:
    """Train the fast coder's tables for a codec and install them beside it
    (`models/<name>.fct`): what `make train-lm` runs after the LM, so that the tables
    follow every change of the codec."""
    import torch

    from neucomp.coding.tables import train_tables
    from neucomp.registry import load_model, tables_path

    torch.set_num_threads(1)
    codec = load_model(args.codec)
    RUN_DIR.mkdir(parents=True, exist_ok=True)
    path = codes_path(codec.weights_hash, "train")
    if not path.is_file():
        t0 = time.time()
        data = extract_train(codec, Path(args.corpus), args.seed)
        tmp = path.with_name(path.name + ".tmp.npz")
        np.savez(tmp, **data, codec_hash=np.array(codec.weights_hash))
        tmp.replace(path)
        log(f"train codes: {time.time() - t0:.0f} s → {path}")
    train, _ = load_chunks(path)
    n0, n = (int(x) for x in args.contexts.split(":"))
    t0 = time.time()
    tables = train_tables(train, codec.weights_hash, n_ctx=n, n_ctx0=n0)
    out = Path(args.out) if args.out else tables_path(codec.config.name)
    digest = tables.save(out)
    log(f"tables {n0}:{n} for {codec.weights_hash[:12]}… in {time.time() - t0:.0f} s → {out}")
    log(f"  sha256 {digest.hex()}")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m neucomp.eval.coders", description=__doc__)
    sub = parser.add_subparsers(dest="cmd", required=True)
    ex = sub.add_parser("extract", help="cache the codes of the training excerpts and dev-eval")
    ex.add_argument("--codec", default=None)
    ex.add_argument("--corpus", default="data/corpus24/manifest.tsv")
    ex.add_argument("--deveval", default="data/deveval/manifest.tsv")
    ex.add_argument("--seed", type=int, default=0)
    me = sub.add_parser("measure", help="sizes and speeds of every coder on dev-eval")
    me.add_argument("--ks", type=int, nargs="+", default=list(KS))
    me.add_argument("--zstd-levels", type=int, nargs="+", default=[19, 3])
    me.add_argument(
        "--contexts",
        nargs="+",
        default=["1:1", "1:16", "256:16"],
        help="table sets, as <contexts of codebook 0>:<contexts of each other codebook>",
    )
    tb = sub.add_parser("tables", help="train the fast coder's tables, install models/<name>.fct")
    tb.add_argument("--codec", default=None)
    tb.add_argument("--corpus", default="data/corpus24/manifest.tsv")
    tb.add_argument("--seed", type=int, default=0)
    tb.add_argument("--contexts", default="256:16", help="as for measure (the shipped: 256:16)")
    tb.add_argument("--out", default=None, help="default: <models>/<codec name>.fct")
    args = parser.parse_args(argv)
    {"extract": cmd_extract, "measure": cmd_measure, "tables": cmd_tables}[args.cmd](args)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
