"""Leases in `dcodex-inflight`: their values and lease time without a bus, then the
claim / wait / finish cycle on a real NATS server, and the claim sent with a lookup."""

from __future__ import annotations

import asyncio
import contextlib
import uuid
from collections.abc import AsyncIterator

import msgpack
import nats
import nats.js.errors
import pytest
from nats.js.kv import KeyValue

from dcodex.services.cache.inflight import (
    INFLIGHT_BUCKET,
    Abandoned,
    Finished,
    HeldLease,
    Inflight,
    Lease,
    decode,
    finished_value,
    holder,
    running_value,
)
from dcodex.services.cache.results import ResultStore
from dcodex.services.cache.service import Cache, lease_seconds
from dcodex.shared.codec import MSGPACK
from dcodex.shared.contract import ExecuteRequest, ExecutionResult
from dcodex.shared.errors import TIMEOUT, DcodexError
from dcodex.shared.results import pack
from dcodex.shared.service import micro
from dcodex.shared.service.config import Settings

pytestmark = pytest.mark.bus


def test_a_running_lease_names_its_holder_and_the_run_it_waits_for() -> None:
    value = running_value(holder(), "run-1")
    assert decode(value) == Abandoned("run-1")  # what a follower adopts should it end now
    assert msgpack.unpackb(value)["holder"]["pid"] > 0


def test_a_running_lease_of_an_older_replica_names_no_run() -> None:
    assert decode(msgpack.packb({"state": "running", "holder": holder()})) is True


def test_a_finished_lease_carries_the_result_and_whether_it_was_kept() -> None:
    result = ExecutionResult(
        execution_id="leader", status="wall_time_limit", language="python", stdout="tick\n"
    )
    state = decode(finished_value(Finished(result, kept=False)))
    assert state == Finished(result, kept=False)


def test_a_finished_lease_carries_the_error() -> None:
    error = DcodexError(TIMEOUT, "no runner answered within 90 s")
    state = decode(finished_value(Finished(error=error)))
    assert isinstance(state, Finished) and state.result is None and state.error is not None
    assert (state.error.code, state.error.message) == (TIMEOUT, error.message)


def test_anything_else_holds_no_lease() -> None:
    for value in (b"", None, b"\xc1", msgpack.packb([1, 2]), msgpack.packb({"state": "x"})):
        assert decode(value) is False
    assert decode(msgpack.packb({"state": "finished"})) is False


def test_the_lease_outlives_the_request_timeout_unless_set() -> None:
    assert lease_seconds(Settings(request_timeout_seconds=30)) == 10  # renewed while it runs
    assert lease_seconds(Settings(request_timeout_seconds=30, cache_lease_seconds=5)) == 5


RESULT = ExecutionResult(execution_id="leader", status="ok", language="python", stdout="hi\n")


@contextlib.asynccontextmanager
async def inflight_on(url: str, lease_s: float) -> AsyncIterator[Inflight]:
    """One replica's view of the bucket, on a connection of its own."""
    nc = await nats.connect(url)
    try:
        inflight = Inflight(nc.jetstream(), lease_s, 64 * 1024 * 1024, nc.max_payload - 4096)
        assert await inflight.open()
        yield inflight
    finally:
        await nc.close()


@pytest.fixture
async def replicas(nats_url: str) -> AsyncIterator[tuple[Inflight, Inflight]]:
    async with inflight_on(nats_url, 60) as first, inflight_on(nats_url, 60) as second:
        yield first, second


async def test_a_follower_gets_every_leaders_outcome(replicas: tuple[Inflight, Inflight]) -> None:
    leader, follower = replicas
    for round in range(100):
        key = uuid.uuid4().hex
        lease = await leader.claim(key, "leader-run")
        assert isinstance(lease, Lease) and await follower.claim(key, "follower-run") is None
        finishing = asyncio.ensure_future(finish_soon(leader, lease, (round % 10) / 1000))
        assert await follower.wait(key) == Finished(RESULT, kept=True)
        await finishing


async def finish_soon(leader: Inflight, lease: Lease, after_s: float) -> None:
    """Finish while the follower is setting up its watch, or already watching."""
    await asyncio.sleep(after_s)
    await leader.finish(lease, Finished(RESULT, kept=True))


