"""Folder conversion: walk a tree, mirror it, convert files in worker processes.

One bad file never stops a batch: its error is recorded and listed at the end. Files
whose output already exists are skipped (unless forced), so an interrupted batch can
simply be run again. Each worker process runs torch on one thread and loads the model
once (neucomp.registry caches it), so N jobs use about N cores.
"""

from __future__ import annotations

import contextlib
import hashlib
import multiprocessing
import os
import time
from collections.abc import Callable, Iterator
from concurrent.futures import FIRST_COMPLETED, Future, ProcessPoolExecutor, wait
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import Literal

from neucomp import DEFAULT_BANDWIDTH, api, registry
from neucomp.audio import AUDIO_EXTENSIONS
from neucomp.audio.writers import remove_stale_parts
from neucomp.engine import Result
from neucomp.errors import InputError, NeucompError, OutputError, Terminated
from neucomp.signals import (
    deferred_termination,
    exit_with_parent,
    install_in_worker,
    raise_terminated,
)

Mode = Literal["compress", "decompress"]
ECDC_SUFFIX = ".ecdc"


@dataclass(frozen=True)
class CompressOptions:
    """What every file of a compress batch is compressed with (api.compress_file)."""

    bandwidth: float = DEFAULT_BANDWIDTH
    coder: str | None = None  # "plain", "fast", "lm"; None: the default (api.prepare)
    model: str | None = None
    chunk_seconds: float | None = None  # None: the default chunks of 10 s
    content: str = "auto"  # the chunks' speech flags (engine.CONTENT_CHOICES)
    effort: str = "default"  # the encoder's search (model.SEARCH_EFFORTS)


@dataclass(frozen=True)
class DecompressOptions:
    """What every file of a decompress batch is decoded with (api.decompress_file)."""

    float_wav: bool = False
    salvage: bool = False
    model: str | None = None
    # None: on the chunks flagged speech (engine.follows_speech_flags)
    postfilter: bool | None = None
    # None: a model's speech decoder on the chunks flagged speech, where it has one
    speech_decoder: bool | None = None


Options = CompressOptions | DecompressOptions


@dataclass(frozen=True)
class Task:
    """One file to convert."""

    src: Path
    dst: Path


@dataclass
class Outcome:
    """What happened to one task (sent back from a worker process)."""

    task: Task
    result: Result | None = None
    error: str | None = None


@dataclass
class Summary:
    """Totals over a batch, for the closing report."""

    mode: Mode
    converted: int = 0
    skipped: int = 0
    failures: list[tuple[Path, str]] = field(default_factory=list)
    warnings: list[tuple[Path, str]] = field(default_factory=list)
    seconds: float = 0.0  # audio converted
    input_bytes: int = 0
    output_bytes: int = 0
    wall: float = 0.0

    @property
    def ratio(self) -> float:
        small, big = sorted((self.input_bytes, self.output_bytes))
        return big / small if small else 0.0

    def lines(self) -> list[str]:
        """The human summary, then one line per failure."""
        verb = "compressed" if self.mode == "compress" else "decompressed"
        extra = [f"{self.skipped} skipped"] if self.skipped else []
        extra += [f"{len(self.failures)} failed"] if self.failures else []
        head = f"{verb} {self.converted} file{'s' if self.converted != 1 else ''}"
        head += f" ({', '.join(extra)})" if extra else ""
        body = (
            f"{format_duration(self.seconds)} of audio, {format_bytes(self.input_bytes)} → "
            f"{format_bytes(self.output_bytes)}"
        )
        if self.converted and self.ratio:
            body += f" (ratio {self.ratio:.1f}:1)"
        lines = [f"{head}: {body} in {self.wall:.1f} s"]
        lines += [f"warning: {path}: {message}" for path, message in self.warnings]
        if self.failures:
            lines.append(f"failed ({len(self.failures)}):")
            lines += [f"  {path}: {message}" for path, message in self.failures]
        return lines


def format_bytes(n: int) -> str:
    for unit, scale in (("GB", 1e9), ("MB", 1e6), ("kB", 1e3)):
        if n >= scale:
            return f"{n / scale:.1f} {unit}"
    return f"{n} B"


def format_duration(seconds: float) -> str:
    if seconds < 60:
        return f"{seconds:.1f} s"
    minutes, sec = divmod(round(seconds), 60)
    hours, minutes = divmod(minutes, 60)
    return f"{hours} h {minutes:02d} min" if hours else f"{minutes} min {sec:02d} s"


