"""The cache service on a real NATS server: coalescing, replicas, bounds, a lost bucket.

These tests start their own runner and caches under their own subject prefix (or on
their own NATS server), with metrics on free ports, so the counts they read are theirs.
"""

from __future__ import annotations

import asyncio
import time
import uuid
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import pytest

from dcodex.services.cache.replicas import gather_counts
from dcodex.shared.client import DcodexClient
from dcodex.shared.contract import ExecutionResult
from dcodex.shared.service.nats_server import EmbeddedNats
from tests.conftest import ServiceProcesses, free_port, metric, wait_for_subject

pytestmark = pytest.mark.bus


PREFIX = "cachetest"
MAX_RESULT_BYTES = 4096
RESULTS_STREAM = "KV_dcodex-results"


async def wait_for_replicas(client: DcodexClient, count: int, timeout: float = 30.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if len(await replica_counts(client)) == count:
            return
        await asyncio.sleep(0.1)
    raise TimeoutError(f"{count} cache replicas did not answer $SRV.STATS")


async def replica_counts(client: DcodexClient) -> list[dict[str, int]]:
    """Each cache replica's counts as `$SRV.STATS.dcodex-cache` reports them."""
    return await gather_counts(client.nc, "dcodex-cache", f"{client.prefix}.execute")


class Stack:
    """A runner and caches of one prefix, each serving metrics on its own port."""

    def __init__(self, url: str, log_dir: Path, prefix: str, *cache_args: str) -> None:
        self.services = ServiceProcesses(url, log_dir, ("--subject-prefix", prefix))
        self.prefix = prefix
        self.cache_args = cache_args
        self.runner_port = free_port()
        self.cache_ports: list[int] = []

    def start_runner(self) -> None:
        self.services.start("runner", "--metrics-port", str(self.runner_port))
        asyncio.run(wait_for_subject(self.services.url, f"{self.prefix}.languages"))

    def start_cache(self, *args: str) -> int:
        """Start one more cache replica (not waiting for it); its index."""
        port = free_port()
        self.services.start("cache", "--metrics-port", str(port), *self.cache_args, *args)
        self.cache_ports.append(port)
        return len(self.cache_ports) - 1

    def stop_cache(self, index: int) -> None:
        self.services.stop(self.services.processes["cache"][index])

    def executions(self) -> float:
        """Programs the runner has run, from its own Prometheus metrics."""
        return metric(self.runner_port, "dcodex_executions_total")


@pytest.fixture(scope="module")
def cache_stack(nats_url: str, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Stack]:
    """One runner and one cache under PREFIX, results over MAX_RESULT_BYTES not stored."""
    stack = Stack(
        nats_url,
        tmp_path_factory.mktemp("cache-stack"),
        PREFIX,
        "--cache-max-result-bytes",
        str(MAX_RESULT_BYTES),
    )
    try:
        stack.start_runner()
        stack.start_cache()
        asyncio.run(wait_for_subject(nats_url, f"{PREFIX}.cache.stats"))
        yield stack
    finally:
        stack.services.stop_all()


@pytest.fixture
async def client(cache_stack: Stack) -> AsyncIterator[DcodexClient]:
    async with await DcodexClient.connect(cache_stack.services.url, prefix=PREFIX) as connected:
        yield connected


def program(text: str = "") -> str:
    """A Python program no earlier request has sent."""
    return f"print({text!r})  # {uuid.uuid4().hex}"


# ------------------------------------------------------------------ coalescing


async def test_fifty_identical_requests_run_once(cache_stack: Stack, client: DcodexClient) -> None:
    request = {
        "language": "python",
        "code": f"import time\ntime.sleep(2)\n{program('once')}",
        "limits": {"wall_time_s": 20},
    }
    runs_before = cache_stack.executions()
    stats_before = await client.cache_stats()
    results = await asyncio.gather(*(client.execute(request) for _ in range(50)))
    stats_after = await client.cache_stats()
    assert cache_stack.executions() - runs_before == 1, "the runner ran the program once"
    assert [r.status for r in results] == ["ok"] * 50
    assert {r.stdout for r in results} == {"once\n"}
    assert len({r.execution_id for r in results}) == 50
    assert sorted(r.cache_hit for r in results) == [False] + [True] * 49
    assert stats_after.misses - stats_before.misses == 1
    assert stats_after.coalesced - stats_before.coalesced == 49
    again = await client.execute(request)
    assert again.cache_hit is True and cache_stack.executions() - runs_before == 1


# ------------------------------------------------------------------ policy


async def test_results_over_the_size_limit_are_not_cached(client: DcodexClient) -> None:
    big = {"language": "python", "code": f"print('x' * {MAX_RESULT_BYTES})  # {uuid.uuid4()}"}
    first = await client.execute(big)
    again = await client.execute(big)
    assert first.status == again.status == "ok" and len(again.stdout) == MAX_RESULT_BYTES + 1
    assert again.cache_hit is False
    small = {"language": "python", "code": program("small")}
    await client.execute(small)
    assert (await client.execute(small)).cache_hit is True


async def test_purge_one_key_from_a_result(client: DcodexClient) -> None:
    kept = {"language": "python", "code": program("kept")}
    dropped = {"language": "python", "code": program("dropped")}
    await client.execute(kept)
    key = (await client.execute(dropped)).cache_key
    assert key is not None
    assert (await client.purge(key)).purged == 1
    assert (await client.execute(dropped)).cache_hit is False
    assert (await client.execute(kept)).cache_hit is True
    assert (await client.purge(key)).purged == 1, "the re-run was stored again"


# ------------------------------------------------------------------ a lost bucket


async def test_requests_pass_through_while_the_bucket_is_gone_and_it_heals(
    cache_stack: Stack, client: DcodexClient
) -> None:
    port = cache_stack.cache_ports[0]
    request = {"language": "python", "code": program("through")}
    passed_before = metric(port, "dcodex_cache_passthrough_total")
    runs_before = cache_stack.executions()
    js = client.nc.jetstream()
    await js.delete_key_value("dcodex-results")

    result = await client.execute(request)
    assert result.status == "ok" and result.stdout == "through\n" and result.cache_hit is False
    assert cache_stack.executions() - runs_before == 1, "a runner served it"
    assert metric(port, "dcodex_cache_passthrough_total") - passed_before == 1
    assert "results_bucket_unavailable" in cache_stack.services.log("cache")

    # Nobody re-creates the bucket here: the cache does, and serves hits again.
    hit = await until_hit(client, request)
    assert hit.stdout == "through\n"
    assert (await js.stream_info(RESULTS_STREAM)).config.max_age == 3600
    assert (await client.cache_stats()).passthrough >= 1


async def until_hit(client: DcodexClient, request: dict[str, str]) -> ExecutionResult:
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        result = await client.execute(request)
        assert result.status == "ok"
        if result.cache_hit:
            return result
        await asyncio.sleep(0.2)
    raise AssertionError("the cache did not serve hits again")


# ------------------------------------------------------------------ replicas


@pytest.fixture
def two_replicas(nats_url: str, tmp_path: Path) -> Iterator[Stack]:
    stack = Stack(nats_url, tmp_path, "cachepair")
    try:
        stack.start_runner()
        stack.start_cache()
        stack.start_cache()
        asyncio.run(wait_for_subject(nats_url, "cachepair.cache.stats"))
        yield stack
    finally:
        stack.services.stop_all()


async def test_two_replicas_share_the_bucket_and_the_stats(two_replicas: Stack) -> None:
    programs = [{"language": "python", "code": program(str(n))} for n in range(30)]
    # Every hit asked of the cache: what its replicas count is what is tested.
    connecting = DcodexClient.connect(
        two_replicas.services.url, prefix="cachepair", direct_hits=False
    )
    async with await connecting as client:
        await wait_for_replicas(client, 2)
        first = await asyncio.gather(*(client.execute(p) for p in programs))
        assert not any(r.cache_hit for r in first)
        each = await replica_counts(client)
        # Requests spread over both replicas (queue group); both stored results.
        assert len(each) == 2 and all(counts["miss"] > 0 for counts in each), each
        stats = await client.cache_stats()
        assert stats.replicas == 2 and stats.misses == 30 and stats.hits == 0

        # With the first replica gone, the second hits every result, its own and the other's.
        two_replicas.stop_cache(0)
        await wait_for_replicas(client, 1)
        second = await asyncio.gather(*(client.execute(p) for p in programs))
        assert all(r.cache_hit for r in second)
        assert [r.stdout for r in second] == [r.stdout for r in first]

        # A fresh replica alone sees what the others stored.
        two_replicas.start_cache()
        await wait_for_replicas(client, 2)
        two_replicas.stop_cache(1)
        await wait_for_replicas(client, 1)
        third = await asyncio.gather(*(client.execute(p) for p in programs))
        assert all(r.cache_hit for r in third)
        stats = await client.cache_stats()
        assert stats.replicas == 1 and stats.hits == 30 and stats.misses == 0


# ------------------------------------------------------------------ bounds


@pytest.fixture(scope="module")
def own_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Stack]:
    """A NATS server of its own, so the bucket's bounds can be set without touching others."""
    server = EmbeddedNats()
    url = server.start()
    stack = Stack(url, tmp_path_factory.mktemp("own-server"), "dcodex")
    try:
        stack.start_runner()
        yield stack
    finally:
        stack.services.stop_all()
        server.stop()


