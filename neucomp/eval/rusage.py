"""`python neucomp/eval/rusage.py REPORT CMD …`: run CMD and write its exit code and peak
RSS to REPORT (JSON), for `make bench`.

Linux counts a child's pre-exec memory in its peak RSS, so a command forked from the
bench process (torch and a model loaded) would report at least the bench's size. This
small launcher, run as a script (it imports nothing of neucomp), forks the command
instead and reports that child's own rusage.
"""

from __future__ import annotations

import json
import os
import sys


def main(argv: list[str]) -> None:
    report, cmd = argv[0], argv[1:]
    pid = os.fork()
    if pid == 0:
        os.execvp(cmd[0], cmd)
    _, status, usage = os.wait4(pid, 0)
    with open(report, "w") as f:
        json.dump({"code": os.waitstatus_to_exitcode(status), "maxrss_kb": usage.ru_maxrss}, f)


if __name__ == "__main__":
    main(sys.argv[1:])
