"""Whether the host's CPUs had time to spare lately, read from /proc/stat.

A warm interpreter costs its whole start-up (about 10 ms of CPU); a run forked from
the zygote, the cold way, costs about half. So one is started ahead only when nothing
waits for the CPU it takes (`warm_pool.spare_core`): when fewer of the runner's runs are
under way than it may use cores, and the host's CPUs stayed partly idle lately (an
average over about `HORIZON_S`). The count of runs alone let refills through under
load: between requests a busy runner often has fewer runs under way than cores, while
its requests' other parts (the client, the cache, nats-server) keep every core busy.

Only the CPUs the runner may run on count (its affinity: a cpuset narrows it). /proc/stat
is the host's (a container sees its node's), so a busy neighbour on those CPUs holds
refills back too, and idle ones let them through whatever a CPU quota says.
"""

from __future__ import annotations

import asyncio
import math
import os
import time
from collections.abc import Callable, Collection
from dataclasses import dataclass
from functools import partial
from pathlib import Path

# The idle time is averaged over about this long (an exponential moving average):
# long enough to tell a busy host from a gap between two runs, short enough to follow
# a change of load within a few runs.
HORIZON_S = 0.1
# How many CPUs' worth of time must have stayed idle, on that average.
SPARE_CPUS = 0.3
# While short of it, how long to wait before reading again.
RECHECK_S = 0.025
# A /proc/stat whose counts do not move for this long says nothing (gVisor's are 0).
STALE_S = 1.0
PROC_STAT = Path("/proc/stat")


@dataclass(frozen=True)
class CpuTimes:
    """The host's CPU time so far, in clock ticks: idle (with I/O wait) and in all."""

    idle: int
    total: int
    cpus: int


def parse_proc_stat(text: str, cpus: Collection[int] | None = None) -> CpuTimes:
    """The totals of the `cpuN` lines of `cpus` (None: every one), each `cpuN user nice
    system idle iowait irq softirq steal ...`. Guest time is already in user and nice:
    not added."""
    rows = [
        fields
        for fields in map(str.split, text.splitlines())
        if fields
        and fields[0][:3] == "cpu"
        and fields[0][3:].isdigit()
        and (cpus is None or int(fields[0][3:]) in cpus)
    ]
    if not rows:
        raise ValueError("none of the CPUs asked for is in /proc/stat")
    idle = total = 0
    for fields in rows:
        values = [int(value) for value in fields[1:9]]
        idle += values[3] + values[4]
        total += sum(values)
    return CpuTimes(idle=idle, total=total, cpus=len(rows))


def read_cpu_times(path: Path = PROC_STAT, cpus: Collection[int] | None = None) -> CpuTimes | None:
    """`CpuTimes` of `cpus` (None: all); None where /proc/stat cannot be read or understood."""
    try:
        return parse_proc_stat(path.read_text(), cpus)
    except (OSError, ValueError, IndexError):
        return None


def idle_cpus(before: CpuTimes, after: CpuTimes) -> float:
    """How many CPUs' worth of time stayed idle between two readings."""
    elapsed = after.total - before.total
    if elapsed <= 0:
        return float(after.cpus)  # no tick between them: nothing was measured busy
    return (after.idle - before.idle) / elapsed * after.cpus


class SpareCpu:
    """The host's idle CPUs, averaged over about `horizon_s` from the readings taken
    whenever it is asked; waits until they reach `needed`."""

    def __init__(
        self,
        read: Callable[[], CpuTimes | None] | None = None,
        *,
        horizon_s: float = HORIZON_S,
        needed: float = SPARE_CPUS,
        recheck_s: float = RECHECK_S,
        stale_s: float = STALE_S,
    ) -> None:
        # By default the CPUs this process may run on, as they were when it started.
        self._read = read or partial(read_cpu_times, cpus=frozenset(os.sched_getaffinity(0)))
        self._horizon_s = horizon_s
        self._needed = needed
        self._recheck_s = recheck_s
        self._stale_s = stale_s
        self._last = self._read()
        self._since = time.monotonic()
        self.idle: float | None = None  # None until measured, or without /proc/stat

    async def until_spare(self) -> None:
        """Until the average reaches `needed` (after a quiet spell, a new average from a
        first reading `recheck_s` long)."""
        while True:
            if not self._measure():
                return  # nothing to go by: the count of runs alone decides
            if self.idle is not None and self.idle >= self._needed:
                return
            await asyncio.sleep(self._recheck_s)  # busy, or not a clock tick yet

    def _measure(self) -> bool:
        """Fold a new reading into `idle`; False when there is nothing to go by (no
        /proc/stat, or one that does not move)."""
        reading, now = self._read(), time.monotonic()
        if reading is None or self._last is None:
            self._last, self._since = reading, now
            return False
        elapsed = now - self._since
        if reading.total == self._last.total:
            # Not a clock tick since (they are 10 ms); for long: counts that never move.
            return elapsed < self._stale_s
        if elapsed > 2 * self._horizon_s:
            # What the last reading saw is long past: the average starts again from here.
            self._last, self._since, self.idle = reading, now, None
            return True
        sample = idle_cpus(self._last, reading)
        weight = 1 - math.exp(-elapsed / self._horizon_s)
        self.idle = sample if self.idle is None else self.idle + weight * (sample - self.idle)
        self._last, self._since = reading, now
        return True
