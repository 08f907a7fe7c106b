"""`dcodex bench workloads`: W1–W6 end to end, each beside its floor from the same run.

    dcodex bench workloads                      # starts a one-process stack (`dcodex up`)
    dcodex bench workloads --stack per-service  # one process per service, as deployed
    dcodex bench workloads --url nats://...     # a stack that runs already
    dcodex bench workloads --json               # for machines

Figures are printed, never asserted. The machine's load is printed beside them: on a
shared machine compare the ratios, whose floors are measured in the same run.
"""

from __future__ import annotations

import asyncio
import json
import os
import platform
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import click
from rich.console import Console
from rich.table import Table

from dcodex.shared.benchmarks import neighbours
from dcodex.shared.benchmarks import workloads as w
from dcodex.shared.benchmarks.floors import HELLO_C, HELLO_CPP, Floors, scratch
from dcodex.shared.benchmarks.stacks import STACK_MODES, StackMode, started_stack
from dcodex.shared.benchmarks.stats import Figures, joined
from dcodex.shared.client import DcodexClient

W5_BLOCKS = 4  # W5 and its floor alternate this many times (fewer for few runs)


@dataclass(frozen=True)
class Row:
    """One workload, its floor, and how its figure compares with the floor's."""

    key: str
    workload: Figures
    floor: Figures | None
    # "latency": p50 / floor p50 (lower is better); "throughput": per second / floor's.
    compare: str = "latency"

    @property
    def ratio(self) -> float | None:
        if self.floor is None:
            return None
        if self.compare == "throughput":
            return self.workload.per_second / self.floor.per_second
        return self.workload.p50 / self.floor.p50

    def as_dict(self) -> dict[str, Any]:
        return {
            "workload": self.key,
            **self.workload.as_dict(),
            "floor": self.floor.as_dict() if self.floor else None,
            "compare": self.compare,
            "ratio": round(self.ratio, 3) if self.ratio is not None else None,
        }


@dataclass
class Report:
    stack: str
    isolation: list[str]
    load_before: tuple[float, float, float]
    rows: list[Row] = field(default_factory=list)
    idle_rss: dict[str, int] = field(default_factory=dict)
    rss_after: dict[str, int] = field(default_factory=dict)
    load_after: tuple[float, float, float] = (0.0, 0.0, 0.0)
    direct_hits: bool = True  # the clients read hits from the bucket themselves
    busy_neighbours: int = 0  # CPU-bound processes of ours beside it (`neighbours.py`)

    def as_dict(self) -> dict[str, Any]:
        return {
            "machine": {
                "cores": os.cpu_count(),
                "python": platform.python_version(),
                "kernel": platform.release(),
                "load_before": self.load_before,
                "load_after": self.load_after,
                "busy_neighbours": self.busy_neighbours,
            },
            "stack": self.stack,
            "direct_hits": self.direct_hits,
            "isolation": self.isolation,
            "workloads": [row.as_dict() for row in self.rows],
            "idle_rss_bytes": self.idle_rss,
            "rss_after_bytes": self.rss_after,
        }


