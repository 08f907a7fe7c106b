"""What `/proc/PID/stat` says of a process."""

from __future__ import annotations

import os
from pathlib import Path

_CLOCK_TICKS = os.sysconf("SC_CLK_TCK")


def stat_fields(pid: int) -> list[str]:
    """Its fields from the state on (the command, which may hold anything, left out):
    0 the state, 1 the parent's pid, 11-14 its own and its reaped children's CPU time.
    Raises OSError once it is gone."""
    return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()


def cpu_seconds_with_children(pid: int) -> float:
    """CPU time of a process and its reaped children. Raises OSError once it is gone."""
    return sum(int(value) for value in stat_fields(pid)[11:15]) / _CLOCK_TICKS
