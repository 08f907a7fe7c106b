"""Coalescing across cache replicas (the `dcodex-inflight` leases), on a real NATS server.

Each test starts its own runner and two cache replicas under a subject prefix of its
own, with metrics on free ports, so the runs and counts it reads are its own.
"""

from __future__ import annotations

import asyncio
import json
import os
import signal
import urllib.request
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import msgpack
import pytest

from dcodex.shared.client import DcodexClient, Event, LiveRun
from dcodex.shared.contract import ExecutionResult, OutputEvent, ResultEvent
from dcodex.shared.service.nats_server import EmbeddedNats
from dcodex.shared.subjects import CACHE
from tests.conftest import metric
from tests.test_cache_service import Stack, replica_counts, wait_for_replicas

pytestmark = pytest.mark.bus


INFLIGHT_BUCKET = "dcodex-inflight"


def start_pair(nats_url: str, log_dir: Path, prefix: str, *cache_args: str) -> Stack:
    stack = Stack(nats_url, log_dir, prefix, *cache_args)
    stack.start_runner()
    stack.start_cache()
    stack.start_cache()
    return stack


@pytest.fixture
def pair(nats_url: str, tmp_path: Path) -> Iterator[Stack]:
    """A runner and two cache replicas with the default lease."""
    stack = start_pair(nats_url, tmp_path, f"pair{uuid.uuid4().hex[:8]}")
    try:
        yield stack
    finally:
        stack.services.stop_all()


async def connect(stack: Stack, timeout: float = 120.0) -> DcodexClient:
    """A client of `stack` that asks the cache for every hit too (what is tested here)."""
    client = await DcodexClient.connect(
        stack.services.url, prefix=stack.prefix, timeout=timeout, direct_hits=False
    )
    await wait_for_replicas(client, 2)
    return client


def served(counts: dict[str, int]) -> int:
    """Requests one replica answered through the cache."""
    return sum(counts.get(outcome, 0) for outcome in ("hit", "miss", "coalesced"))


async def collect(run: LiveRun) -> list[Event]:
    async with run:
        return [event async for event in run.events()]


def stdout_of(events: list[Event]) -> str:
    return "".join(e.data for e in events if isinstance(e, OutputEvent) and e.type == "stdout")


async def test_fifty_identical_requests_over_two_replicas_run_once(pair: Stack) -> None:
    code = f"import time\ntime.sleep(2)\nprint('once')  # {uuid.uuid4().hex}"
    request = {"language": "python", "code": code, "limits": {"wall_time_s": 20}}
    async with await connect(pair) as client:
        replies = [client.execute(request) for _ in range(40)]
        streams = [collect(client.live(request)) for _ in range(10)]
        outcomes = await asyncio.gather(*replies, *streams)
        results: list[ExecutionResult] = [r for r in outcomes if isinstance(r, ExecutionResult)]
        events = [e for e in outcomes if isinstance(e, list)]
        each = await replica_counts(client)
        stats = await client.cache_stats()

    assert len(each) == 2 and all(served(counts) > 0 for counts in each), each
    assert pair.executions() == 1, "the runner ran the program once"
    for run in events:  # the leader's live events, or a replay of its result
        assert [e.type for e in run] == ["started", "stdout", "result"]
        assert stdout_of(run) == "once\n"
    results += [e.result for run in events for e in run if isinstance(e, ResultEvent)]
    assert [r.status for r in results] == ["ok"] * 50
    assert {r.stdout for r in results} == {"once\n"}
    assert len({r.execution_id for r in results}) == 50
    assert sorted(r.cache_hit for r in results) == [False] + [True] * 49
    assert (stats.misses, stats.coalesced, stats.replicas) == (1, 49, 2)
    # One replica claimed the lease and ran it; the other's first request waited on it.
    assert leases(pair, "led") == leases(pair, "followed") == 1
    assert leases(pair, "lost") == 0