@click.command()
@click.option(
    "--stack",
    "mode",
    type=click.Choice(STACK_MODES),
    default="one-process",
    show_default=True,
    help="how to start the stack (ignored with --url)",
)
@click.option("--url", default=None, help="measure the stack at this NATS URL instead")
@click.option(
    "-n",
    "--runs",
    default=40,
    show_default=True,
    help="measured executions of each new-code workload (W1-W3, W6)",
)
@click.option("--hits", default=400, show_default=True, help="measured cache hits (W4)")
@click.option(
    "--concurrent-hits",
    default=4000,
    show_default=True,
    help="cache hits in all for W4c (enough for a steady rate, not the first burst's)",
)
@click.option("--clients", default=8, show_default=True, help="concurrent clients (W5)")
@click.option(
    "--concurrent-runs",
    default=320,
    show_default=True,
    help="executions in all for W5 (and as many of its floor), in up to 4 blocks each",
)
@click.option(
    "--isolation",
    default="strict",
    show_default=True,
    type=click.Choice(["strict", "best", "rlimits"]),
    help="the started stack's sandbox layers",
)
@click.option(
    "--service-arg",
    "service_args",
    multiple=True,
    help="one more argument for the started services (repeatable)",
)
@click.option(
    "--direct-hits/--no-direct-hits",
    default=True,
    show_default=True,
    help="the clients read hits from the results bucket (as the Python client does), "
    "or ask the cache for every one",
)
@click.option(
    "--busy-neighbours",
    default=0,
    show_default=True,
    type=click.IntRange(min=0),
    help="CPU-bound processes to run beside the benchmark (a busy host, on purpose)",
)
@click.option("--only", default=None, help="comma-separated workloads to run (W1,W4,...)")
@click.option("--json", "as_json", is_flag=True, help="print JSON instead of a table")
def workloads(
    mode: StackMode,
    url: str | None,
    runs: int,
    hits: int,
    concurrent_hits: int,
    clients: int,
    concurrent_runs: int,
    isolation: str,
    service_args: tuple[str, ...],
    direct_hits: bool,
    busy_neighbours: int,
    only: str | None,
    as_json: bool,
) -> None:
    """End-to-end workloads W1-W6 through `dcodex.execute`, each against its floor."""
    chosen = {name.strip().upper() for name in only.split(",")} if only else None
    args = ["--isolation", isolation, *service_args]
    plan = Plan(runs, hits, concurrent_hits, clients, concurrent_runs, direct_hits)
    with neighbours.running(busy_neighbours):
        report = asyncio.run(_bench(mode, url, args, plan, chosen))
    report.busy_neighbours = busy_neighbours
    if as_json:
        click.echo(json.dumps(report.as_dict(), indent=2))
    else:
        _print(report)


@dataclass(frozen=True)
class Plan:
    """What a run measures: how many of each, and how its clients ask for hits."""

    runs: int
    hits: int
    concurrent_hits: int
    clients: int
    concurrent_runs: int
    direct_hits: bool  # and how every client asks for hits


async def _bench(
    mode: StackMode,
    url: str | None,
    service_args: list[str],
    plan: Plan,
    chosen: set[str] | None,
) -> Report:
    def wanted(key: str) -> bool:
        return chosen is None or key in chosen

    async with started_stack(mode, url, service_args) as stack:
        report = Report(stack.mode, [], os.getloadavg(), direct_hits=plan.direct_hits)
        await asyncio.sleep(1.0)  # let start-up work settle before "idle"
        report.idle_rss = stack.rss_bytes()
        with scratch() as directory:
            floors = Floors(Path(directory))
            connecting = DcodexClient.connect(stack.url, direct_hits=plan.direct_hits)
            async with await connecting as client:
                report.isolation = (await client.languages()).isolation
                report.rows = await _rows(client, stack.url, floors, plan, wanted)
        report.rss_after = stack.rss_bytes()
        report.load_after = os.getloadavg()
        return report


async def _rows(
    client: DcodexClient, url: str, floors: Floors, plan: Plan, wanted: Any
) -> list[Row]:
    # The floors run synchronously between workloads: nothing else is measured meanwhile.
    rows: list[Row] = []
    n = plan.runs
    if wanted("W1"):
        name = "W1 Python hello, new code"
        rows.append(Row("W1", *await w.paired(client, name, w.python_hello, floors.python(), n)))
    if wanted("W2"):
        name, floor = "W2 C hello, new code", floors.compile_and_run("gcc", HELLO_C, ".c")
        rows.append(Row("W2", *await w.paired(client, name, w.c_hello, floor, n)))
    if wanted("W3"):
        name = "W3 C++ iostream hello, new code"
        floor = floors.compile_and_run("g++", HELLO_CPP, ".cpp")
        rows.append(Row("W3", *await w.paired(client, name, w.cpp_hello, floor, n)))
    if wanted("W4"):
        rows.append(Row("W4", *await w.cache_hits(client, url, "W4 cache hit", plan.hits)))
        # What a do-nothing NATS service takes for the same messages (a row of its own).
        rows.append(Row("N", await w.echo_service(client, url, plan.hits), None))
        many = await w.connect_many(url, plan.clients, plan.direct_hits)
        try:
            name = f"W4 cache hit, {plan.clients} clients"
            workload = await w.concurrent(many, name, w.cache_hit, plan.concurrent_hits)
        finally:
            await w.close_all(many)
        rows.append(Row("W4c", workload, None))
    if wanted("W5"):
        rows.append(Row("W5", *await _w5(url, floors, plan), compare="throughput"))
    if wanted("W6"):
        name = "W6 C compiled, new stdin"
        rows.append(Row("W6", *await w.paired(client, name, w.c_new_stdin, floors.bwrap(), n)))
        # The same requests with nothing between them, as a judge's would come: the
        # services' work after one reply meets the next request (a row of its own).
        name = "W6 back to back, no floor between"
        rows.append(Row("W6b", (await w.paired(client, name, w.c_new_stdin, None, n))[0], None))
        # The floor under bwrap's: the binary alone (a row of its own, no workload).
        rows.append(Row("C", w.timed(floors.binary(), n), None))
    return rows


