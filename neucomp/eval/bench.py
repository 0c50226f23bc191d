"""`make bench`: speed, memory and batch throughput of whatever model is installed.

    python -m neucomp.eval.bench [--quick] [--model NAME] [--source FILE] [--runs N]

- Real-time factor (audio seconds per wall second) of the Python API on one thread,
  encode (`neucomp.compress`) and decode (`neucomp.decompress`) apart, at every bandwidth
  of the model, with the plain and (when installed) the fast and LM coders; median and min–max of
  several runs after one warm-up. Model load time is measured apart.
- The same for the 48 kHz stereo model (plain, 6 kbps, on 48 kHz stereo: dev-eval music
  clips where there are any), or a note that it is not installed (`--hq-model` times a
  model file of that design that is not installed, e.g. a training export).
- Peak RSS of the real CLI compressing and decompressing a 1-minute and a 10-minute file
  (48 kHz stereo WAV, so resampling and channel mapping are in the path): the two must
  be close, since memory must not grow with the length.
- Batch throughput of `neucomp compress DIR OUT` with --jobs 1 and --jobs 2.
- Time to first audio of `neucomp decompress FILE -`: in-process once the model (and
  coder) are loaded, and from process start (torch's import and the model load
  included) to the first sample byte on stdout, for files of two lengths.
- The live pipe `compress --live - - | decompress - -` fed at 1× real time
  (neucomp.eval.live): block latency and container overhead at several chunk lengths,
  and the codec's algorithmic latency (one hop).

Results go to bench/results.json (--quick: bench/tmp/results-quick.json, git-ignored);
the table printed at the end shows the change against the last committed
bench/results.json (`git show HEAD:bench/results.json`). The numbers are only as quiet as
the machine: the load average at start and end is kept with them.
"""

from __future__ import annotations

import argparse
import datetime
import json
import os
import platform
import shutil
import statistics
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np

from neucomp.errors import NeucompError

REPO = Path(__file__).resolve().parents[2]
RESULTS = Path("bench/results.json")
SCRATCH = Path("bench/tmp")  # git-ignored
QUICK_RESULTS = SCRATCH / "results-quick.json"  # smoke runs never replace the real results
PARTIAL_RESULTS = SCRATCH / "results-partial.json"  # nor do runs of some parts (--only)
PARTS = ("rtf", "rtf_48khz", "memory", "batch", "first_audio", "live")
DEVEVAL = Path("data/deveval")
SAMPLE = Path("tests/data/sample.flac")
RATE = 24000  # the recording is handed to the API at the model's own rate, mono
LONG_RATE, LONG_CHANNELS = 48000, 2  # the long CLI files: a common "real" format


# ----------------------------------------------------------------------------- source


