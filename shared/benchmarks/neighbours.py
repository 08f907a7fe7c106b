"""Busy neighbours: CPU-bound processes beside a benchmark, for its figures on a busy host.

A shared machine's other work takes cores from the stack and from the floors alike;
`dcodex bench workloads --busy-neighbours N` makes that load on purpose, so that how a
ratio holds up under it can be measured rather than waited for. Each neighbour is a
Python loop that never sleeps; all are stopped, by PID, when the benchmark ends.
"""

from __future__ import annotations

import contextlib
import os
import subprocess
import sys
from collections.abc import Iterator

# In the neighbours' command lines: how a test (or a person) finds any left behind.
MARK = "dcodex-bench-busy-neighbour"
# Killed with the benchmark even if it is killed itself (PR_SET_PDEATHSIG, then a
# check that it had not died already): a forgotten loop would burn a core for good.
_LOOP = f"""# {MARK}
import ctypes, os, signal, sys
ctypes.CDLL(None).prctl(1, signal.SIGKILL)
if os.getppid() != int(sys.argv[1]):
    raise SystemExit
while True:
    pass
"""


@contextlib.contextmanager
def running(count: int) -> Iterator[list[int]]:
    """`count` CPU-bound processes while the block runs; their PIDs."""
    started: list[subprocess.Popen[bytes]] = []
    try:
        for _ in range(count):
            started.append(subprocess.Popen([sys.executable, "-c", _LOOP, str(os.getpid())]))
        yield [process.pid for process in started]
    finally:
        for process in started:
            process.kill()
            process.wait()
