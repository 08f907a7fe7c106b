"""The workloads W1–W6, each through `dcodex.execute` as a client sends it.

Every run is checked (status "ok" and the expected stdout): a fast wrong answer is
not a result. W1–W3 and W5 put a fresh tag in the code so that no cache has seen it.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable
from typing import Any

from dcodex.shared.benchmarks.floors import ECHO_C, HELLO_C, HELLO_CPP, HELLO_PY, tag
from dcodex.shared.benchmarks.stats import Figures
from dcodex.shared.client import DcodexClient, ExecutionResult

Request = Callable[[], dict[str, Any]]


def python_hello() -> dict[str, Any]:
    return {"language": "python", "code": HELLO_PY.format(tag=tag())}


def c_hello() -> dict[str, Any]:
    return {"language": "c", "code": HELLO_C.format(tag=tag())}


def cpp_hello() -> dict[str, Any]:
    return {"language": "cpp", "code": HELLO_CPP.format(tag=tag())}


def c_new_stdin() -> dict[str, Any]:
    return {"language": "c", "code": ECHO_C, "stdin": tag() + "\n"}


HIT = {"language": "python", "code": "print('Hello, World!')  # the cached one\n"}


def cache_hit() -> dict[str, Any]:
    return dict(HIT)


def _checked(result: ExecutionResult) -> None:
    if result.status != "ok" or not result.stdout.startswith("Hello"):
        raise RuntimeError(f"a benchmark run failed: {result.status}: {result.stderr[-500:]}")


async def sequential(client: DcodexClient, name: str, request: Request, runs: int) -> Figures:
    """`runs` requests one after another (after two warm-ups), each timed end to end."""
    for _ in range(2):
        _checked(await client.execute(request()))
    samples = []
    started = time.perf_counter()
    for _ in range(runs):
        payload = request()
        before = time.perf_counter()
        result = await client.execute(payload)
        samples.append((time.perf_counter() - before) * 1000)
        _checked(result)
    return Figures(name, samples, time.perf_counter() - started)


async def concurrent(
    clients: list[DcodexClient], name: str, request: Request, runs: int
) -> Figures:
    """`runs` requests in all from every client at once, each client one at a time."""
    await asyncio.gather(*(client.execute(request()) for client in clients))  # warm up
    samples: list[float] = []
    per_client = max(1, runs // len(clients))

    async def loop(client: DcodexClient) -> None:
        for _ in range(per_client):
            payload = request()
            before = time.perf_counter()
            result = await client.execute(payload)
            samples.append((time.perf_counter() - before) * 1000)
            _checked(result)

    started = time.perf_counter()
    await asyncio.gather(*(loop(client) for client in clients))
    return Figures(name, samples, time.perf_counter() - started)


async def bus_round_trip(client: DcodexClient, runs: int) -> Figures:
    """A bare NATS request to a responder that echoes: the floor under a cache hit."""
    nc = client.nc
    inbox = f"_dcodex_bench.echo.{tag()}"

    async def echo(message: Any) -> None:
        await message.respond(message.data)

    subscription = await nc.subscribe(inbox, cb=echo)
    try:
        payload = b"x" * 200
        await nc.request(inbox, payload, timeout=5)
        samples = []
        started = time.perf_counter()
        for _ in range(runs):
            before = time.perf_counter()
            await nc.request(inbox, payload, timeout=5)
            samples.append((time.perf_counter() - before) * 1000)
        return Figures("bare NATS request/reply", samples, time.perf_counter() - started)
    finally:
        await subscription.unsubscribe()


async def connect_many(url: str, count: int) -> list[DcodexClient]:
    return list(await asyncio.gather(*(DcodexClient.connect(url) for _ in range(count))))


async def close_all(clients: list[DcodexClient]) -> None:
    await asyncio.gather(*(client.close() for client in clients))


Measure = Callable[[], Awaitable[Figures]]
