"""Which command-line arguments are inputs and where each output goes: the naming rule
of ``neucomp compress`` and ``neucomp decompress``, after flac and gzip.

* ``compress song.flac`` writes ``song.ecdc`` beside it; ``decompress song.ecdc`` writes
  ``song.wav`` (``--format flac``: ``song.flac``). Several inputs are each converted
  beside themselves. ``-`` alone is stdin to stdout.
* The last of two or more arguments is OUT unless it is named like an input: an audio
  extension (``.wav .flac .ogg .opus .mp3 .aif .aiff``) for compress, ``.ecdc`` for
  decompress. Such a name could never be a valid OUT (compress refuses to write .ecdc
  bytes under an audio name, decompress writes only .wav and .flac), so reading it as an
  input takes nothing away: ``compress a.wav b.ecdc`` and ``compress a.wav -`` are IN OUT
  as before, ``compress a.wav b.wav`` is two inputs.
* With one input, OUT is a file, ``-`` or an existing folder (the output goes inside
  it, under the input's name); a folder IN with OUT converts a tree (neucomp.batch).
  With several inputs OUT must be an existing folder.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal

from neucomp.audio.base import AUDIO_EXTENSIONS, STDIO
from neucomp.errors import UsageError

Mode = Literal["compress", "decompress"]
ECDC_SUFFIX = ".ecdc"


@dataclass
class Plan:
    """What a command line asks for: a folder conversion, or (IN, OUT) file pairs."""

    folders: tuple[str, str] | None = None
    pairs: list[tuple[str, str]] = field(default_factory=list)


def output_suffix(mode: Mode, fmt: str | None) -> str:
    return ECDC_SUFFIX if mode == "compress" else f".{fmt or 'wav'}"


def named_like_input(path: str, mode: Mode) -> bool:
    """Whether ``path`` has the extension of what ``mode`` reads."""
    suffix = Path(path).suffix.lower()
    return suffix in AUDIO_EXTENSIONS if mode == "compress" else suffix == ECDC_SUFFIX


def beside(src: str, suffix: str) -> str:
    """``music/song.flac`` → ``music/song.ecdc``: the output next to its input."""
    return str(Path(src).with_suffix(suffix)) if Path(src).suffix else src + suffix


def into_folder(src: str, folder: str, suffix: str) -> str:
    return str(Path(folder) / (Path(src).stem + suffix))


def plan(paths: list[str], mode: Mode, fmt: str | None = None) -> Plan:
    """The inputs and outputs ``paths`` (the command's arguments) name, by the rule in
    the module docstring; UsageError for what it cannot mean."""
    if not paths:
        raise UsageError("no input given (see --help)")
    suffix = output_suffix(mode, fmt)
    last = paths[-1]
    if len(paths) > 1 and (last == STDIO or not named_like_input(last, mode)):
        inputs, out = paths[:-1], last
    else:
        inputs, out = paths, None
        if len(paths) == 2 and mode == "compress" and not Path(last).exists():
            # The old `compress IN OUT.wav`: say why it is not an OUT.
            raise UsageError(
                f"cannot write '{Path(last).name}': compress writes .ecdc files, not "
                f"'{Path(last).suffix.lower()}' audio (name OUT .ecdc); as a second input, "
                f"'{last}' does not exist"
            )
    if len(inputs) == 1:
        src = inputs[0]
        if src != STDIO and os.path.isdir(src):
            if out is None:
                raise UsageError(f"a folder IN needs a folder OUT: neucomp {mode} {src} OUTDIR")
            return Plan(folders=(src, out))
        if out is None:
            return Plan(pairs=[(src, STDIO if src == STDIO else beside(src, suffix))])
        if src != STDIO and out != STDIO and os.path.isdir(out):
            return Plan(pairs=[(src, into_folder(src, out, suffix))])
        return Plan(pairs=[(src, out)])
    for src in inputs:
        if src == STDIO:
            raise UsageError("- (stdin) can only be the one input")
        if os.path.isdir(src):
            raise UsageError(
                f"'{src}' is a folder: convert a folder on its own (neucomp {mode} IN OUTDIR)"
            )
    if out is None:
        pairs = [(src, beside(src, suffix)) for src in inputs]
    elif out != STDIO and os.path.isdir(out):
        pairs = [(src, into_folder(src, out, suffix)) for src in inputs]
    else:
        raise UsageError(
            f"{len(inputs)} inputs need an existing folder as OUT, not '{out}' "
            "(or give only inputs: each is written beside itself)"
        )
    _refuse_clashes(pairs)
    return Plan(pairs=pairs)


def _refuse_clashes(pairs: list[tuple[str, str]]) -> None:
    """Two inputs that would write one output (``a.wav a.flac`` → ``a.ecdc``)."""
    seen: dict[str, str] = {}
    for src, dst in pairs:
        key = os.path.normcase(os.path.abspath(dst))
        if key in seen:
            if os.path.abspath(seen[key]) == os.path.abspath(src):
                raise UsageError(f"'{src}' is given twice")
            raise UsageError(f"'{seen[key]}' and '{src}' would both be written to '{dst}'")
        seen[key] = src