async def test_a_finished_or_released_lease_can_be_claimed_again(
    replicas: tuple[Inflight, Inflight],
) -> None:

    first, second = replicas
    key = uuid.uuid4().hex
    lease = await first.claim(key, "first-run")
    assert isinstance(lease, Lease)
    await first.finish(lease, Finished(RESULT, kept=False))
    again = await second.claim(key, "second-run")
    assert isinstance(again, Lease) and await first.claim(key, "first-run") is None
    await second.release(again)
    assert await second.wait(key) == Abandoned()  # released: the lease is gone, not seen
    assert await first.claim(key, "first-run") is not None


async def test_the_lease_of_a_replica_that_never_finishes_expires(nats_url: str) -> None:
    key = uuid.uuid4().hex
    async with inflight_on(nats_url, 1) as dead, inflight_on(nats_url, 1) as waiting:
        assert await dead.claim(key, "dead-run") is not None
        assert await waiting.claim(key, "waiting-run") is None
        # Ended without an outcome; it named the run its leader asked for.
        assert await waiting.wait(key) == Abandoned("dead-run")
        assert await waiting.claim(key, "waiting-run") is not None


async def test_a_just_finished_and_stored_run_is_shared_not_run_again(
    replicas: tuple[Inflight, Inflight],
) -> None:
    """A request that missed the store a moment before the leader stored its result
    finds the finished lease: it shares that result rather than running it again."""
    first, second = replicas
    key = uuid.uuid4().hex
    lease = await first.claim(key, "first-run")
    assert isinstance(lease, Lease)
    await first.finish(lease, Finished(RESULT, kept=True))
    assert await second.claim(key, "second-run") == Finished(RESULT, kept=True)


async def test_a_held_lease_outlives_its_length_until_finished(nats_url: str) -> None:
    """Renewed every third of its length while held: a 1 s lease held for 3 s still
    keeps the follower waiting, and the follower gets the outcome."""
    key = uuid.uuid4().hex
    async with inflight_on(nats_url, 1) as leader, inflight_on(nats_url, 1) as follower:
        lease = await leader.claim(key, "leader-run")
        assert isinstance(lease, Lease)
        waiting = asyncio.ensure_future(follower.wait(key))
        async with HeldLease(leader, lease) as held:
            await asyncio.sleep(3)
            assert not waiting.done(), "the lease expired while its run went on"
            assert await follower.claim(key, "follower-run") is None
        await leader.finish(held.lease, Finished(RESULT, kept=True))
        assert await waiting == Finished(RESULT, kept=True)


async def lease_held(kv: KeyValue, key: str) -> bool:
    with contextlib.suppress(nats.js.errors.KeyNotFoundError):
        return isinstance(decode((await kv.get(key)).value), Abandoned)  # running, naming a run
    return False


async def test_the_lease_goes_out_with_the_lookup_and_a_hit_lets_it_go(nats_url: str) -> None:
    """A miss needs the key's lease as well as the lookup: the claim is sent alongside
    it, so both cost one round trip. When the lookup finds the result the lease is not
    needed, and is ended (replicas waiting on it look the result up)."""
    nc = await nats.connect(nats_url)
    try:
        settings = Settings()
        store = ResultStore(nc.jetstream(), settings.cache_ttl_seconds, 64 * 1024 * 1024)
        inflight = Inflight(nc.jetstream(), 60, 64 * 1024 * 1024, nc.max_payload - 4096)
        assert await store.open() and await inflight.open()
        cache = Cache(settings, nc, store, inflight)
        leases = await nc.jetstream().key_value(INFLIGHT_BUCKET)
        key = uuid.uuid4().hex
        await store.put(key, pack(RESULT))
        held_during_lookup: list[bool] = []
        looked_up = store.get

        async def lookup_answered_once_the_lease_shows(key: str) -> bytes | None:
            for _ in range(50):  # up to 5 s
                if await lease_held(leases, key):
                    break
                await asyncio.sleep(0.1)
            held_during_lookup.append(await lease_held(leases, key))
            return await looked_up(key)

        store.get = lookup_answered_once_the_lease_shows  # type: ignore[method-assign]
        request = ExecuteRequest(language="python", code="print('hi')", execution_id="asker")
        call = micro.Call({}, "request", MSGPACK)
        result = await cache._cached(key, request, call, compiled=False)
        assert result.stdout == "hi\n" and result.execution_id == "asker"
        assert held_during_lookup == [True], "the lease was claimed only after the lookup"
        for _ in range(50):
            if not await lease_held(leases, key):
                break
            await asyncio.sleep(0.1)
        assert not await lease_held(leases, key), "a hit kept the lease it did not need"
        assert isinstance(await inflight.claim(key, "next-run"), Lease)
    finally:
        await nc.close()