async def test_byte_bound_drops_the_oldest_results(own_server: Stack) -> None:
    bound = 8192
    # The bucket's own bound: a replica's memory may keep what the bucket dropped.
    index = own_server.start_cache("--cache-max-bytes", str(bound), "--cache-memory-bytes", "0")
    programs = [{"language": "python", "code": program(str(n))} for n in range(40)]
    try:
        async with await DcodexClient.connect(own_server.services.url) as client:
            await wait_for_replicas(client, 1)
            for request in programs:
                assert (await client.execute(request)).cache_hit is False
            stats = await client.cache_stats()
            assert 0 < stats.bytes <= bound and 0 < stats.entries < len(programs)
            assert (await client.execute(programs[-1])).cache_hit is True, "the newest stays"
            assert (await client.execute(programs[0])).cache_hit is False, "the oldest went"
    finally:
        own_server.stop_cache(index)


async def test_results_expire_after_the_ttl(own_server: Stack) -> None:
    index = own_server.start_cache("--cache-ttl-seconds", "1")
    request = {"language": "python", "code": program("expires")}
    try:
        async with await DcodexClient.connect(own_server.services.url) as client:
            await wait_for_replicas(client, 1)
            info = await client.nc.jetstream().stream_info(RESULTS_STREAM)
            assert info.config.max_age == 1
            await client.execute(request)
            assert (await client.execute(request)).cache_hit is True
            assert await until_empty(client), "the result outlived the bucket's max age"
            assert (await client.execute(request)).cache_hit is False
    finally:
        own_server.stop_cache(index)


async def until_empty(client: DcodexClient) -> bool:
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        if (await client.cache_stats()).entries == 0:
            return True
        await asyncio.sleep(0.2)
    return False
