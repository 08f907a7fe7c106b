"""Whether the host's CPUs had time to spare lately, read from /proc/stat.

A warm interpreter costs its whole start-up (about 10 ms of CPU); a run forked from
the zygote, the cold way, costs about half. So one is started ahead only when nothing
waits for the CPU it takes (`warm_pool.spare_core`): when fewer of the runner's runs are
under way than it may use cores, and the host's CPUs stayed partly idle lately (an
average over about `HORIZON_S`). The count of runs alone let refills through under
load: between requests a busy runner often has fewer runs under way than cores, while
its requests' other parts (the client, the cache, nats-server) keep every core busy.

/proc/stat counts the whole host (a container sees its host's), so a busy neighbour
holds refills back too, and an idle host lets them through whatever a CPU quota says.
"""

from __future__ import annotations

import asyncio
import math
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

# The idle time is averaged over about this long (an exponential moving average):
# long enough to tell a busy host from a gap between two runs, short enough to follow
# a change of load within a few runs.
HORIZON_S = 0.1
# How many CPUs' worth of time must have stayed idle, on that average.
SPARE_CPUS = 0.3
# While short of it, how long to wait before reading again.
RECHECK_S = 0.025
PROC_STAT = Path("/proc/stat")


@dataclass(frozen=True)
class CpuTimes:
    """The host's CPU time so far, in clock ticks: idle (with I/O wait) and in all."""

    idle: int
    total: int
    cpus: int


def parse_proc_stat(text: str) -> CpuTimes:
    """The first line's totals (`cpu user nice system idle iowait irq softirq steal ...`)
    and the number of `cpuN` lines. Guest time is already in user and nice: not added."""
    lines = text.splitlines()
    fields = [int(value) for value in lines[0].split()[1:9]]
    cpus = sum(1 for line in lines[1:] if line.startswith("cpu"))
    return CpuTimes(idle=fields[3] + fields[4], total=sum(fields), cpus=max(cpus, 1))


def read_cpu_times(path: Path = PROC_STAT) -> CpuTimes | None:
    """This host's `CpuTimes`; None where /proc/stat cannot be read or understood."""
    try:
        return parse_proc_stat(path.read_text())
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
        read: Callable[[], CpuTimes | None] = read_cpu_times,
        *,
        horizon_s: float = HORIZON_S,
        needed: float = SPARE_CPUS,
        recheck_s: float = RECHECK_S,
    ) -> None:
        self._read = read
        self._horizon_s = horizon_s
        self._needed = needed
        self._recheck_s = recheck_s
        self._last = read()
        self._since = time.monotonic()
        self.idle: float | None = None  # None until measured, or without /proc/stat

    async def until_spare(self) -> None:
        """Until the average reaches `needed` (at once after a quiet spell: the reading
        before it covers the whole spell)."""
        while True:
            if not self._measure():
                return  # nothing to go by: the count of runs alone decides
            if self.idle is not None and self.idle >= self._needed:
                return
            await asyncio.sleep(self._recheck_s)  # busy, or not a clock tick yet

    def _measure(self) -> bool:
        """Fold a new reading into `idle`; False when there is no /proc/stat to read."""
        reading = self._read()
        if reading is None or self._last is None:
            self._last = reading
            return False
        if reading.total == self._last.total:
            return True  # not a clock tick since (they are 10 ms): nothing new
        now = time.monotonic()
        sample = idle_cpus(self._last, reading)
        weight = 1 - math.exp(-(now - self._since) / self._horizon_s)
        self.idle = sample if self.idle is None else self.idle + weight * (sample - self.idle)
        self._last, self._since = reading, now
        return True
