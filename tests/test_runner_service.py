"""Runner and cache behaviour that needs its own service processes or bucket state."""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from dcodex.shared.client import DcodexClient
from dcodex.shared.errors import DcodexError
from tests.conftest import ServiceProcesses, wait_for_subject

pytestmark = pytest.mark.bus

SANDBOXES = 2
RECORD_SPAN = """
import time

start = time.time()
time.sleep(0.4)
print(start, time.time())
"""


@pytest.fixture
def small_runner(nats_url: str, tmp_path: Path) -> Iterator[ServiceProcesses]:
    """A runner with 2 sandboxes, under its own subject prefix so it serves alone."""
    services = ServiceProcesses(nats_url, tmp_path, ("--subject-prefix", "small"))
    services.start("runner", "--max-concurrent-sandboxes", str(SANDBOXES))
    try:
        asyncio.run(wait_for_subject(nats_url, "small.languages"))
        yield services
    finally:
        services.stop_all()


async def test_runner_runs_at_most_max_concurrent_sandboxes(small_runner: ServiceProcesses) -> None:
    async with await DcodexClient.connect(small_runner.url, prefix="small") as client:
        results = await asyncio.gather(
            *(client.run({"language": "python", "code": RECORD_SPAN}) for _ in range(6))
        )
    spans = [tuple(map(float, r.stdout.split())) for r in results]
    assert all(r.status == "ok" for r in results)
    # At no moment did more than SANDBOXES programs run at once.
    moments = sorted({start for start, _ in spans})
    overlaps = [sum(start <= t < end for start, end in spans) for t in moments]
    assert max(overlaps) == SANDBOXES


async def test_results_bucket_has_the_configured_ttl(client: DcodexClient) -> None:
    info = await client.nc.jetstream().stream_info("KV_dcodex-results")
    assert info.config.max_age == 3600
    assert info.config.max_bytes == 256 * 1024 * 1024


async def test_cache_stats_and_purge(client: DcodexClient) -> None:
    code = f"print({time.time_ns()})"
    await client.execute({"language": "python", "code": code})
    await client.execute({"language": "python", "code": code})
    stats = await client.cache_stats()
    assert stats.entries >= 1 and stats.bytes > 0 and stats.hits >= 1 and stats.misses >= 1
    purged = await client.purge()
    assert purged.purged == stats.entries
    assert (await client.cache_stats()).entries == 0
    again = await client.execute({"language": "python", "code": code})
    assert again.cache_hit is False


async def test_languages_reply_is_json_by_default(client: DcodexClient) -> None:
    msg = await client.nc.request("dcodex.languages", b"", timeout=5)
    assert json.loads(msg.data)["limits"]["ceilings"]["wall_time_s"] == 30.0


@pytest.fixture
def solo_stack(nats_url: str, tmp_path: Path) -> Iterator[ServiceProcesses]:
    """All three services under their own prefix, the cache re-reading languages often."""
    services = ServiceProcesses(nats_url, tmp_path, ("--subject-prefix", "solo"))
    for name in ("compiler", "runner"):
        services.start(name)
    services.start("cache", "--languages-refresh-seconds", "0.2")
    try:
        for subject in ("solo.compile", "solo.languages", "solo.cache.stats"):
            asyncio.run(wait_for_subject(nats_url, subject))
        yield services
    finally:
        services.stop_all()


async def test_hits_are_served_with_every_runner_stopped(solo_stack: ServiceProcesses) -> None:
    request = {"language": "python", "code": f"print('kept', {time.time_ns()})"}
    async with await DcodexClient.connect(solo_stack.url, prefix="solo") as client:
        first = await client.execute(request)
        for runner in solo_stack.processes["runner"]:
            solo_stack.stop(runner)
        await asyncio.sleep(0.5)  # past the cache's refresh of the runners' languages
        hit = await client.execute(request)
        assert hit.cache_hit is True and hit.stdout == first.stdout
        with pytest.raises(DcodexError) as raised:
            await client.execute({**request, "code": "print('new')"})
        assert raised.value.code == 503


async def test_identical_concurrent_requests_run_once(client: DcodexClient) -> None:
    code = f"import time\ntime.sleep(1)\nprint({time.time_ns()})"
    before = await client.cache_stats()
    results = await asyncio.gather(
        *(client.execute({"language": "python", "code": code}) for _ in range(10))
    )
    after = await client.cache_stats()
    assert len({r.stdout for r in results}) == 1
    assert len({r.execution_id for r in results}) == 10
    assert after.misses - before.misses == 1
    assert after.coalesced - before.coalesced == 9
    assert sorted(r.cache_hit for r in results) == [False] + [True] * 9


async def test_coalesced_wall_time_results_are_not_cache_hits(client: DcodexClient) -> None:
    request = {
        "language": "python",
        "code": f"import time\ntime.sleep(5)  # {time.time_ns()}",
        "limits": {"wall_time_s": 0.5},
    }
    results = await asyncio.gather(*(client.execute(request) for _ in range(3)))
    assert [r.status for r in results] == ["wall_time_limit"] * 3
    assert not any(r.cache_hit for r in results)


async def test_purge_one_key_and_bad_keys(client: DcodexClient) -> None:
    assert (await client.purge("0" * 64)).purged == 0
    with pytest.raises(DcodexError) as raised:
        await client.purge("bad key*")
    assert raised.value.code == 400 and raised.value.field == "key"