# ----------------------------------------------------------------------------- plan


def output_name(src: Path, mode: Mode, fmt: str = "wav") -> str:
    """``x.wav`` → ``x.ecdc`` (compress); ``x.ecdc`` → ``x.wav`` or ``x.flac``."""
    return src.stem + (ECDC_SUFFIX if mode == "compress" else f".{fmt}")


def find_inputs(root: Path, mode: Mode) -> Iterator[Path]:
    """Input files under ``root`` in a stable order; hidden files and folders are ignored."""
    suffixes = AUDIO_EXTENSIONS if mode == "compress" else (ECDC_SUFFIX,)
    for folder, dirs, files in os.walk(root):
        dirs[:] = sorted(d for d in dirs if not d.startswith("."))
        for name in sorted(files):
            if not name.startswith(".") and Path(name).suffix.lower() in suffixes:
                yield Path(folder) / name


def plan(src_dir: Path, out_dir: Path, mode: Mode, fmt: str = "wav") -> list[Task]:
    """A task per input, its output at the mirrored place under ``out_dir``."""
    out_resolved = out_dir.resolve()
    tasks = []
    for src in find_inputs(src_dir, mode):
        if out_resolved in src.resolve().parents:  # OUTDIR inside DIR: never re-convert outputs
            continue
        rel = src.relative_to(src_dir)
        tasks.append(Task(src, out_dir / rel.parent / output_name(src, mode, fmt)))
    return tasks


def in_shard(task: Task, out_dir: Path, shard: tuple[int, int] | None) -> bool:
    """Whether ``task`` belongs to shard ``(k, n)`` (k from 1 to n; None: all).

    Decided by a hash of the output's path under OUT, so it does not depend on the order
    or the number of files each job sees, and inputs that clash (x.wav and x.flac, one
    x.ecdc) land in the same shard, where the clash is reported.
    """
    if shard is None:
        return True
    k, n = shard
    rel = task.dst.relative_to(out_dir).as_posix().encode()
    return int.from_bytes(hashlib.sha256(rel).digest()[:8], "big") % n == k - 1


def _probe_seconds(path: Path, mode: Mode) -> float:
    """Audio duration of an input, cheaply, for the progress bar (0 if unknown)."""
    try:
        if mode == "compress":
            import soundfile as sf

            return float(sf.info(str(path)).duration)
        from neucomp.container import summarize

        with open(path, "rb") as fp:
            return float(summarize(fp)["duration_s"])
    except Exception:  # a broken file: its real error comes when it is converted
        return 0.0


# -------------------------------------------------------------------------- workers


def _init_worker(threads: int) -> None:
    registry.set_threads(threads)
    install_in_worker(_worker_signal)
    exit_with_parent()


_in_task = False  # whether this worker is converting (a signal must unwind) or idle


def _worker_signal(signum: int, frame: object) -> None:
    if not _in_task:
        os._exit(128 + signum)
    raise_terminated(signum)  # unwinds convert(): its temp output is removed


def _convert_in_worker(task: Task, mode: Mode, options: Options, force: bool) -> Outcome:
    global _in_task
    _in_task = True
    try:
        return convert(task, mode, options, force)
    except Terminated as err:
        os._exit(err.exit_code)  # cleaned up; leave without a traceback
    finally:
        _in_task = False


def convert(task: Task, mode: Mode, options: Options, force: bool = False) -> Outcome:
    """Convert one file; every error becomes part of the outcome, never an exception."""
    try:
        task.dst.parent.mkdir(parents=True, exist_ok=True)
        if mode == "compress":
            result = api.compress_file(task.src, task.dst, **asdict(options), force=force)
        else:
            result = api.decompress_file(task.src, task.dst, **asdict(options), force=force)
        return Outcome(task, result=result)
    except NeucompError as err:
        return Outcome(task, error=str(err))
    except OSError as err:
        return Outcome(task, error=f"{err.strerror or err}")
    except Exception as err:  # a bug on one file must not lose the rest of the batch
        return Outcome(task, error=f"internal error: {type(err).__name__}: {err}")


