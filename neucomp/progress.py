"""Progress over seconds of audio, for long single files: the engine reports, the CLI
shows a tqdm bar when stderr is a terminal (and nothing at all otherwise).

The engine calls :meth:`Progress.start` once with the total duration (None when a pipe
does not say), then :meth:`Progress.update` with the seconds done so far.
"""

from __future__ import annotations

import os
import sys
from typing import TextIO


class Progress:
    """Reports nowhere: what the engine gets when nobody is watching."""

    def start(self, total: float | None) -> None:
        """The work ahead, in seconds of audio (None: unknown)."""

    def update(self, done: float) -> None:
        """Seconds of audio done so far (never decreasing)."""

    def close(self) -> None:
        """The work is over (or was abandoned)."""


class Bar(Progress):
    """A tqdm bar on ``stream`` (stderr) over seconds of audio, with rate and ETA; it
    disappears when closed, so that the one-line summary follows on a clean line."""

    def __init__(self, label: str, stream: TextIO | None = None) -> None:
        self.label = label
        self.stream = stream or sys.stderr
        self._bar = None

    def start(self, total: float | None) -> None:
        from tqdm import tqdm

        columns, rows = _size(self.stream)
        self._bar = tqdm(
            total=None if total is None else round(total, 1),
            desc=self.label,
            unit="s",
            unit_scale=False,
            leave=False,
            file=self.stream,
            ncols=columns,
            nrows=rows,  # tqdm hides every bar on a terminal it thinks has 0 rows
            mininterval=0.2,
            bar_format="{desc}: {percentage:3.0f}%|{bar}| {n:.1f}/{total:.1f} s "
            "[{elapsed}<{remaining}, {rate_fmt}]"
            if total is not None
            else "{desc}: {n:.1f} s [{elapsed}, {rate_fmt}]",
        )

    def update(self, done: float) -> None:
        bar = self._bar
        if bar is None:
            return
        done = round(done, 1)
        if bar.total is not None:
            done = min(done, bar.total)
        if done > bar.n:
            bar.update(done - bar.n)

    def close(self) -> None:
        if self._bar is not None:
            self._bar.close()
            self._bar = None


def _size(stream: TextIO) -> tuple[int, int]:
    """The terminal's columns and rows; 80 × 24 where it says 0 (a fresh pseudo-terminal,
    as in tests and some CI runners) or cannot say."""
    try:
        size = os.get_terminal_size(stream.fileno())
    except (AttributeError, OSError, ValueError):
        return 80, 24
    return size.columns or 80, size.lines or 24


def for_terminal(label: str, quiet: bool, stream: TextIO | None = None) -> Progress:
    """A bar when ``stream`` (stderr) is a terminal and not ``quiet``, else nothing: a
    pipe or a log gets only errors and the summary line."""
    stream = stream or sys.stderr
    try:
        tty = stream.isatty()
    except (AttributeError, ValueError):
        tty = False
    return Bar(label, stream) if tty and not quiet else Progress()
