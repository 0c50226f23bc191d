"""SIGTERM and SIGHUP handled like Ctrl-C: they raise :class:`Terminated`, so that every
``with`` and ``finally`` runs and no temp output is left behind (``kill``, ``timeout``,
CI cancellation and closed terminals send them).

Python runs signal handlers in the main thread only, when it is back in the interpreter,
and the kernel may deliver a signal to any thread (torch has several). So a main thread
blocked in a read (of a pipe that stays open) might never notice, and an exception
raised at an unlucky moment can be lost (code that catches BaseException, or C code
that clears errors). A small relay thread therefore keeps signalling the main thread
itself, which interrupts such reads, until the exception has reached the top; if it
has not GRACE_S later, the relay removes the temp outputs and exits the process.
"""

from __future__ import annotations

import contextlib
import os
import signal
import sys
import threading
import time
from collections.abc import Callable, Iterator

from neucomp.errors import Terminated

TERMINATING = (signal.SIGTERM, signal.SIGHUP)
GRACE_S = 10.0  # how long the Terminated exception may take to end the process
_RESEND_S = 0.2

_deferring = 0  # depth of deferred_termination() blocks
_pending: list[int] = []  # a signal that came within one
_done = False  # Terminated reached the top: no more resends
_temps: set[str] = set()  # temp outputs being written, see writing()
_relay: int | None = None  # write end of the wakeup pipe, one per process
_relayed: set[int] = set()  # signals the relay is resending


def raise_terminated(signum: int, frame: object = None) -> None:
    """The handler: raise Terminated, unless one is already being handled (a resend
    must not interrupt the clean-up) or termination is deferred."""
    if _deferring:
        _pending[:] = [signum]
        return
    if _done or isinstance(sys.exc_info()[1], Terminated):
        return
    raise Terminated(signum)


@contextlib.contextmanager
def terminate_as_exception() -> Iterator[None]:
    """Within the block SIGTERM and SIGHUP raise :class:`Terminated`. A signal that is
    ignored (``nohup``) stays ignored; outside the main thread nothing changes."""
    global _done
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    _done = False
    _relayed.clear()
    before = {}
    for sig in TERMINATING:
        if signal.getsignal(sig) is not signal.SIG_IGN:
            before[sig] = signal.signal(sig, raise_terminated)
    old_fd = signal.set_wakeup_fd(_relay_fd())
    try:
        yield
    except Terminated:
        _done = True
        raise
    finally:
        signal.set_wakeup_fd(old_fd)
        for sig, handler in before.items():
            # after a termination, resends may still come: ignore them, we exit
            signal.signal(sig, signal.SIG_IGN if _done else handler)


def install_in_worker(handler: Callable[[int, object], None]) -> None:
    """``handler`` for SIGTERM and SIGHUP in a worker process, with the relay."""
    for sig in TERMINATING:
        signal.signal(sig, handler)
    signal.set_wakeup_fd(_relay_fd())


@contextlib.contextmanager
def deferred_termination() -> Iterator[None]:
    """A SIGTERM or SIGHUP that comes within the block is acted on at its end.

    Only the main thread defers: Python runs signal handlers there, so a block in another
    thread (a pipe reader) can never have one raised inside it, and must not hold back
    the main thread's."""
    global _deferring
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    _deferring += 1
    try:
        yield
    finally:
        _deferring -= 1
        if _pending and not _deferring:
            raise_terminated(_pending.pop())


@contextlib.contextmanager
def writing(path: str) -> Iterator[None]:
    """Mark ``path`` as a temp output that a hard exit (:func:`_give_up`) removes."""
    _temps.add(path)
    try:
        yield
    finally:
        _temps.discard(path)


def _give_up(signum: int) -> None:
    for path in list(_temps):
        with contextlib.suppress(OSError):
            os.unlink(path)
    os.write(2, f"neucomp: terminated by {signal.Signals(signum).name}\n".encode())
    os._exit(128 + signum)


def _resend(signum: int) -> None:
    """Signal the main thread until Terminated has reached terminate_as_exception();
    if it has not within GRACE_S, exit without it."""
    main = threading.main_thread().ident
    start = time.monotonic()
    while time.monotonic() - start < GRACE_S:
        if _done:
            return
        with contextlib.suppress(OSError):
            signal.pthread_kill(main, signum)
        time.sleep(_RESEND_S)
    _give_up(signum)


def _relay_fd() -> int:
    """The wakeup fd: Python writes each signal's number to it, whatever thread got it."""
    global _relay
    if _relay is None:
        r, w = os.pipe()
        os.set_blocking(w, False)

        def relay() -> None:
            while data := os.read(r, 64):
                for signum in set(data) & set(TERMINATING):
                    if signum not in _relayed:  # our own resends come back here too
                        _relayed.add(signum)
                        threading.Thread(target=_resend, args=(signum,), daemon=True).start()

        threading.Thread(target=relay, name="neucomp-signal-relay", daemon=True).start()
        _relay = w
    return _relay


def exit_with_parent() -> None:
    """In a multiprocessing worker: SIGTERM ourselves (and so clean up) as soon as the
    process that started us is gone, however it went (even SIGKILL). The parent holds
    a pipe to each worker until it exits; the kernel closes it then."""
    import multiprocessing

    parent = multiprocessing.parent_process()
    if parent is None:
        return

    def watch() -> None:
        parent.join()
        os.kill(os.getpid(), signal.SIGTERM)

    threading.Thread(target=watch, name="neucomp-parent-watch", daemon=True).start()