def check_options(options: Options) -> tuple[Options, str | None]:
    """The options every file of the batch will use, checked once (api.prepare): a bad
    bandwidth or a missing coder fails here, not once per file. When the default coder
    had to fall back to plain packing, the options say so, with the warning to give once.
    Loads the model, so it imports torch."""
    if not isinstance(options, CompressOptions):
        return options, None
    api.check_content(options.content)
    api.check_effort(options.effort)
    *_, warning = api.prepare(options.model, options.bandwidth, options.coder)
    return (replace(options, coder="plain"), warning) if warning else (options, None)


def _warm_up(mode: Mode, options: Options, probe: Path) -> tuple[Options, str | None]:
    """A worker's first job: load the model and coder every file will need, and check
    the options (compress) or read the first file's header (decompress) there, so the
    parent never imports torch and the workers' start-up overlaps."""
    if mode == "compress":
        return check_options(options)
    with contextlib.suppress(NeucompError, OSError):  # a bad file fails in its own task
        from neucomp.container import EcdcReader

        with open(probe, "rb") as fp:
            header = EcdcReader(fp).header
        registry.coder_for(header, registry.model_for(header, options.model))
    return options, None


def _run_serial(tasks: list[Task], mode: Mode, options: Options, force: bool) -> Iterator[Outcome]:
    for task in tasks:
        yield convert(task, mode, options, force)


def _worker_context() -> multiprocessing.context.BaseContext:
    """Fork workers from a clean server that has imported torch but never run it.

    Plain fork is unsafe here (a program using the API may already have run torch,
    whose thread pools do not survive a fork); spawn is safe but imports torch again in
    every worker. The compiled modules a task needs are imported in the server too: a
    signal that arrives while a worker imports one (soxr's nanobind init, say) would
    raise Terminated inside C++ code, which aborts the process with a traceback.
    """
    if "forkserver" not in multiprocessing.get_all_start_methods():
        return multiprocessing.get_context("spawn")
    ctx = multiprocessing.get_context("forkserver")
    ctx.set_forkserver_preload(WORKER_PRELOAD)
    return ctx


def _start_worker_server() -> None:
    """Start the worker server now, without waiting for its imports: the workers it
    forks later are then ready sooner (the first fork waits for those imports)."""
    from multiprocessing import forkserver

    if _worker_context().get_start_method() == "forkserver":
        forkserver.ensure_running()


#: What the worker server imports once, for every worker it forks.
WORKER_PRELOAD = [
    "torch",
    "numpy",
    "soundfile",
    "soxr",
    "constriction",
    "neucomp.model",
    "neucomp.api",
    "neucomp.worker_server",  # last: the server then leaves without torch's teardown
]


def _run_parallel(
    tasks: list[Task],
    mode: Mode,
    options: Options,
    force: bool,
    jobs: int,
    threads: int,
    warn: Callable[[str], None],
) -> Iterator[Outcome]:
    ctx = _worker_context()
    pool = ProcessPoolExecutor(jobs, mp_context=ctx, initializer=_init_worker, initargs=(threads,))
    try:
        # The workers start during these submits; a signal then would leave one
        # half-started (it prints a traceback), so it is handled once they are all in
        # the pool. One warm-up per worker starts them all at once, each loading the
        # model while the others do; the first verdict on the options is everyone's.
        with deferred_termination():
            warm = [pool.submit(_warm_up, mode, options, tasks[0].src) for _ in range(jobs)]
        options, warning = warm[0].result()  # a bad option raises its error here, once
        if warning:
            warn(warning)
        todo = iter(tasks)
        running: set[Future] = set()
        # Keep only a few tasks queued per worker so that Ctrl-C stops quickly.
        for task in todo:
            running.add(pool.submit(_convert_in_worker, task, mode, options, force))
            if len(running) >= 2 * jobs:
                break
        while running:
            done, running = wait(running, return_when=FIRST_COMPLETED)
            for future in done:
                yield future.result()
                nxt = next(todo, None)
                if nxt is not None:
                    running.add(pool.submit(_convert_in_worker, nxt, mode, options, force))
    except BaseException:
        # Interrupted or terminated: stop the workers now (each removes its temp file)
        # rather than wait for their files to finish. There is no public API for this
        # before Python 3.14's terminate_workers().
        for process in list((pool._processes or {}).values()):
            with contextlib.suppress(OSError):
                process.terminate()
        raise
    finally:
        pool.shutdown(wait=True, cancel_futures=True)


