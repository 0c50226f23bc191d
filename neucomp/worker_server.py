"""Imported by the batch worker server (multiprocessing's forkserver) as a preload.

The server inherits the batch command's stdout and stderr, so a caller that reads them
(a pipe, `2>&1 | tee`, `subprocess.run(..., stderr=PIPE)`) waits until it exits. When
the batch ends, the server leaves through a normal interpreter shutdown, and with torch
imported the module teardown takes ~0.5 s: time the caller sees as the batch's own.
The server owns no files and no buffered output, so it can leave at once instead.

Importing this module anywhere else does nothing: the fast exit is only installed when
the import runs inside the forkserver's main loop.
"""

from __future__ import annotations

import atexit
import os
import sys


def _leave_now() -> None:
    os._exit(0)


def _inside_forkserver() -> bool:
    forkserver = sys.modules.get("multiprocessing.forkserver")
    if forkserver is None:
        return False
    frame = sys._getframe()
    while frame is not None:
        if frame.f_code is forkserver.main.__code__:
            return True
        frame = frame.f_back
    return False


if _inside_forkserver():
    # The forked workers never run it: the server's child path ends in os._exit.
    atexit.register(_leave_now)