async def test_an_uncacheable_run_is_shared_across_replicas_and_not_kept(pair: Stack) -> None:
    code = f"import time\ntime.sleep(5)  # {uuid.uuid4().hex}"
    request = {"language": "python", "code": code, "limits": {"wall_time_s": 1}}
    async with await connect(pair) as client:
        results = await asyncio.gather(*(client.execute(request) for _ in range(20)))
        each = await replica_counts(client)
        assert len(each) == 2 and all(served(counts) > 0 for counts in each), each
        assert [r.status for r in results] == ["wall_time_limit"] * 20
        assert not any(r.cache_hit for r in results), "a wall_time_limit is never a hit"
        assert pair.executions() == 1, "followers on both replicas shared the one run"

        # Once that run is over the next request runs again: it was not kept.
        again = await client.execute(request)
        assert again.status == "wall_time_limit" and again.cache_hit is False
        assert pair.executions() == 2


@pytest.fixture
def short_lease_pair(nats_url: str, tmp_path: Path) -> Iterator[Stack]:
    """Two cache replicas whose leases last 5 s, so a dead leader's lease ends soon."""
    stack = start_pair(
        nats_url, tmp_path, f"lease{uuid.uuid4().hex[:8]}", "--cache-lease-seconds", "5"
    )
    try:
        yield stack
    finally:
        stack.services.stop_all()


async def test_followers_adopt_the_run_of_a_leading_replica_that_dies(
    short_lease_pair: Stack, nats_server: EmbeddedNats
) -> None:
    stack = short_lease_pair
    code = f"import time\ntime.sleep(3)\nprint('survived')  # {uuid.uuid4().hex}"
    request = {"language": "python", "code": code, "limits": {"wall_time_s": 20}}
    async with await connect(stack, timeout=60) as client:
        leases = await client.nc.jetstream().key_value(INFLIGHT_BUCKET)
        watcher = await leases.watchall()
        first = [asyncio.ensure_future(client.execute(request)) for _ in range(6)]
        leader_pid = await lease_holder(watcher)
        await watcher.stop()  # type: ignore[no-untyped-call]
        await until_running(stack)

        caches = stack.services.processes["cache"]
        leader = next(index for index, p in enumerate(caches) if p.pid == leader_pid)
        replicas = await caches_connected(nats_server)
        os.kill(leader_pid, signal.SIGKILL)
        caches[leader].wait()
        survivor = 1 - leader
        # Until nats-server has noticed the closed connection it may still hand the dead
        # leader a request, lost there (a 503 "lost" for that client: not this test's).
        await until_caches_connected(nats_server, replicas - 1)
        # Only the survivor is left to receive these; the dead leader's lease still stands.
        results = await asyncio.gather(*(client.execute(request) for _ in range(20)))
        for request_sent_to_either in first:
            request_sent_to_either.cancel()

    assert [(r.status, r.stdout) for r in results] == [("ok", "survived\n")] * 20
    port = stack.cache_ports[survivor]
    assert metric(port, LEASES, outcome="lost") == 1, (
        "the survivor waited until the dead leader's lease ended"
    )
    assert metric(port, LEASES, outcome="led") == 1, "then took the lease over"
    assert metric(port, LEASES, outcome="adopted") == 1, "and the dead leader's run with it"
    assert stack.executions() == 1, "the program ran again"


async def caches_connected(server: EmbeddedNats) -> int:
    """Cache replicas connected to `server`, as its monitoring port lists them."""

    def count() -> int:
        with urllib.request.urlopen(f"{server.monitoring_url}/connz?limit=4096") as reply:
            connections = json.loads(reply.read())["connections"] or []
        return sum(1 for connection in connections if connection.get("name") == CACHE_NAME)

    return await asyncio.to_thread(count)


async def until_caches_connected(server: EmbeddedNats, replicas: int) -> None:
    for _ in range(1000):
        if await caches_connected(server) == replicas:
            return
        await asyncio.sleep(0.01)
    raise TimeoutError(f"nats-server did not come to {replicas} cache connections")