def run_batch(
    src_dir: str | os.PathLike,
    out_dir: str | os.PathLike,
    mode: Mode,
    *,
    jobs: int = 1,
    threads: int = 1,
    force: bool = False,
    quiet: bool = False,
    fmt: str = "wav",
    options: Options | None = None,
    shard: tuple[int, int] | None = None,
    warn: Callable[[str], None] | None = None,
) -> Summary:
    """Convert every input under ``src_dir`` into the mirrored place under ``out_dir``.

    ``options`` (:class:`CompressOptions` or :class:`DecompressOptions`, the defaults
    if None) go to :func:`api.compress_file` / :func:`api.decompress_file`; they are
    checked once (:func:`check_options`: a UsageError or ModelError before any file),
    and ``warn`` gets the one warning that check may give (the default coder falling
    back to plain packing). With ``shard=(k, n)`` only the k-th of n disjoint shares is
    converted (:func:`in_shard`).
    """
    from tqdm import tqdm

    start = time.perf_counter()
    src_dir, out_dir = Path(src_dir), Path(out_dir)
    if jobs > 1 and src_dir.is_dir():
        _start_worker_server()  # its imports (torch: ~1-2 s) overlap the planning below
    if not src_dir.is_dir():
        raise InputError(f"no such folder: {src_dir}")
    if out_dir.exists() and not out_dir.is_dir():
        raise OutputError(f"'{out_dir}' exists and is not a folder")
    if not out_dir.parent.is_dir():
        raise OutputError(f"output folder '{out_dir.parent}' does not exist")
    planned = plan(src_dir, out_dir, mode, fmt)
    if not planned:
        kinds = ", ".join(AUDIO_EXTENSIONS) if mode == "compress" else ECDC_SUFFIX
        raise InputError(f"no input files ({kinds}) under '{src_dir}'")
    if options is None:
        options = CompressOptions() if mode == "compress" else DecompressOptions()
    if isinstance(options, CompressOptions) != (mode == "compress"):
        raise TypeError(f"{type(options).__name__} do not fit a {mode} batch")

    summary = Summary(mode)
    tasks = []
    claimed: dict[Path, Path] = {}  # output → the input that makes it (x.wav and x.flac clash)
    for task in planned:
        if not in_shard(task, out_dir, shard):
            continue
        remove_stale_parts(task.dst)  # left by a run that was killed outright
        if task.dst in claimed:
            message = f"same output name as '{claimed[task.dst]}' ({task.dst.name})"
            summary.failures.append((task.src, message))
        elif task.dst.exists() and not force:
            summary.skipped += 1
        else:
            tasks.append(task)
        claimed.setdefault(task.dst, task.src)
    warn = warn or (lambda message: None)
    jobs = max(1, min(jobs, len(tasks)))
    if jobs == 1:  # (with workers, the first of them checks: this process needs no torch)
        options, warning = check_options(options)  # bad options: nothing written at all
        if warning:
            warn(warning)
    if not tasks:
        summary.wall = time.perf_counter() - start
        return summary

    seconds = {t.src: _probe_seconds(t.src, mode) for t in tasks}
    total = sum(seconds.values())
    bar = tqdm(
        total=round(total, 1),
        unit="s",
        desc=f"{mode} 0/{len(tasks)} files",
        disable=True if quiet else None,  # None: only on a terminal
        dynamic_ncols=True,
        bar_format=(
            "{desc}: {percentage:3.0f}%|{bar}| {n:.0f}/{total:.0f} s audio [{elapsed}<{remaining}]"
        ),
    )
    outcomes = (
        _run_serial(tasks, mode, options, force)
        if jobs == 1
        else _run_parallel(tasks, mode, options, force, jobs, threads, warn)
    )
    try:
        for done, outcome in enumerate(outcomes, 1):
            _account(summary, outcome)
            bar.set_description_str(f"{mode} {done}/{len(tasks)} files")
            bar.update(round(seconds[outcome.task.src], 1))
    finally:
        bar.close()
    summary.wall = time.perf_counter() - start
    return summary


def _account(summary: Summary, outcome: Outcome) -> None:
    if outcome.error is not None:
        summary.failures.append((outcome.task.src, outcome.error))
        return
    r = outcome.result
    summary.warnings += [(outcome.task.src, message) for message in r.warnings]
    summary.converted += 1
    summary.seconds += r.seconds
    summary.input_bytes += r.input_bytes or 0
    summary.output_bytes += r.output_bytes or 0
