"""The workloads W1–W6, each through `dcodex.execute` as a client sends it.

Every run is checked (status "ok" and the expected stdout): a fast wrong answer is
not a result. W1–W3 and W5 put a fresh tag in the code so that no cache has seen it.
"""

from __future__ import annotations

import asyncio
import sys
import time
from collections.abc import Awaitable, Callable
from typing import Any

from dcodex.shared.benchmarks.floors import ECHO_C, HELLO_C, HELLO_CPP, HELLO_PY, Floor, tag
from dcodex.shared.benchmarks.stats import Figures
from dcodex.shared.bus import new_id
from dcodex.shared.client import DcodexClient, ExecutionResult
from dcodex.shared.codec import CONTENT_TYPE_HEADER, JSON, REQUEST_ID_HEADER, encode

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


async def paired(
    client: DcodexClient, name: str, request: Request, floor: Floor | None, runs: int
) -> tuple[Figures, Figures | None]:
    """`runs` requests one after another, each followed by one run of `floor`.

    Alternating the two (after two warm-ups of each) makes them share whatever else the
    machine does meanwhile, so their ratio holds on a busy machine too.
    """
    for _ in range(2):
        _checked(await client.execute(request()))
        if floor is not None:
            floor.once()
    samples: list[float] = []
    floor_samples: list[float] = []
    elapsed = floor_elapsed = 0.0
    for _ in range(runs):
        payload = request()
        before = time.perf_counter()
        result = await client.execute(payload)
        took = time.perf_counter() - before
        _checked(result)
        samples.append(took * 1000)
        elapsed += took
        if floor is not None:
            # Blocking on purpose: nothing else of ours runs while the floor is timed.
            before = time.perf_counter()
            floor.once()
            took = time.perf_counter() - before
            floor_samples.append(took * 1000)
            floor_elapsed += took
    measured = Figures(name, samples, elapsed)
    return measured, Figures(floor.name, floor_samples, floor_elapsed) if floor else None


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


async def cache_hits(
    client: DcodexClient, url: str, name: str, runs: int
) -> tuple[Figures, Figures]:
    """Cache hits, each followed by the floor under it: one bare NATS request to a
    responder that echoes (on a connection of its own, as a service would be)."""
    responder = await DcodexClient.connect(url)
    subject = f"_dcodex_bench.echo.{tag()}"

    async def echo(message: Any) -> None:
        await message.respond(message.data)

    subscription = await responder.nc.subscribe(subject, cb=echo)
    await responder.nc.flush()
    payload = b"x" * 200
    samples: list[float] = []
    floor_samples: list[float] = []
    try:
        for index in range(runs + 2):
            before = time.perf_counter()
            _checked(await client.execute(cache_hit()))
            middle = time.perf_counter()
            await client.nc.request(subject, payload, timeout=5)
            if index >= 2:  # two warm-ups
                samples.append((middle - before) * 1000)
                floor_samples.append((time.perf_counter() - middle) * 1000)
    finally:
        await subscription.unsubscribe()
        await responder.close()
    return (
        Figures(name, samples, sum(samples) / 1000),
        Figures("bare NATS request/reply", floor_samples, sum(floor_samples) / 1000),
    )


async def echo_service(client: DcodexClient, url: str, runs: int) -> Figures:
    """A hit's request and headers sent to a process that only answers them with a
    reply of a hit's size, `runs` times in a loop of their own (interleaved with the
    hits, a third process in the loop slowed the hits and their floor alike)."""
    reply_size = len((await client.execute(cache_hit())).model_dump_json())
    subject = f"_dcodex_bench.echo.{tag()}"
    service = await asyncio.create_subprocess_exec(
        *(sys.executable, "-m", "dcodex.shared.benchmarks.echo_service"),
        *(url, subject, str(reply_size)),
        stdout=asyncio.subprocess.PIPE,
    )
    samples: list[float] = []
    try:
        assert service.stdout is not None
        if await asyncio.wait_for(service.stdout.readline(), 30) != b"ready\n":
            raise RuntimeError("the benchmark's echo service did not start")
        for index in range(runs + 2):
            request = encode({**cache_hit(), "execution_id": new_id()})
            headers = {REQUEST_ID_HEADER: new_id(), CONTENT_TYPE_HEADER: JSON}
            before = time.perf_counter()
            await client.nc.request(subject, request, timeout=5, headers=headers)
            if index >= 2:  # two warm-ups
                samples.append((time.perf_counter() - before) * 1000)
    finally:
        if service.returncode is None:
            service.kill()
        await service.wait()
    return Figures("do-nothing NATS service, a hit's messages", samples, sum(samples) / 1000)


async def connect_many(url: str, count: int, direct_hits: bool = True) -> list[DcodexClient]:
    connecting = (DcodexClient.connect(url, direct_hits=direct_hits) for _ in range(count))
    return list(await asyncio.gather(*connecting))


async def close_all(clients: list[DcodexClient]) -> None:
    await asyncio.gather(*(client.close() for client in clients))


Measure = Callable[[], Awaitable[Figures]]


def timed(floor: Floor, runs: int) -> Figures:
    """`floor` alone, `runs` times after a warm-up."""
    floor.once()
    samples = []
    for _ in range(runs):
        before = time.perf_counter()
        floor.once()
        samples.append((time.perf_counter() - before) * 1000)
    return Figures(floor.name, samples, sum(samples) / 1000)
