"""`dcodex bench zygote`: what a Python run costs forked from the zygote, against cold.

Sequential Python hello-world runs through `run_sandboxed` on slots with every layer,
alternating (in blocks) a cold start and a fork of the zygote, and prints per run: the
latency (start to result), the CPU time of everything the run cost (the supervising
process itself, the helper or the zygote's fork, the namespace's reaper, the program),
the CPU time the run's cgroup counted, and its memory peak. Printed, never asserted.
"""

from __future__ import annotations

import asyncio
import os
import resource
import statistics
import time
from pathlib import Path

import click
from rich.console import Console
from rich.table import Table

from dcodex.shared.contract import EffectiveLimits
from dcodex.shared.environment import clean_env
from dcodex.shared.sandbox.helper import prepare_sandbox
from dcodex.shared.sandbox.isolation import SANDBOX_WORKDIR
from dcodex.shared.sandbox.run import SandboxResult, run_sandboxed
from dcodex.shared.sandbox.slots import SlotPool, open_slot_pool
from dcodex.shared.sandbox.workspace import hand_over, workspace, write_file
from dcodex.shared.sandbox.zygote import Zygote, ZygoteKeeper

MiB = 2**20
LIMITS = EffectiveLimits(
    cpu_time_s=2.0,
    wall_time_s=5.0,
    memory_bytes=512 * MiB,
    output_bytes=64 * 1024,
    processes=16,
    file_size_bytes=MiB,
)
PYTHON = ("/usr/bin/python3", "-u")
_TICKS = os.sysconf("SC_CLK_TCK")


@click.command()
@click.option("-n", "--runs", default=100, show_default=True, help="runs each way, per round")
@click.option("--rounds", default=2, show_default=True, help="rounds, each way once per round")
@click.option("--uid", default=61900, show_default=True, help="first sandbox uid (root)")
def zygote(runs: int, rounds: int, uid: int) -> None:
    """Python runs forked from the zygote against cold starts, every layer on."""
    asyncio.run(_bench(runs, rounds, uid))


async def _bench(runs: int, rounds: int, uid: int) -> None:
    await prepare_sandbox()
    env = clean_env(Path(SANDBOX_WORKDIR))
    slots = await open_slot_pool(
        "strict", size=1, uid_base=uid, disk_bytes=64 * MiB, max_queued=None, service="bench"
    )
    keeper = ZygoteKeeper(PYTHON, env, max_forks=10**9, max_age_s=10**9)
    keeper.start()
    table = Table(title=f"Python hello world, {runs} runs each way per round")
    for column in ("round", "start", "p50 ms", "p99 ms", "CPU/run ms", "cgroup CPU ms", "peak MiB"):
        table.add_column(column, justify="right")
    try:
        forked = await _ready(keeper)
        for number in range(1, rounds + 1):
            for name, way in (("zygote", keeper), ("cold", None)):
                row = await _measure(slots, env, way, forked, runs)
                table.add_row(str(number), name, *row)
    finally:
        keeper.close()
        slots.close()
    Console().print(table)
    click.echo(f"load average: {' '.join(f'{x:.2f}' for x in os.getloadavg())}")


async def _ready(keeper: ZygoteKeeper) -> Zygote:
    deadline = time.monotonic() + 30
    while (ready := keeper.zygote()) is None:
        if time.monotonic() > deadline:
            raise click.ClickException("the zygote did not start")
        await asyncio.sleep(0.05)
    return ready


async def _measure(
    slots: SlotPool, env: dict[str, str], keeper: ZygoteKeeper | None, forked: Zygote, runs: int
) -> list[str]:
    before = _own_cpu_ms() + _tree_cpu_ms(forked.process.pid)
    latencies: list[float] = []
    results: list[SandboxResult] = []
    for _ in range(runs):
        started = time.perf_counter()
        results.append(await _hello(slots, env, keeper))
        latencies.append((time.perf_counter() - started) * 1000)
    await asyncio.sleep(1.2)  # the zygote reaps its last children within a second
    spent = _own_cpu_ms() + _tree_cpu_ms(forked.process.pid) - before
    if any(result.zygote != (keeper is not None) for result in results):
        raise click.ClickException("a run did not start the way it was meant to")
    return [
        f"{statistics.median(latencies):.1f}",
        f"{sorted(latencies)[int(len(latencies) * 0.99) - 1]:.1f}",
        f"{spent / runs:.1f}",
        f"{statistics.median(result.cpu_time_ms for result in results):.1f}",
        f"{statistics.median(result.peak_memory_bytes for result in results) / MiB:.1f}",
    ]


async def _hello(
    slots: SlotPool, env: dict[str, str], keeper: ZygoteKeeper | None
) -> SandboxResult:
    async with slots.acquire() as slot:
        with workspace(prefix="dcodex-bench-") as cwd:
            write_file(cwd, "main.py", b"print('Hello, World!')\n", slot, mode=0o400)
            hand_over(cwd, slot)
            result = await run_sandboxed(
                ["python3", "-u", "main.py"],
                cwd=cwd,
                limits=LIMITS,
                env=env,
                slot=slot,
                zygote=keeper,
            )
    if result.stdout != b"Hello, World!\n":
        raise click.ClickException(f"a run failed: {result!r}")
    return result


def _own_cpu_ms() -> float:
    """This process and its reaped children (the helpers of cold runs)."""
    own = resource.getrusage(resource.RUSAGE_SELF)
    children = resource.getrusage(resource.RUSAGE_CHILDREN)
    seconds = own.ru_utime + own.ru_stime + children.ru_utime + children.ru_stime
    return seconds * 1000


def _tree_cpu_ms(pid: int) -> float:
    """The zygote and its reaped children (its forks, with their reapers and programs)."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return sum(int(value) for value in fields[11:15]) * 1000 / _TICKS
