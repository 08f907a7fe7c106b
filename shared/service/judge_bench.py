"""`dcodex bench judge`: one C++ submission with N test cases, judged three ways.

  judge         one `dcodex.judge` request: compiled once, the cases in parallel
  N requests    N `dcodex.execute` requests with the same source (DCodeX's compile
                cache still compiles once), sent as a client would, 10 at a time
  Judge0's way  N requests whose sources differ by a comment, so each is compiled

All three bypass the result cache. The stack (an embedded nats-server and the three
services) runs in this process, so the CPU time counted is everything's: the
services, the compilers and the programs (this process and its children).
"""

from __future__ import annotations

import asyncio
import resource
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass

import click

from dcodex.shared.client import DcodexClient
from dcodex.shared.logging import configure_logging
from dcodex.shared.service.config import Settings
from dcodex.shared.service.nats_server import EmbeddedNats
from dcodex.shared.service.stack import installed_services, start_services, stop_services

PROGRAM = """
#include <iostream>
int main() {
    long long n, sum = 0;
    std::cin >> n;
    for (long long i = 1; i <= n; ++i) sum += i * i % 7;
    std::cout << sum << "\\n";
}
// MARKER
"""
CLIENT_CONCURRENCY = 10  # requests a client keeps in flight for the N-requests ways


def expected(n: int) -> str:
    return f"{sum(i * i % 7 for i in range(1, n + 1))}\n"


@dataclass(frozen=True)
class Measured:
    wall_s: float
    cpu_s: float
    ok: bool


def cpu_seconds() -> float:
    """CPU of this process (the services) and its reaped children (compiles, programs)."""
    own = resource.getrusage(resource.RUSAGE_SELF)
    children = resource.getrusage(resource.RUSAGE_CHILDREN)
    return own.ru_utime + own.ru_stime + children.ru_utime + children.ru_stime


async def measured(work: Callable[[], Awaitable[bool]]) -> Measured:
    cpu, wall = cpu_seconds(), time.perf_counter()
    ok = await work()
    return Measured(time.perf_counter() - wall, cpu_seconds() - cpu, ok)


async def bench(cases: int, rounds: int) -> None:
    settings = Settings(isolation="best", metrics_port=0)
    server = EmbeddedNats()
    settings = settings.model_copy(update={"nats_url": server.start()})
    services = await start_services(settings, installed_services(), {})
    try:
        client = await DcodexClient.connect(settings.nats_url, timeout=600)
        async with client:
            await run_rounds(client, cases, rounds)
    finally:
        await stop_services(services)
        server.stop()


async def run_rounds(client: DcodexClient, cases: int, rounds: int) -> None:
    inputs = [str(1000 * (i + 1)) for i in range(cases)]
    gate = asyncio.Semaphore(CLIENT_CONCURRENCY)

    async def one(code: str, stdin: str) -> bool:
        async with gate:
            result = await client.execute(
                {"language": "cpp", "code": code, "stdin": stdin + "\n", "cache": False}
            )
        return result.status == "ok" and result.stdout == expected(int(stdin))

    ways: dict[str, list[Measured]] = {"judge": [], "N requests": [], "Judge0's way": []}
    for _ in range(rounds):

        def code(suffix: str) -> str:
            return PROGRAM.replace("MARKER", f"{time.time_ns()} {suffix}")

        async def judge() -> bool:
            result = await client.judge(
                {
                    "language": "cpp",
                    "code": code("judge"),
                    "cache": False,
                    "tests": [
                        {"stdin": n + "\n", "expected_output": expected(int(n))} for n in inputs
                    ],
                }
            )
            if result.verdict != "accepted":
                first = result.summary.first_failure
                failure = result.cases[first] if first is not None else None
                click.echo(f"judge: {result.verdict} {failure}", err=True)
            return result.verdict == "accepted"

        async def same_source() -> bool:
            shared = code("requests")
            return all(await asyncio.gather(*(one(shared, n) for n in inputs)))

        async def judge0() -> bool:
            return all(await asyncio.gather(*(one(code(f"case {n}"), n) for n in inputs)))

        for name, work in (("judge", judge), ("N requests", same_source), ("Judge0's way", judge0)):
            ways[name].append(await measured(work))
    click.echo(f"one C++ submission, {cases} test cases, best of {rounds} rounds")
    click.echo(f"{'':<14}{'wall':>10}{'CPU':>10}  all correct")
    for name, runs in ways.items():
        best = min(runs, key=lambda m: m.wall_s)
        click.echo(
            f"{name:<14}{best.wall_s:>9.2f}s{best.cpu_s:>9.2f}s  "
            f"{'yes' if all(m.ok for m in runs) else 'NO'}"
        )


@click.command()
@click.option("--cases", default=100, show_default=True, help="test cases of the submission")
@click.option("--rounds", default=3, show_default=True, help="rounds of each way (best shown)")
def main(cases: int, rounds: int) -> None:
    """Judge one C++ submission with many cases: one judge request vs one request per case."""
    configure_logging("warning", "console")
    asyncio.run(bench(cases, rounds))
