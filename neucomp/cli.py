"""The `neucomp` command line: parse options, call codec / batch, report, exit codes.

Every problem a user can cause is a NeucompError and ends as one line on stderr,
``neucomp: error: <message>``, with the error's exit code and no traceback (``--debug``
or ``NEUCOMP_DEBUG=1`` shows it). Outputs are written atomically by the codec, so a
failed or interrupted run (Ctrl-C, SIGTERM, SIGHUP: see neucomp.signals) leaves nothing
behind.
"""

from __future__ import annotations

import json
import os
import signal
import sys
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, NoReturn

import click

from neucomp import BANDWIDTHS, DEFAULT_BANDWIDTH, HQ_BANDWIDTHS, HQ_MODEL, __version__
from neucomp.errors import InputError, NeucompError, Terminated, UsageError

if TYPE_CHECKING:
    from neucomp.engine import Result
    from neucomp.progress import Progress

EXIT_FAILURES = 1  # a batch where some files failed
EXIT_INTERRUPTED = 130  # like a shell after Ctrl-C


def _debug(ctx: click.Context) -> bool:
    root = ctx.find_root()
    return bool((root.obj or {}).get("debug")) or os.environ.get("NEUCOMP_DEBUG", "") not in (
        "",
        "0",
    )


class NeucompGroup(click.Group):
    """A click group that turns NeucompErrors into one-line messages and exit codes,
    and loads the optional `eval` command only when it is asked for."""

    lazy_commands = {"eval": ("neucomp.eval.cli", "eval_command")}

    def list_commands(self, ctx: click.Context) -> list[str]:
        return sorted(set(super().list_commands(ctx)) | set(self.lazy_commands))

    def get_command(self, ctx: click.Context, name: str) -> click.Command | None:
        if name in self.lazy_commands and name not in self.commands:
            module, attr = self.lazy_commands[name]
            try:
                command = getattr(__import__(module, fromlist=[attr]), attr)
            except (ImportError, AttributeError) as err:
                return _unavailable(name, err)
            self.add_command(command, name)
        return super().get_command(ctx, name)

    def parse_args(self, ctx: click.Context, args: list[str]) -> list[str]:
        try:
            return super().parse_args(ctx, args)
        except click.UsageError as err:
            _usage_error(err)

    def invoke(self, ctx: click.Context):
        from neucomp.signals import terminate_as_exception

        try:
            with terminate_as_exception():
                return super().invoke(ctx)
        except click.UsageError as err:  # a bad option or argument of a command
            _usage_error(err)
        except Terminated as err:
            if _debug(ctx):
                raise
            click.echo(f"neucomp: terminated by {signal.Signals(err.signum).name}", err=True)
            ctx.exit(err.exit_code)
        except NeucompError as err:
            if _debug(ctx):
                raise
            click.echo(f"neucomp: error: {err}", err=True)
            ctx.exit(err.exit_code)
        except KeyboardInterrupt:
            if _debug(ctx):
                raise
            click.echo("neucomp: interrupted", err=True)
            ctx.exit(EXIT_INTERRUPTED)
        except BrokenPipeError:
            # The reader of our stdout went away (e.g. `| head`): nothing left to say.
            _silence_stdout()
            ctx.exit(EXIT_FAILURES)
        except OSError as err:  # the system refused: disk full, permissions, ...
            if _debug(ctx):
                raise
            where = f": {err.filename}" if err.filename else ""
            click.echo(f"neucomp: error: {err.strerror or err}{where}", err=True)
            ctx.exit(EXIT_FAILURES)


def _usage_error(err: click.UsageError) -> NoReturn:
    """Click's own errors (``--threads 0``, a missing OUT) as one line, like ours."""
    hint = f" (see '{err.ctx.command_path} --help')" if err.ctx else ""
    click.echo(f"neucomp: error: {err.format_message()}{hint}", err=True)
    raise click.exceptions.Exit(err.exit_code)


def _silence_stdout() -> None:
    """Point stdout at /dev/null so Python's final flush does not raise again."""
    try:
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())
    except (OSError, ValueError):
        pass


def _unavailable(name: str, err: Exception) -> click.Command:
    @click.command(
        name, help=f"(not available: {err})", context_settings={"ignore_unknown_options": True}
    )
    @click.argument("args", nargs=-1, type=click.UNPROCESSED)
    def stub(args: tuple[str, ...]) -> None:
        raise InputError(f"'neucomp {name}' is not available in this installation ({err})")

    return stub


