"""Signals to a run's processes through pidfds, never by pid.

What names a run's process (the helper's "pid" report, a cgroup's `cgroup.procs`) is
read after the fact: by the time it is acted on, the process may have ended, been reaped
and its pid taken by another process, another tenant's or the host's, which a signal
by pid would reach. A pidfd names one process for good: a signal through it, once that
process has ended, reaches no one.
"""

from __future__ import annotations

import contextlib
import os
import signal
from collections.abc import Callable

from dcodex.shared.sandbox.proc_stat import stat_fields


def pidfd_of_child(pid: int, parent: int) -> int | None:
    """A pidfd of process `pid` if it is `parent`'s child (running or not yet reaped),
    else None. A helper's only child is the run's process, whose pid stays the helper's
    until the helper reaps it."""
    try:
        pidfd = os.pidfd_open(pid)
    except OSError:
        return None
    try:
        parent_shown = int(stat_fields(pid)[1])
        # Still there after /proc was read: what /proc showed is the process held.
        ours = reaches(pidfd) and parent_shown == parent
    except (OSError, ValueError, IndexError):
        ours = False
    if not ours:
        os.close(pidfd)
        return None
    return pidfd


def send(pidfd: int, signum: int) -> bool:
    """`signum` to the process of `pidfd` (0: only look); False once it is gone."""
    try:
        signal.pidfd_send_signal(pidfd, signum)
    except ProcessLookupError:
        return False
    return True


def reaches(pidfd: int) -> bool:
    """Its process is there (running, or ended and not yet reaped), ours to signal or not."""
    try:
        return send(pidfd, 0)
    except PermissionError:
        return True


def kill_listed(listing: Callable[[], list[int]]) -> list[int]:
    """SIGKILL the processes `listing()` names (a cgroup's members), through pidfds
    opened before a second listing that still names their pids: a pid listed then is
    that member's or, were it reaped and its pid taken since, a process that also joined
    the cgroup; a pidfd opened after such a reuse holds a process the second listing
    does not name. Returns the first listing."""
    pids = listing()
    held: dict[int, int] = {}
    try:
        for pid in pids:
            with contextlib.suppress(OSError):
                held[pid] = os.pidfd_open(pid)
        still_listed = set(listing()) if held else set()
        for pid, pidfd in held.items():
            if pid in still_listed:
                send(pidfd, signal.SIGKILL)
    finally:
        for pidfd in held.values():
            os.close(pidfd)
    return pids
