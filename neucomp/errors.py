"""Exceptions the CLI turns into one-line messages and exit codes.

Every error a user can cause (bad input, corrupt files, missing models, existing
outputs) is a subclass of NeucompError; anything else is a bug and shows a traceback.
"""

from __future__ import annotations


class NeucompError(Exception):
    """Base class: a problem the user can fix; `str(err)` is the one-line message."""

    exit_code = 1


class InputError(NeucompError):
    """The input file is missing, unreadable, not audio, or empty."""

    exit_code = 2


class OutputError(NeucompError):
    """The output exists (and no --force), or its folder is missing or not writable."""

    exit_code = 3


class FormatError(NeucompError):
    """A .ecdc stream is not valid: wrong magic, unknown version, truncated, bad CRC."""

    exit_code = 4


class CorruptDataError(FormatError):
    """A checksum did not match: the bytes were damaged after writing."""


class TruncatedError(FormatError):
    """The stream ended before the container said it would."""


class ModelError(NeucompError):
    """A model is missing, its file is damaged, or it is not the one a stream needs."""

    exit_code = 5


class UsageError(NeucompError):
    """An option value is not supported (e.g. an unknown bandwidth)."""

    exit_code = 6


class Terminated(BaseException):
    """SIGTERM or SIGHUP arrived: unwind like Ctrl-C, so temp outputs are removed.

    A BaseException (like KeyboardInterrupt), so that no ``except Exception`` swallows it.
    """

    def __init__(self, signum: int) -> None:
        super().__init__(signum)
        self.signum = signum
        self.exit_code = 128 + signum  # what a shell reports for a process the signal killed
