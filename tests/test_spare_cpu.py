"""The warm interpreters' second gate: the host's CPUs had time to spare lately."""

from __future__ import annotations

import asyncio
import os
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from dcodex.services.runner.spare_cpu import (
    CpuTimes,
    SpareCpu,
    idle_cpus,
    parse_proc_stat,
    read_cpu_times,
)
from dcodex.services.runner.warm_pool import spare_core
from dcodex.shared.sandbox.slots import SlotPool

PROC_STAT = """\
cpu  4705 356 584 3699 23 23 12 0 7 0
cpu0 1393 280 260 1800 10 12 8 0 3 0
cpu1 3312 76 324 1899 13 11 4 0 4 0
intr 114930548 113199788 3 0 5 263 0 0 0 0 0 0 0 0 0 0 0 0 0 0
ctxt 1990473
procs_running 2
"""


def test_proc_stat_gives_idle_total_and_cpus() -> None:
    times = parse_proc_stat(PROC_STAT)
    # idle with I/O wait; guest time (the last two) is in user and nice already.
    assert times == CpuTimes(idle=3699 + 23, total=4705 + 356 + 584 + 3699 + 23 + 23 + 12, cpus=2)
    # Only the CPUs the runner may use (its affinity), when given.
    second = parse_proc_stat(PROC_STAT, cpus={1})
    assert second == CpuTimes(idle=1899 + 13, total=3312 + 76 + 324 + 1899 + 13 + 11 + 4, cpus=1)
    with pytest.raises(ValueError):
        parse_proc_stat(PROC_STAT, cpus={7})


def test_idle_cpus_between_two_readings() -> None:
    before = CpuTimes(idle=1000, total=4000, cpus=2)
    assert idle_cpus(before, CpuTimes(idle=1050, total=4100, cpus=2)) == 1.0
    assert idle_cpus(before, CpuTimes(idle=1000, total=4100, cpus=2)) == 0.0
    assert idle_cpus(before, before) == 2.0  # no tick between them: nothing seen busy


def test_this_hosts_proc_stat_is_read(tmp_path: Path) -> None:
    times = read_cpu_times()
    assert times is not None and times.cpus >= 1 and 0 <= times.idle <= times.total
    ours = read_cpu_times(cpus=os.sched_getaffinity(0))
    assert ours is not None and ours.cpus == len(os.sched_getaffinity(0))
    assert read_cpu_times(tmp_path / "missing") is None
    (tmp_path / "garbled").write_text("cpu x y\n")
    assert read_cpu_times(tmp_path / "garbled") is None


class Readings:
    """A stand-in /proc/stat for two CPUs whose every reading is 10 ticks later, busy
    or idle as `busy` says."""

    def __init__(self) -> None:
        self.busy = True
        self.moving = True
        self.idle = self.total = 0
        self.reads = 0

    def __call__(self) -> CpuTimes:
        self.reads += 1
        if self.moving:
            self.total += 20
            self.idle += 0 if self.busy else 20
        return CpuTimes(self.idle, self.total, 2)


async def test_waits_while_busy_and_goes_once_idle() -> None:
    readings = Readings()
    spare = SpareCpu(readings, horizon_s=0.01, recheck_s=0.001)
    waiting = asyncio.create_task(spare.until_spare())
    await asyncio.sleep(0.05)
    assert not waiting.done() and readings.reads > 5  # it kept looking
    readings.busy = False
    await asyncio.wait_for(waiting, timeout=1)
    assert spare.idle is not None and spare.idle >= 0.3


async def test_after_a_quiet_spell_it_goes_at_once() -> None:
    readings = Readings()
    readings.busy = False
    spare = SpareCpu(readings)
    await asyncio.wait_for(spare.until_spare(), timeout=0.01)
    assert readings.reads == 2  # one at the start, one now


async def test_without_proc_stat_nothing_is_held_back() -> None:
    spare = SpareCpu(lambda: None)
    await asyncio.wait_for(spare.until_spare(), timeout=0.01)
    assert spare.idle is None


