"""`dcodex bench zygote`: what a Python run costs forked from the zygote, against cold.

Python hello-world runs through `run_sandboxed` on slots with every layer, one after
another or `--workers` at once, alternating (in blocks) a cold start and a fork of the
zygote, and prints: the latency of a run (start to result), runs per second, the CPU
time per run of everything it cost (the supervising process itself, the helper or the
zygote, the namespace's reaper, the program) and the supervising process's share,
the CPU time the run's cgroup counted, and its memory peak. With as many workers as
W5's clients this is W5 without the services: the sandbox's own rate, to set beside
bare python3's. Printed, never asserted.
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
from dcodex.shared.sandbox.proc_stat import cpu_seconds_with_children
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


@click.command()
@click.option("-n", "--runs", default=100, show_default=True, help="runs each way, per round")
@click.option("--rounds", default=2, show_default=True, help="rounds, each way once per round")
@click.option("--uid", default=61900, show_default=True, help="first sandbox uid (root)")
@click.option(
    "--workers", default=1, show_default=True, help="runs at once (8: W5 without the services)"
)
def zygote(runs: int, rounds: int, uid: int, workers: int) -> None:
    """Python runs forked from the zygote against cold starts, every layer on."""
    if workers < 1:
        raise click.BadParameter("at least 1", param_hint="--workers")
    asyncio.run(_bench(runs, rounds, uid, workers))


async def _bench(runs: int, rounds: int, uid: int, workers: int) -> None:
    await prepare_sandbox()
    env = clean_env(Path(SANDBOX_WORKDIR))
    slots = await open_slot_pool(
        "strict", size=workers, uid_base=uid, disk_bytes=64 * MiB, max_queued=None,
        service="bench",
    )  # fmt: skip
    keeper = ZygoteKeeper(PYTHON, env, max_forks=10**9, max_age_s=10**9)
    keeper.start()
    at_once = "one at a time" if workers == 1 else f"{workers} at once"
    table = Table(title=f"Python hello world, {runs} runs each way per round, {at_once}")
    columns = ("round", "start", "p50 ms", "p99 ms", "runs/s", "CPU/run ms", "supervisor ms",
               "cgroup CPU ms", "peak MiB")  # fmt: skip
    for column in columns:
        table.add_column(column, justify="right")
    try:
        forked = await _ready(keeper)
        for number in range(1, rounds + 1):
            for name, way in (("zygote", keeper), ("cold", None)):
                row = await _measure(slots, env, way, forked, runs, workers)
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
    slots: SlotPool,
    env: dict[str, str],
    keeper: ZygoteKeeper | None,
    forked: Zygote,
    runs: int,
    workers: int,
) -> list[str]:
    supervisor_before, before = _self_cpu_ms(), _own_cpu_ms() + _tree_cpu_ms(forked.process.pid)
    latencies: list[float] = []
    results: list[SandboxResult] = []

    async def worker(count: int) -> None:
        for _ in range(count):
            started = time.perf_counter()
            results.append(await _hello(slots, env, keeper))
            latencies.append((time.perf_counter() - started) * 1000)

    began = time.perf_counter()
    shares = [runs // workers + (index < runs % workers) for index in range(workers)]
    await asyncio.gather(*(worker(share) for share in shares))
    elapsed = time.perf_counter() - began
    await asyncio.sleep(1.2)  # the zygote reaps its last children within a second
    supervisor = _self_cpu_ms() - supervisor_before
    spent = _own_cpu_ms() + _tree_cpu_ms(forked.process.pid) - before
    if any(result.zygote != (keeper is not None) for result in results):
        raise click.ClickException("a run did not start the way it was meant to")
    return [
        f"{statistics.median(latencies):.1f}",
        f"{sorted(latencies)[int(len(latencies) * 0.99) - 1]:.1f}",
        f"{runs / elapsed:.0f}",
        f"{spent / runs:.1f}",
        f"{supervisor / runs:.1f}",
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
    return _self_cpu_ms() + _cpu_ms(resource.RUSAGE_CHILDREN)


def _self_cpu_ms() -> float:
    """This process alone: the supervision of the runs (the runner's share of a run)."""
    return _cpu_ms(resource.RUSAGE_SELF)


def _cpu_ms(who: int) -> float:
    usage = resource.getrusage(who)
    return (usage.ru_utime + usage.ru_stime) * 1000


def _tree_cpu_ms(pid: int) -> float:
    """The zygote and its reaped children (its forks, with their reapers and programs)."""
    return cpu_seconds_with_children(pid) * 1000