@click.group(cls=NeucompGroup, context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(__version__, "-V", "--version", prog_name="neucomp")
@click.option("--debug", is_flag=True, help="Show tracebacks for errors (or NEUCOMP_DEBUG=1).")
@click.pass_context
def main(ctx: click.Context, debug: bool) -> None:
    """neucomp: a neural audio codec. Compress audio to .ecdc and back.

    Use - for IN or OUT to read stdin or write stdout; give folders to convert a tree.
    """
    ctx.obj = {"debug": debug}


def _warn(message: str) -> None:
    click.echo(f"neucomp: warning: {message}", err=True)


def _say(quiet: bool, message: str) -> None:
    if not quiet:
        click.echo(message, err=True)


def _folder_output(dst: str) -> None:
    if dst == "-":
        raise UsageError("a folder IN needs a folder OUT, not -")
    path = Path(dst)
    if not path.exists() and path.suffix.lower() in _file_suffixes():
        raise UsageError(f"a folder IN needs a folder OUT, not the file name '{dst}'")


def _no_shard(shard: tuple[int, int] | None) -> None:
    if shard is not None:
        raise UsageError("--shard splits a folder IN; IN is a single file")


def _file_suffixes() -> tuple[str, ...]:
    """Extensions that make an OUT look like a file, not a folder."""
    from neucomp.audio import AUDIO_EXTENSIONS

    return (*AUDIO_EXTENSIONS, ".ecdc")


def _finish_batch(summary, quiet: bool) -> None:
    lines = summary.lines()
    if not quiet or summary.failures or summary.warnings:
        for line in lines if not quiet else lines[1:]:
            click.echo(line, err=True)
    if summary.failures:
        raise click.exceptions.Exit(EXIT_FAILURES)


jobs_option = click.option(
    "-j",
    "--jobs",
    type=click.IntRange(1),
    default=1,
    show_default=True,
    help="Worker processes for folder conversion.",
)
threads_option = click.option(
    "--threads",
    type=click.IntRange(1),
    default=1,
    show_default=True,
    help="CPU threads for inference (per worker).",
)


class ShardType(click.ParamType):
    """``K/N``: the K-th (1 to N) of N disjoint shares of a folder's files."""

    name = "K/N"

    def convert(self, value, param, ctx) -> tuple[int, int]:
        if isinstance(value, tuple):
            return value
        k, _, n = str(value).partition("/")
        if not (k.isdigit() and n.isdigit() and 1 <= int(k) <= int(n)):
            self.fail(f"{value!r} is not K/N with 1 <= K <= N (e.g. 2/8)", param, ctx)
        return int(k), int(n)


shard_option = click.option(
    "--shard",
    type=ShardType(),
    default=None,
    help="Folders: convert only share K of N (for array jobs; together they cover all).",
)
force_option = click.option("-f", "--force", is_flag=True, help="Overwrite existing outputs.")
quiet_option = click.option("-q", "--quiet", is_flag=True, help="Print nothing but errors.")


def _run_files(
    pairs: list[tuple[str, str]],
    convert: Callable[[str, str, Progress], Result],
    report: Callable[[Result], str],
    quiet: bool,
) -> None:
    """Convert each (IN, OUT) pair with its own progress bar (on a terminal), then its
    warnings and its summary line. One file's error stops the run; with several files it
    is reported and the others go on (as with gzip and flac), and the exit code is 1."""
    from neucomp import progress as P
    from neucomp.audio import display_name

    failed = 0
    for src, dst in pairs:
        bar = P.for_terminal(Path(display_name(src)).name, quiet)
        try:
            r = convert(src, dst, bar)
        except NeucompError as err:
            if len(pairs) == 1:
                raise
            bar.close()
            click.echo(f"neucomp: error: {err}", err=True)
            failed += 1
            continue
        finally:
            bar.close()
        for warning in r.warnings:
            click.echo(f"neucomp: warning: {warning}", err=True)
        _say(quiet, report(r))
    if failed:
        raise click.exceptions.Exit(EXIT_FAILURES)


def _compress_report(r: Result) -> str:
    from neucomp import batch

    return (
        f"{r.source}: {batch.format_duration(r.seconds)}, {r.sample_rate} Hz, {r.channels} ch"
        f" → {r.target}: {r.ecdc_bytes:,} bytes, {r.kbps:.2f} kbps"
        + (f" (ratio {r.input_bytes / r.ecdc_bytes:.1f}:1)" if r.input_bytes else "")
    )


def _decompress_report(r: Result) -> str:
    from neucomp import batch

    return (
        f"{r.source}: {r.ecdc_bytes:,} bytes, {r.kbps:.2f} kbps → {r.target}: "
        f"{batch.format_duration(r.seconds)}, {r.sample_rate} Hz, {r.channels} ch"
    )


NAMES_HELP = (
    "Each IN is written beside itself (song.flac → song.ecdc), unless the last argument "
    "is OUT: a file, - (stdout) or an existing folder. It is OUT unless it is named like "
    "an input ({inputs}). A folder IN with a folder OUT converts the whole tree."
)

LIVE_CHUNK_SECONDS = 0.09  # 7 frames at 75 frames/s: see the README's latency table


@main.command(
    help="Compress audio (any format, rate, channels) to .ecdc.\n\n"
    + NAMES_HELP.format(inputs="an audio extension such as .wav or .flac")
    + "\n\nThe 24 kHz model codes mono (stereo is mixed down, and copied back on "
    "decompress); --model 48khz (--hq) codes both channels of full-band stereo together."
    + "\n\nWith - for OUT the stream goes to stdout a chunk at a time; --live makes the "
    "chunks short for pipes such as `arecord ... | neucomp compress --live - - | ...`."
)
@click.argument("paths", metavar="IN... [OUT]", nargs=-1, required=True)
@click.option(
    "-b",
    "--bandwidth",
    type=float,
    default=DEFAULT_BANDWIDTH,
    show_default=True,
    help=f"Target bitrate in kbps: {', '.join(f'{b:g}' for b in BANDWIDTHS)} "
    f"(48 kHz model: {', '.join(f'{b:g}' for b in HQ_BANDWIDTHS)}; both channels together).",
)
@click.option(
    "--coder",
    type=click.Choice(["plain", "fast", "lm"]),
    default=None,
    help="Entropy coder: fast (context tables: ~30 % smaller than plain at 6 kbps, "
    "thousands of times real time), lm (the language model: smallest, ~6x real time) "
    "or plain (10-bit packing).  [default: fast where the model's tables are "
    "installed, else plain]",
)
@click.option("--lm", is_flag=True, help="Same as --coder lm.")
@click.option(
    "--model",
    metavar="NAME|PATH",
    default=None,
    help="Codec model: 24khz (mono, the default), 48khz (full-band stereo), a full "
    "name such as neucomp_48khz, or the path of a .pt file.",
)
@click.option("--hq", is_flag=True, help="Same as --model 48khz.")
@click.option(
    "--chunk-seconds",
    type=float,
    default=None,
    help="Container chunk length (default 10 s; rounded to whole frames of 1/75 s). Short "
    "chunks cut the latency of a pipe and cost a few bytes each.",
)
@click.option(
    "--live",
    is_flag=True,
    help=f"Live pipes: --chunk-seconds {LIVE_CHUNK_SECONDS:g}, stdin read as it arrives.",
)
@click.option(
    "--content",
    type=click.Choice(["auto", "speech", "other"]),
    default="auto",
    show_default=True,
    help="What the input is: each chunk judged speech or not (auto), or all speech, or "
    "none. Decompress postfilters the speech chunks, which helps speech and dulls music.",
)
@click.option(
    "--effort",
    type=click.Choice(["fast", "default", "best"]),
    default="default",
    show_default=True,
    help="How hard the encoder searches for the codes (a beam over the quantizer's "
    "stages): fast is greedy and ~1.6x quicker to encode, best ~1.7x slower than the "
    "default and a little closer. Any effort's files decode alike.",
)
@force_option
@quiet_option
@jobs_option
@threads_option
@shard_option
def compress(
    paths: tuple[str, ...],
    bandwidth: float,
    coder: str | None,
    lm: bool,
    model: str | None,
    hq: bool,
    chunk_seconds: float | None,
    live: bool,
    content: str,
    effort: str,
    force: bool,
    quiet: bool,
    jobs: int,
    threads: int,
    shard: tuple[int, int] | None,
) -> None:
    from neucomp import api, batch, names, registry

    registry.set_threads(threads)
    if hq:
        if model is not None and registry.canonical_model_name(model) != HQ_MODEL:
            raise click.UsageError(f"--hq is --model 48khz; it contradicts --model {model}")
        model = HQ_MODEL
    if lm:
        if coder not in (None, "lm"):
            raise click.UsageError(f"--lm is --coder lm; it contradicts --coder {coder}")
        coder = "lm"
    if live:
        if chunk_seconds is not None:
            raise click.UsageError(f"--live is --chunk-seconds {LIVE_CHUNK_SECONDS:g}: give one")
        chunk_seconds = LIVE_CHUNK_SECONDS
    plan = names.plan(list(paths), "compress")
    if plan.folders is not None:
        src, dst = plan.folders
        _folder_output(dst)
        # the batch checks the options once (in a worker with --jobs, so this process
        # never loads torch) and gives its one warning through `warn`
        options = batch.CompressOptions(
            bandwidth=bandwidth,
            coder=coder,
            model=model,
            chunk_seconds=chunk_seconds,
            content=content,
            effort=effort,
        )
        summary = batch.run_batch(
            src,
            dst,
            "compress",
            jobs=jobs,
            threads=threads,
            force=force,
            quiet=quiet,
            options=options,
            shard=shard,
            warn=_warn,
        )
        _finish_batch(summary, quiet)
        return
    _no_shard(shard)

    def convert(src: str, dst: str, bar: Progress) -> Result:
        return api.compress_file(
            src,
            dst,
            bandwidth=bandwidth,
            coder=coder,
            model=model,
            force=force,
            chunk_seconds=chunk_seconds,
            progress=bar,
            content=content,
            effort=effort,
        )

    _run_files(plan.pairs, convert, _compress_report, quiet)


@main.command(
    help="Decompress .ecdc to audio (.wav 16-bit, .flac; - is WAV on stdout, streamed as "
    "it is decoded). The original sample rate, channel count and length are restored.\n\n"
    + NAMES_HELP.format(inputs=".ecdc")
)
@click.argument("paths", metavar="IN... [OUT]", nargs=-1, required=True)
@click.option("--float", "float_wav", is_flag=True, help="Write 32-bit float WAV.")
@click.option("--salvage", is_flag=True, help="Replace damaged chunks with silence.")
@click.option(
    "--model",
    metavar="NAME|PATH",
    default=None,
    help="Codec model file to use (default: the installed one the file names).",
)
@click.option(
    "--postfilter/--no-postfilter",
    default=None,
    help="The decoder's formant postfilter, for speech: it lowers the coding haze between "
    "formants (+0.12 PESQ-wb at 6 kbps) but dulls music  [default: on the chunks the "
    "encoder flagged speech (24 kHz model), unless a speech decoder takes them].",
)
@click.option(
    "--decoder",
    "decoder_choice",
    type=click.Choice(["auto", "speech", "general"]),
    default="auto",
    help="For a model with a second decoder trained for speech: that one on every chunk "
    "(speech), on none (general), or on the chunks the encoder flagged speech  "
    "[default: auto].",
)
@click.option(
    "--format",
    "fmt",
    type=click.Choice(["wav", "flac"]),
    default=None,
    help="Format of outputs named after their input (and of folder conversion)  "
    "[default: wav]; an OUT file's own extension decides for it.",
)
@force_option
@quiet_option
@jobs_option
@threads_option
@shard_option
def decompress(
    paths: tuple[str, ...],
    float_wav: bool,
    salvage: bool,
    model: str | None,
    postfilter: bool | None,
    decoder_choice: str,
    fmt: str | None,
    force: bool,
    quiet: bool,
    jobs: int,
    threads: int,
    shard: tuple[int, int] | None,
) -> None:
    from neucomp import api, batch, names, registry

    registry.set_threads(threads)
    speech_decoder = {"auto": None, "speech": True, "general": False}[decoder_choice]
    plan = names.plan(list(paths), "decompress", fmt)
    if plan.folders is not None:
        src, dst = plan.folders
        _folder_output(dst)
        options = batch.DecompressOptions(
            float_wav=float_wav,
            salvage=salvage,
            model=model,
            postfilter=postfilter,
            speech_decoder=speech_decoder,
        )
        summary = batch.run_batch(
            src,
            dst,
            "decompress",
            jobs=jobs,
            threads=threads,
            force=force,
            quiet=quiet,
            fmt=fmt or "wav",
            options=options,
            shard=shard,
        )
        _finish_batch(summary, quiet)
        return
    _no_shard(shard)
    if fmt is not None:
        for _, dst in plan.pairs:
            if dst == "-" and fmt != "wav":
                raise UsageError("stdout gets WAV: --format flac needs an output file")
            if dst != "-" and Path(dst).suffix.lower() != f".{fmt}":
                raise UsageError(f"--format {fmt} contradicts OUT '{dst}' (its extension decides)")

    def convert(src: str, dst: str, bar: Progress) -> Result:
        return api.decompress_file(
            src,
            dst,
            float_wav=float_wav,
            salvage=salvage,
            force=force,
            model=model,
            progress=bar,
            postfilter=postfilter,
            speech_decoder=speech_decoder,
        )

    _run_files(plan.pairs, convert, _decompress_report, quiet)


@main.command()
@click.argument("src", metavar="FILE")
@click.option("--json", "as_json", is_flag=True, help="Print the fields as JSON.")
def info(src: str, as_json: bool) -> None:
    """Describe a .ecdc FILE (- for stdin): model, coder, rates, length, bitrate."""
    from neucomp.api import open_input
    from neucomp.container import summarize

    with open_input(src) as fp:
        fields = summarize(fp)
    if as_json:
        click.echo(json.dumps(fields, indent=2))
        return
    width = max(len(k) for k in fields)
    for key, value in fields.items():
        if isinstance(value, float):
            value = f"{value:g}"
        click.echo(f"{key:<{width}}  {value}")


if __name__ == "__main__":
    main()