async def test_counts_that_never_move_hold_nothing_back() -> None:
    """gVisor's /proc/stat, say: all zeros, always."""
    readings = Readings()
    readings.moving = False
    spare = SpareCpu(readings, recheck_s=0.005, stale_s=0.05)
    await asyncio.wait_for(spare.until_spare(), timeout=1)
    assert spare.idle is None and readings.reads > 2


class Timeline:
    """A stand-in /proc/stat for two CPUs, in 1 ms ticks, idle or busy as told when."""

    def __init__(self) -> None:
        self.changes: list[tuple[float, bool]] = [(time.monotonic(), False)]  # (when, busy)

    def busy(self, busy: bool) -> None:
        self.changes.append((time.monotonic(), busy))

    def __call__(self) -> CpuTimes:
        now = time.monotonic()
        spans = zip(self.changes, [*self.changes[1:], (now, False)], strict=True)
        idle = sum(end - start for (start, busy), (end, _) in spans if not busy)
        return CpuTimes(int(idle * 2000), int((now - self.changes[0][0]) * 2000), 2)


async def test_a_reading_long_past_starts_the_average_again() -> None:
    """Idle long ago, busy now: the old reading's idle time does not let a refill in."""
    timeline = Timeline()
    spare = SpareCpu(timeline, horizon_s=0.01, recheck_s=0.002)
    await asyncio.sleep(0.3)  # a quiet spell, then busy
    timeline.busy(True)
    waiting = asyncio.create_task(spare.until_spare())
    await asyncio.sleep(0.1)
    assert not waiting.done(), spare.idle
    timeline.busy(False)
    await asyncio.wait_for(waiting, timeout=1)


@pytest.fixture
def every_cpu_busy() -> Iterator[list[subprocess.Popen[bytes]]]:
    """A busy loop on every CPU of the host, stopped by PID."""
    burners = [  # they inherit our affinity: as many as the CPUs the gate looks at
        subprocess.Popen([sys.executable, "-c", "while True: pass"])
        for _ in os.sched_getaffinity(0)
    ]
    try:
        yield burners
    finally:
        for burner in burners:
            if burner.poll() is None:
                burner.send_signal(signal.SIGKILL)
            burner.wait()


async def test_the_host_busy_on_every_cpu_holds_refills_back(
    every_cpu_busy: list[subprocess.Popen[bytes]],
) -> None:
    await asyncio.sleep(0.2)  # the burners running
    spare = SpareCpu()
    waiting = asyncio.create_task(spare.until_spare())
    await asyncio.sleep(0.5)
    assert not waiting.done(), spare.idle
    for burner in every_cpu_busy:
        burner.kill()
        burner.wait()
    await asyncio.wait_for(waiting, timeout=5)


async def test_the_refill_gate_wants_both_a_free_core_and_idle_cpus() -> None:
    """`spare_core`: the count of runs is looked at again once the CPUs have been idle."""
    cores = len(os.sched_getaffinity(0))
    slots = SlotPool(cores + 1, None)
    timeline = Timeline()
    timeline.busy(True)
    gate = spare_core(slots, SpareCpu(timeline, horizon_s=0.01, recheck_s=0.002))

    async def refill() -> None:
        await gate()

    waiting = asyncio.create_task(refill())
    await asyncio.sleep(0.05)
    assert not waiting.done()  # the CPUs are busy
    release = asyncio.Event()
    held = asyncio.Semaphore(0)

    async def hold() -> None:
        async with slots.acquire():
            held.release()
            await release.wait()

    holders = [asyncio.create_task(hold()) for _ in range(cores)]
    for _ in holders:
        await held.acquire()
    timeline.busy(False)
    await asyncio.sleep(0.1)
    assert not waiting.done()  # idle now, but every core has a run
    release.set()
    await asyncio.wait_for(waiting, timeout=1)
    await asyncio.gather(*holders)