def load_source(
    seconds: float,
    source: Path | None,
    rate: int = RATE,
    channels: int = 1,
    category: str | None = None,
) -> tuple[np.ndarray, str]:
    """`seconds` of real audio as float32 at `rate` (mono [T], or [channels, T] by the
    channel rule), and where it came from.

    From --source, else dev-eval clips taken in turn from each category folder (so the
    recording mixes speech, music and sfx; only `category`'s folder if given, when it
    has clips), else tests/data/sample.flac; looped when shorter. A synthetic signal is
    the last resort and is said so in the results.
    """
    from neucomp.audio import load_reference
    from neucomp.eval.runner import audio_files_under

    clips = audio_files_under(DEVEVAL) if source is None and DEVEVAL.is_dir() else []
    if category is not None and any(c.parent.name == category for c in clips):
        clips = [c for c in clips if c.parent.name == category]
    if source is not None:
        files = [source]
    elif clips:
        files = _round_robin(clips)
    elif SAMPLE.is_file():
        files = [SAMPLE]
    else:
        files = []
    need = int(seconds * rate)
    parts: list[np.ndarray] = []
    used: list[str] = []
    for f in files:
        parts.append(load_reference(f, rate, channels))
        used.append(str(f))
        if sum(p.shape[-1] for p in parts) >= need:
            break
    if not parts:
        t = np.arange(need) / rate
        audio = 0.3 * np.sin(2 * np.pi * 220 * t * (1 + 0.1 * np.sin(2 * np.pi * 0.5 * t)))
        audio += 0.02 * np.random.default_rng(0).standard_normal(need)
        if channels > 1:  # a little width: the right side 1 ms late
            audio = np.stack([np.roll(audio, c * rate // 1000) for c in range(channels)])
        return audio.astype(np.float32), "synthetic (no dev-eval set: run `make eval-data`)"
    audio = np.concatenate(parts, axis=-1)
    origin = " + ".join(used)
    if audio.shape[-1] < need:
        origin += f" (looped from {audio.shape[-1] / rate:.1f} s)"
    reps = -(-need // audio.shape[-1])
    looped = np.tile(audio, (1, reps) if audio.ndim == 2 else reps)[..., :need]
    return np.ascontiguousarray(looped, dtype=np.float32), origin


def _round_robin(clips: list[Path]) -> list[Path]:
    """Clips interleaved across their folders: first of each, then second of each, …"""
    folders: dict[Path, list[Path]] = {}
    for clip in clips:
        folders.setdefault(clip.parent, []).append(clip)
    queues = list(folders.values())
    return [q[i] for i in range(max(map(len, queues))) for q in queues if i < len(q)]


# ----------------------------------------------------------------------------- timing


def _stats(values: list[float]) -> dict[str, float]:
    return {
        "median": statistics.median(values),
        "min": min(values),
        "max": max(values),
        "runs": len(values),
    }


def _rtf_runs(fn: Callable[[], object], seconds: float, runs: int) -> dict[str, float]:
    """Real-time factors of `runs` timed calls (after the caller's warm-up)."""
    rtfs = []
    for _ in range(runs):
        start = time.perf_counter()
        fn()
        rtfs.append(seconds / (time.perf_counter() - start))
    return _stats(rtfs)


def bench_rtf(
    audio: np.ndarray, bandwidths: list[float], runs: int, model: str | None, notes: list[str]
) -> dict:
    """{"plain"|"fast"|"lm": {"encode"|"decode": {bandwidth: stats}}, ...} on one thread
    (a coder whose file is not installed for the model is skipped, with a note)."""
    import neucomp

    seconds = len(audio) / RATE
    out: dict = {}
    for coder in ("plain", "fast", "lm"):
        try:
            neucomp.compress(audio[:RATE], RATE, bandwidths[0], coder=coder, model=model)
        except NeucompError as err:
            notes.append(f"{coder} coder skipped: {err}")
            continue
        for bw in bandwidths:
            data = neucomp.compress(audio, RATE, bw, coder=coder, model=model)  # warm-up
            neucomp.decompress(data)
            enc = _rtf_runs(
                lambda bw=bw, c=coder: neucomp.compress(audio, RATE, bw, coder=c, model=model),
                seconds,
                runs,
            )
            dec = _rtf_runs(lambda data=data: neucomp.decompress(data), seconds, runs)
            enc["kbps"] = len(data) * 8 / seconds / 1000
            out.setdefault(coder, {}).setdefault("encode", {})[f"{bw:g}"] = enc
            out[coder].setdefault("decode", {})[f"{bw:g}"] = dec
            print(
                f"  {coder:5s} {bw:>4g} kbps: encode {enc['median']:6.1f}x  "
                f"decode {dec['median']:6.1f}x real time",
                flush=True,
            )
    return out


def bench_hq(
    seconds: float, runs: int, model: str, source: Path | None, notes: list[str]
) -> dict | None:
    """Plain encode and decode of the 48 kHz stereo model at 6 kbps on one thread:
    {"plain": {"encode"|"decode": {"6": stats}}, "source": …}, or None and a note when
    `model` is not installed."""
    import neucomp
    from neucomp import HQ_MODEL

    bandwidth = 6.0
    try:
        codec = neucomp.load_model(model)
    except NeucompError as err:
        notes.append(f"48 kHz rows skipped: {err}")
        return None
    cfg = codec.config
    audio, origin = load_source(seconds, source, cfg.sample_rate, cfg.channels, "music")
    length = audio.shape[-1] / cfg.sample_rate
    given = model if model != HQ_MODEL else None  # a file not installed decodes with itself

    def enc() -> bytes:
        return neucomp.compress(audio, cfg.sample_rate, bandwidth, coder="plain", model=model)

    data = enc()  # warm-up
    neucomp.decompress(data, model=given)
    e = _rtf_runs(enc, length, runs)
    d = _rtf_runs(lambda: neucomp.decompress(data, model=given), length, runs)
    e["kbps"] = len(data) * 8 / length / 1000
    print(
        f"  {cfg.name} ({cfg.sample_rate} Hz, {cfg.channels} ch) plain {bandwidth:g} kbps: "
        f"encode {e['median']:6.1f}x  decode {d['median']:6.1f}x real time",
        flush=True,
    )
    return {
        "model": {"name": cfg.name, "hash": codec.weights_hash},
        "source": origin,
        "plain": {"encode": {f"{bandwidth:g}": e}, "decode": {f"{bandwidth:g}": d}},
    }


# ----------------------------------------------------------------------------- CLI runs


def _cli(*args: str, model: str | None = None) -> list[str]:
    cmd = [sys.executable, "-m", "neucomp", *args, "-q", "-f"]
    return cmd + (["--model", model] if model and args[0] == "compress" else [])


# The launcher that measures a command's own peak RSS (see its docstring).
_RUSAGE = Path(__file__).with_name("rusage.py")


def run_measured(cmd: list[str], tmp: Path) -> dict[str, float]:
    """Run a command; its wall time and peak RSS in MiB (its own and its waited children's)."""
    report = tmp / "rusage.json"
    start = time.perf_counter()
    proc = subprocess.run(
        [sys.executable, str(_RUSAGE), str(report), *cmd],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        text=True,
    )
    wall = time.perf_counter() - start
    usage = json.loads(report.read_text()) if report.exists() else {"code": proc.returncode}
    report.unlink(missing_ok=True)
    if usage["code"] != 0:
        raise RuntimeError(f"{' '.join(cmd[2:])} failed ({usage['code']}): {proc.stderr[-400:]}")
    return {"peak_rss_mb": usage["maxrss_kb"] / 1024, "wall_s": wall}


def _write_long(path: Path, audio: np.ndarray, seconds: float) -> None:
    """`seconds` of the looped recording as 16-bit WAV at LONG_RATE, LONG_CHANNELS."""
    import soundfile as sf

    from neucomp.audio.signal import resample

    hi = resample(audio, RATE, LONG_RATE).astype(np.float32)
    frames = int(seconds * LONG_RATE)
    with sf.SoundFile(str(path), "w", LONG_RATE, LONG_CHANNELS, "PCM_16") as f:
        for start in range(0, frames, len(hi)):
            block = hi[: min(len(hi), frames - start)]
            f.write(np.repeat(block[:, None], LONG_CHANNELS, axis=1))


def bench_memory(
    audio: np.ndarray, lengths: list[float], bandwidth: float, model: str | None, tmp: Path
) -> dict:
    """Peak RSS and wall time of CLI compress and decompress at each file length."""
    out = {}
    for seconds in lengths:
        src, ecdc, back = tmp / f"long{seconds:g}.wav", tmp / "long.ecdc", tmp / "back.wav"
        _write_long(src, audio, seconds)
        cmd = _cli("compress", str(src), str(ecdc), "-b", f"{bandwidth:g}", model=model)
        comp = run_measured(cmd, tmp)
        dec = run_measured(_cli("decompress", str(ecdc), str(back)), tmp)
        out[f"{seconds:g}s"] = {"compress": comp, "decompress": dec}
        print(
            f"  {seconds:g} s: compress {comp['peak_rss_mb']:.0f} MB "
            f"{comp['wall_s']:.1f} s, decompress {dec['peak_rss_mb']:.0f} MB {dec['wall_s']:.1f} s",
            flush=True,
        )
        for p in (src, ecdc, back):
            p.unlink(missing_ok=True)
    return out


def bench_batch(
    audio: np.ndarray,
    n_files: int,
    seconds: float,
    bandwidth: float,
    model: str | None,
    tmp: Path,
    runs: int,
) -> dict:
    """`neucomp compress DIR OUT` over `n_files` files of `seconds` each (LONG_RATE
    stereo WAV, as a music folder would be), --jobs 1 and --jobs 2 in turn `runs` times:
    the medians, and the speed-up of two workers over one on the same folder."""
    src = tmp / "batch_in"
    src.mkdir(parents=True, exist_ok=True)
    for i in range(n_files):
        start = int(i * seconds * RATE) % max(1, len(audio) - 1)  # each file its own part
        _write_long(src / f"clip{i:02d}.wav", np.roll(audio, -start), seconds)
    total = n_files * seconds
    walls: dict[int, list[float]] = {1: [], 2: []}
    for _ in range(runs):
        for jobs in (1, 2):  # interleaved, so a drift in the machine's speed hits both
            dst = tmp / f"batch_out{jobs}"
            cmd = _cli(
                "compress", str(src), str(dst), "-b", f"{bandwidth:g}", "--jobs", str(jobs),
                model=model,
            )  # fmt: skip
            walls[jobs].append(run_measured(cmd, tmp)["wall_s"])
            shutil.rmtree(dst, ignore_errors=True)
    shutil.rmtree(src, ignore_errors=True)
    out: dict = {"files": n_files, "audio_s": total, "runs": runs}
    for jobs, values in walls.items():
        wall = float(np.median(values))
        out[f"jobs{jobs}"] = {"wall_s": wall, "x_realtime": total / wall}
        print(f"  --jobs {jobs}: {wall:.1f} s, {total / wall:.1f}x real time", flush=True)
    out["speedup"] = out["jobs1"]["wall_s"] / out["jobs2"]["wall_s"]
    print(f"  --jobs 2 over --jobs 1: {out['speedup']:.2f}x", flush=True)
    return out


# ----------------------------------------------------------------------------- streaming


class _FirstAudio(Exception):
    """Raised by the sink at the first decoded samples: the timing is over."""


def _time_to_first_audio(path: Path) -> float:
    """Seconds from opening ``path`` to the first samples the engine hands the sink
    (model and coder already loaded: the registry caches them)."""
    from neucomp import api

    class Sink:
        def write(self, block: np.ndarray) -> None:
            if block.shape[1]:
                raise _FirstAudio

    start = time.perf_counter()
    try:
        with open(path, "rb") as fp:
            api._decompress(fp, lambda header, known: Sink(), False, None)
    except _FirstAudio:
        return time.perf_counter() - start
    raise RuntimeError(f"{path} decoded to no audio")


def _process_first_audio(path: Path) -> float:
    """Seconds from starting `python -m neucomp decompress FILE -` to the first sample
    byte on its stdout (the WAV header does not count)."""
    start = time.perf_counter()
    proc = subprocess.Popen(
        [sys.executable, "-m", "neucomp", "decompress", "-q", str(path), "-"],
        stdout=subprocess.PIPE,
        stderr=subprocess.DEVNULL,
    )
    try:
        got = b""
        fd = proc.stdout.fileno()
        while True:
            part = os.read(fd, 1 << 16)
            if not part:
                raise RuntimeError(f"decompress of {path} gave no audio")
            got += part
            if b"data" in got and len(got) > got.index(b"data") + 8:
                return time.perf_counter() - start
    finally:
        proc.kill()
        proc.wait()


def bench_first_audio(
    audio: np.ndarray, lengths: list[float], runs: int, model: str | None, tmp: Path,
    notes: list[str],
) -> dict:  # fmt: skip
    """{"after_load_s"|"process_s": {coder: {"<length>s": stats}}} at 6 kbps: the LM only
    on the shortest file (compressing a long one with it takes minutes)."""
    import neucomp

    out: dict = {}
    for coder in ("plain", "fast", "lm"):
        for seconds in lengths if coder != "lm" else lengths[:1]:
            need = int(seconds * RATE)
            x = np.resize(audio, need)
            try:
                data = neucomp.compress(x, RATE, 6.0, coder=coder, model=model)
            except NeucompError as err:
                notes.append(f"time to first audio, {coder} coder skipped: {err}")
                break
            path = tmp / f"first_{coder}_{seconds:g}.ecdc"
            path.write_bytes(data)
            _time_to_first_audio(path)  # warm-up: the coder is loaded, caches are hot
            after = _stats([_time_to_first_audio(path) for _ in range(runs)])
            proc = _stats([_process_first_audio(path) for _ in range(runs)])
            out.setdefault("after_load_s", {}).setdefault(coder, {})[f"{seconds:g}s"] = after
            out.setdefault("process_s", {}).setdefault(coder, {})[f"{seconds:g}s"] = proc
            print(
                f"  {coder:5s} {seconds:>4g} s file: {after['median'] * 1000:5.0f} ms after "
                f"load, {proc['median']:.2f} s from process start",
                flush=True,
            )
            path.unlink()
    return out


def bench_live(
    audio: np.ndarray, chunks: list[float], seconds: float, model: str | None, notes: list[str]
) -> dict:
    """The live pipe at 6 kbps, plain packing, at each chunk length (the default
    --live length also with the fast coder): block latency, kbps, chunk overhead."""
    from neucomp.eval.live import run_live

    x = np.resize(audio, int(seconds * RATE))
    nc = [sys.executable, "-m", "neucomp"]
    extra = ["--model", model] if model else []
    out: dict = {}
    runs = [("plain", c) for c in chunks] + [("fast", 0.09), ("lm", 0.09)]
    for coder, chunk in runs:
        compress = [*nc, "compress", "-q", "-b", "6", "--coder", coder, *extra]
        compress += ["--chunk-seconds", f"{chunk:g}", "-", "-"]
        try:
            run = run_live(compress, [*nc, "decompress", "-q", "-", "-"], x, RATE,
                           held_s=chunk + 0.1)  # fmt: skip
        except RuntimeError as err:
            notes.append(f"live {coder} {chunk:g} s skipped: {err}")
            continue
        if run.returncodes != (0, 0):
            notes.append(f"live {coder} {chunk:g} s failed: {run.stderr.strip()[-200:]}")
            continue
        stats = run.summary()
        out.setdefault(coder, {})[f"{chunk:g}s"] = stats
        p50, p95 = stats["latency_p50_s"] * 1000, stats["latency_p95_s"] * 1000
        print(
            f"  {coder:5s} chunks of {chunk * 1000:4.0f} ms: latency {p50:4.0f} ms median, "
            f"{p95:4.0f} ms p95; {stats['kbps']:.2f} kbps, chunk overhead "
            f"{stats['chunk_overhead_pct']:.1f} %",
            flush=True,
        )
    return out


# ----------------------------------------------------------------------------- report


def flatten(doc: dict, prefix: str = "") -> dict[str, float]:
    """Numeric leaves as {"a.b.c": value} (run counts left out)."""
    flat: dict[str, float] = {}
    for key, value in doc.items():
        name = f"{prefix}.{key}" if prefix else str(key)
        if isinstance(value, dict):
            flat.update(flatten(value, name))
        elif isinstance(value, (int, float)) and not isinstance(value, bool) and key != "runs":
            flat[name] = float(value)
    return flat


def committed_results() -> dict | None:
    """bench/results.json as of the last commit, or None."""
    try:
        text = subprocess.run(
            ["git", "show", f"HEAD:{RESULTS.as_posix()}"],
            capture_output=True,
            text=True,
            check=True,
            cwd=REPO,
        ).stdout
        return json.loads(text)
    except (subprocess.CalledProcessError, FileNotFoundError, json.JSONDecodeError):
        return None


def table(results: dict, previous: dict | None) -> str:
    """Every measured number, and its change against `previous` where both have it.

    A median is shown with its min–max range on one line.
    """
    sections = (
        "import_torch_s",
        "load_model_s",
        "rtf",
        "rtf_48khz",
        "first_audio",
        "live",
        "algorithmic_latency_ms",
        "memory",
        "batch",
    )
    new = flatten({k: results[k] for k in sections if k in results})
    old = flatten(previous) if previous else {}
    lines = ["| measure | value | last commit | change |", "|---|---:|---:|---:|"]
    for name, value in new.items():
        if name.endswith((".min", ".max")):
            continue
        shown = f"{value:.3g}"
        if name.endswith(".median"):
            base = name.removesuffix(".median")
            shown += f" ({new[base + '.min']:.3g}–{new[base + '.max']:.3g})"
        before = old.get(name)
        change = f"{(value - before) / before * 100:+.1f} %" if before else "–"
        prev = f"{before:.3g}" if before is not None else "–"
        lines.append(f"| {name} | {shown} | {prev} | {change} |")
    return "\n".join(lines)


def _meta(model_name: str | None, origin: str, args: argparse.Namespace) -> dict:
    import torch

    import neucomp

    codec = neucomp.load_model(model_name)
    commit = subprocess.run(
        ["git", "rev-parse", "--short", "HEAD"], capture_output=True, text=True, cwd=REPO
    ).stdout.strip()
    cpu = (
        next(
            (
                line.split(":", 1)[1].strip()
                for line in Path("/proc/cpuinfo").read_text().splitlines()
                if line.startswith("model name")
            ),
            platform.processor(),
        )
        if Path("/proc/cpuinfo").exists()
        else platform.processor()
    )
    return {
        "date": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
        "commit": commit,
        "model": {"name": codec.config.name, "hash": codec.weights_hash},
        "source": origin,
        "quick": args.quick,
        "threads": torch.get_num_threads(),
        "torch": torch.__version__,
        "python": platform.python_version(),
        "cpu": cpu,
        "cores": os.cpu_count(),
        "load_avg_start": os.getloadavg()[0],
    }


# ----------------------------------------------------------------------------- main


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m neucomp.eval.bench", description=__doc__.split("\n")[0]
    )
    parser.add_argument("--quick", action="store_true", help="A fast smoke run (fewer, shorter).")
    parser.add_argument("--model", default=None, help="Model name or path (default: 24 kHz).")
    parser.add_argument("--source", type=Path, default=None, help="Recording to time on.")
    parser.add_argument("--runs", type=int, default=None, help="Timed runs (default 5; --quick 2).")
    parser.add_argument(
        "--hq-model",
        default=None,
        help="The 48 kHz model to time (default: the installed neucomp_48khz, else skipped).",
    )
    parser.add_argument(
        "--out",
        type=Path,
        default=None,
        help=f"Results JSON ({RESULTS}; --quick or --only: under {SCRATCH}).",
    )
    parser.add_argument(
        "--only",
        default=None,
        metavar="PARTS",
        help=f"Comma-separated parts to run ({', '.join(PARTS)}); the results then go to "
        f"{PARTIAL_RESULTS} unless --out says otherwise.",
    )
    args = parser.parse_args(argv)
    only = set(PARTS) if args.only is None else set(args.only.split(","))
    if only - set(PARTS):
        parser.error(f"unknown parts {', '.join(sorted(only - set(PARTS)))}")

    t0 = time.perf_counter()
    import torch  # noqa: F401  (set_threads applies to a loaded torch)

    from neucomp import registry

    registry.set_threads(1)  # torch and numpy's BLAS
    import_s = time.perf_counter() - t0
    import neucomp

    try:
        t0 = time.perf_counter()
        codec = neucomp.load_model(args.model)
        load_s = time.perf_counter() - t0
    except NeucompError as err:
        print(f"bench: {err}", file=sys.stderr)
        return 1

    quick = args.quick
    runs = args.runs or (2 if quick else 5)
    bandwidths = list(codec.config.bandwidths)
    if quick:
        bandwidths = [bandwidths[0], bandwidths[len(bandwidths) // 2]]
    audio, origin = load_source(10.0 if quick else 30.0, args.source)
    notes: list[str] = []
    results: dict = {"meta": _meta(args.model, origin, args), "notes": notes}
    results["load_model_s"] = load_s
    results["import_torch_s"] = import_s
    print(f"model {codec.config.name} loaded in {load_s:.2f} s; source: {origin}", flush=True)

    if "rtf" in only:
        print(
            f"real-time factor, 1 thread, {len(audio) / RATE:.0f} s, median of {runs}:", flush=True
        )
        results["rtf"] = bench_rtf(audio, bandwidths, runs, args.model, notes)
    if "rtf_48khz" in only:
        print("48 kHz stereo model, 1 thread:", flush=True)
        hq = bench_hq(10.0 if quick else 30.0, runs, args.hq_model or neucomp.HQ_MODEL, None, notes)
        if hq is not None:
            results["rtf_48khz"] = {"plain": hq["plain"]}
            results["meta"]["model_48khz"] = hq["model"]
            results["meta"]["source_48khz"] = hq["source"]

    tmp = SCRATCH / "work"
    tmp.mkdir(parents=True, exist_ok=True)
    default_bw = (
        neucomp.DEFAULT_BANDWIDTH
        if neucomp.DEFAULT_BANDWIDTH in codec.config.bandwidths
        else bandwidths[0]
    )
    lengths = [10.0, 60.0] if quick else [60.0, 600.0]
    if "memory" in only:
        print(
            f"peak RSS of the CLI at {default_bw:g} kbps ({LONG_RATE} Hz stereo WAV):", flush=True
        )
        results["memory"] = bench_memory(audio, lengths, default_bw, args.model, tmp)
    if "batch" in only:
        n_files, seconds = (4, 8.0) if quick else (12, 32.0)
        print(f"batch throughput, {n_files} x {seconds:g} s ({LONG_RATE} Hz stereo):", flush=True)
        results["batch"] = bench_batch(
            audio, n_files, seconds, default_bw, args.model, tmp, 1 if quick else 3
        )
    if "first_audio" in only:
        first_lengths = [10.0, 60.0] if quick else [30.0, 300.0]
        print("time to first audio of `decompress FILE -` (6 kbps):", flush=True)
        results["first_audio"] = bench_first_audio(
            audio, first_lengths, runs, args.model, tmp, notes
        )
    cfg = codec.config
    # causal encoder and decoder, no look-ahead (and the equaliser's one frame)
    results["algorithmic_latency_ms"] = 1000 * codec.algorithmic_latency / cfg.sample_rate
    if "live" in only:
        chunks = [0.09] if quick else [0.04, 0.09, 0.2, 1.0]
        print(
            f"live pipe at 1x real time, 6 kbps (algorithmic latency "
            f"{results['algorithmic_latency_ms']:.1f} ms):",
            flush=True,
        )
        results["live"] = bench_live(audio, chunks, 6.0 if quick else 15.0, args.model, notes)
    results["meta"]["load_avg_end"] = os.getloadavg()[0]
    shutil.rmtree(tmp, ignore_errors=True)

    out = args.out or (
        PARTIAL_RESULTS if args.only is not None else QUICK_RESULTS if quick else RESULTS
    )
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(results, indent=1) + "\n")
    for note in notes:
        print(f"note: {note}")
    print()
    print(table(results, committed_results()))
    print(f"\nwritten {out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