async def _w5(url: str, floors: Floors, plan: Plan) -> tuple[Figures, Figures]:
    """W5 and its floor in alternating blocks (floor, W5, floor, W5, ...), each block of
    at least 10 runs per client: a run of several workers cannot be interleaved run by
    run, and blocks share a drifting load between the two where one floor before and
    one after would not."""
    cores = os.cpu_count() or 1
    blocks = max(1, min(W5_BLOCKS, plan.concurrent_runs // (plan.clients * 10)))
    per_block = max(1, plan.concurrent_runs // blocks)
    name = f"W5 Python hello, {plan.clients} clients"
    measured: list[Figures] = []
    floor: list[Figures] = []
    many = await w.connect_many(url, plan.clients, plan.direct_hits)
    try:
        for _ in range(blocks):
            floor.append(floors.python_all_cores(per_block, cores))
            measured.append(await w.concurrent(many, name, w.python_hello, per_block))
    finally:
        await w.close_all(many)
    return joined(name, measured), joined(floor[0].name, floor)


def _print(report: Report) -> None:
    console = Console(width=max(Console().width, 150))  # the table is wide; pipes are not
    load = " ".join(f"{value:.2f}" for value in report.load_before)
    load_after = " ".join(f"{value:.2f}" for value in report.load_after)
    console.print(
        f"stack: {report.stack}; {os.cpu_count()} cores; python {platform.python_version()}; "
        f"load {load} before, {load_after} after"
        + (f"; {report.busy_neighbours} busy neighbours" if report.busy_neighbours else "")
    )
    console.print(f"sandbox layers: {' '.join(report.isolation)}")
    asked = "read from the bucket by the clients" if report.direct_hits else "asked of the cache"
    console.print(f"cache hits: {asked}")
    table = Table(title="end to end through dcodex.execute (ms; ratio: to the floor, same run)")
    for column in (
        "workload",
        "p50",
        "p90",
        "p99",
        "exec/s",
        "floor",
        "floor p50",
        "floor exec/s",
        "ratio",
    ):
        table.add_column(column, justify="left" if column in ("workload", "floor") else "right")
    for row in report.rows:
        figures, floor = row.workload, row.floor
        ratio = row.ratio
        table.add_row(
            figures.name,
            f"{figures.p50:.2f}",
            f"{figures.p90:.2f}",
            f"{figures.p99:.2f}",
            f"{figures.per_second:.0f}",
            floor.name if floor else "–",
            f"{floor.p50:.2f}" if floor else "–",
            f"{floor.per_second:.0f}" if floor else "–",
            (f"{ratio:.2f}x" + (" (of its exec/s)" if row.compare == "throughput" else ""))
            if ratio is not None
            else "–",
        )
    console.print(table)
    if report.idle_rss:
        rss = Table(title="resident memory per process (MB)")
        for column in ("process", "idle, after start", "after the workloads"):
            rss.add_column(column, justify="left" if column == "process" else "right")
        for name, idle in report.idle_rss.items():
            after = report.rss_after.get(name, 0)
            rss.add_row(name, f"{idle / 2**20:.1f}", f"{after / 2**20:.1f}")
        console.print(rss)
    console.print(f"command: {' '.join(['dcodex', 'bench', 'workloads', *sys.argv[3:]])}")