async def lease_holder(watcher: Any) -> int:
    """The pid in the first lease claimed since `watcher` started."""
    while await watcher.updates(timeout=30) is not None:
        pass  # leases of earlier runs, up to the end-of-initial-values marker
    while True:
        entry = await watcher.updates(timeout=30)
        value = msgpack.unpackb(entry.value) if entry.value else {}
        if value.get("state") == "running":
            holder: int = value["holder"]["pid"]
            return holder


async def until_running(stack: Stack) -> None:
    """Until the runner has a sandbox running: the leader's run has begun."""
    for _ in range(300):
        if metric(stack.runner_port, "dcodex_sandboxes_active") >= 1:
            return
        await asyncio.sleep(0.1)
    raise TimeoutError("the runner started no sandbox")


LEASES = "dcodex_cache_leases_total"
CACHE_NAME = CACHE.micro_name  # what a replica names its NATS connection


def leases(stack: Stack, outcome: str) -> float:
    """`dcodex_cache_leases_total{outcome}` summed over the stack's cache replicas."""
    return sum(
        metric(port, "dcodex_cache_leases_total", outcome=outcome) for port in stack.cache_ports
    )


async def test_without_the_lease_bucket_requests_still_run_and_it_heals(pair: Stack) -> None:
    async with await connect(pair) as client:
        await client.nc.jetstream().delete_key_value(INFLIGHT_BUCKET)
        code = f"print('alone')  # {uuid.uuid4().hex}"
        result = await client.execute({"language": "python", "code": code})
        assert (result.status, result.stdout, result.cache_hit) == ("ok", "alone\n", False)
        assert pair.executions() == 1 and leases(pair, "unavailable") == 1
        assert "inflight_bucket_unavailable" in "".join(
            pair.services.log("cache", index) for index in range(2)
        )

        # Nobody re-creates the bucket here: the replicas do, and lead through it again.
        for attempt in range(300):
            code = f"print({attempt})  # {uuid.uuid4().hex}"
            assert (await client.execute({"language": "python", "code": code})).status == "ok"
            if leases(pair, "led") > 0:
                break
            await asyncio.sleep(0.1)
        assert leases(pair, "led") == 1
        await client.nc.jetstream().key_value(INFLIGHT_BUCKET)  # it exists again


async def test_hits_come_from_memory_and_a_purge_empties_every_replicas_memory(
    pair: Stack,
) -> None:
    """A result served once is then a hit from memory on each replica; after a purge
    through either replica, neither serves the old result from memory again."""
    code = f"import random\nprint(random.random())  # {uuid.uuid4().hex}"
    request = {"language": "python", "code": code}
    async with await connect(pair) as client:
        first = await client.execute(request)
        hits = await until_both_replicas_hit_memory(pair, client, request)
        assert {(r.stdout, r.cache_hit) for r in hits} == {(first.stdout, True)}
        assert len({r.execution_id for r in hits}) == len(hits), "each hit is its own"

        assert (await client.purge()).purged >= 1
        again = await client.execute(request)
        assert again.cache_hit is False and again.stdout != first.stdout, "it ran again"
        after = await until_both_replicas_hit_memory(pair, client, request)
        assert {r.stdout for r in after} == {again.stdout}, "a purged result was served"
    assert pair.executions() == 2


MEMORY_HITS = "dcodex_cache_memory_hits_total"


async def until_both_replicas_hit_memory(
    stack: Stack, client: DcodexClient, request: dict[str, Any]
) -> list[ExecutionResult]:
    """The same request sent until each replica has served it from memory since the call."""
    before = [metric(port, MEMORY_HITS) for port in stack.cache_ports]
    results: list[ExecutionResult] = []
    while len(results) < 60:
        results.append(await client.execute(request))
        now = [metric(port, MEMORY_HITS) for port in stack.cache_ports]
        if all(n > b for n, b in zip(now, before, strict=True)):
            return results
    raise AssertionError(f"not both replicas served from memory: {before} -> {now}")
