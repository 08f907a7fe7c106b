"""Hits the client reads straight from the results bucket (`shared/client/_direct_hits.py`,
docs/cache.md#direct-hits), against the real stack: the same result the cache would
give, without the cache seeing the request; and everything it must not serve that way
still goes to the cache."""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator

import pytest

from dcodex.shared.client import DcodexClient, ExecutionResult
from dcodex.shared.client._direct_hits import MISSES_TO_STOP
from tests.conftest import ServiceProcesses

pytestmark = pytest.mark.bus


@pytest.fixture
async def through_cache(stack: ServiceProcesses) -> AsyncIterator[DcodexClient]:
    """A client that sends every request to the cache service."""
    async with await DcodexClient.connect(stack.url, direct_hits=False) as connected:
        yield connected


def fresh_program() -> dict[str, object]:
    """A program whose every run prints something new: a second run is told by its output."""
    return {"language": "python", "code": f"import uuid  # {uuid.uuid4().hex}\nprint(uuid.uuid4())"}


def same_apart_from_the_id(one: ExecutionResult, other: ExecutionResult) -> bool:
    return one.model_dump(exclude={"execution_id"}) == other.model_dump(exclude={"execution_id"})


async def test_a_stored_result_is_read_directly_as_the_cache_would_answer_it(
    client: DcodexClient, through_cache: DcodexClient
) -> None:
    program = fresh_program()
    ran = await through_cache.execute(program)
    assert (ran.status, ran.cache_hit) == ("ok", False)
    from_cache = await client.execute(program)  # its first hit: from the cache
    assert from_cache.cache_hit
    before = await client.cache_stats()
    direct = await client.execute({**program, "execution_id": "direct-hit-1"})
    after = await client.cache_stats()
    assert direct.stdout == ran.stdout, "the stored run's output, not a new run's"
    assert (direct.cache_hit, direct.execution_id) == (True, "direct-hit-1")
    assert same_apart_from_the_id(direct, from_cache)
    assert (after.hits, after.misses) == (before.hits, before.misses), "the cache never saw it"


async def test_without_direct_hits_the_cache_answers_every_hit(
    client: DcodexClient, through_cache: DcodexClient
) -> None:
    program = fresh_program()
    await client.execute(program)
    before = await through_cache.cache_stats()
    hit = await through_cache.execute(program)
    after = await through_cache.cache_stats()
    assert hit.cache_hit and after.hits == before.hits + 1


async def test_a_new_client_asks_the_cache_until_it_answers_a_hit(
    client: DcodexClient,
) -> None:
    assert client.direct_hits is not None and not client.direct_hits.looking
    for _ in range(3):
        assert not (await client.execute(fresh_program())).cache_hit
    assert not client.direct_hits.looking, "new code each call: no lookups to pay for"
    program = fresh_program()
    first = await client.execute(program)
    assert not client.direct_hits.looking
    before = await client.cache_stats()
    again = await client.execute(program)
    assert (again.cache_hit, again.stdout) == (True, first.stdout)
    assert client.direct_hits.looking, "the cache's hit: this client's requests repeat"
    direct = await client.execute(program)
    assert (direct.cache_hit, direct.stdout) == (True, first.stdout)
    assert (await client.cache_stats()).hits == before.hits + 1


async def test_misses_in_a_row_stop_the_lookups_until_the_cache_answers_a_hit(
    client: DcodexClient,
) -> None:
    assert client.direct_hits is not None
    opening = fresh_program()
    await client.execute(opening)
    assert (await client.execute(opening)).cache_hit and client.direct_hits.looking
    for _ in range(MISSES_TO_STOP):
        assert not (await client.execute(fresh_program())).cache_hit
    assert not client.direct_hits.looking, "new code each call: straight to the cache"
    program = fresh_program()
    first = await client.execute(program)
    before = await client.cache_stats()
    again = await client.execute(program)  # through the cache: a hit there
    assert (again.cache_hit, again.stdout) == (True, first.stdout)
    assert client.direct_hits.looking, "a hit from the cache opens the lookups again"
    middle = await client.cache_stats()
    third = await client.execute(program)
    after = await client.cache_stats()
    assert (third.cache_hit, third.stdout) == (True, first.stdout)
    assert (middle.hits, after.hits) == (before.hits + 1, before.hits + 1)


async def test_a_purged_result_is_not_read_directly(client: DcodexClient) -> None:
    program = fresh_program()
    first = await client.execute(program)
    assert first.cache_key is not None
    assert (await client.execute(program)).stdout == first.stdout  # the cache's hit
    assert (await client.execute(program)).stdout == first.stdout  # a direct one
    assert (await client.purge(first.cache_key)).purged == 1
    after = await client.execute(program)
    assert (after.cache_hit, after.stdout != first.stdout) == (False, True), "run again"


async def test_what_is_not_a_plain_cached_run_goes_to_the_cache(client: DcodexClient) -> None:
    program = fresh_program()
    first = await client.execute(program)
    assert (await client.execute(program)).cache_hit  # the cache's: lookups start
    assert client.direct_hits is not None and client.direct_hits.looking
    before = await client.cache_stats()
    streamed = await client.execute({**program, "stream": True})  # its events are replayed
    uncached = await client.execute({**program, "cache": False})
    after = await client.cache_stats()
    assert (streamed.cache_hit, streamed.stdout) == (True, first.stdout)
    assert (uncached.cache_hit, uncached.stdout != first.stdout) == (False, True)
    assert after.hits == before.hits + 1
    with pytest.raises(Exception, match="language"):
        await client.execute({**program, "language": "cobol"})  # the cache's 400
