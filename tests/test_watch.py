"""A watched request (shared/bus/watch.py) on a real nats-server: a reply that never
comes is fetched by execution id; a run nobody has any more fails in seconds."""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator

import nats
import pytest
from nats.aio.client import Client as NATS
from nats.aio.msg import Msg

from dcodex.shared.bus.watch import RunLost, watched_request
from dcodex.shared.codec import encode
from dcodex.shared.contract import ExecutionResult, RunStatus
from dcodex.shared.errors import UNAVAILABLE

pytestmark = pytest.mark.bus

RESULT = ExecutionResult(execution_id="e1", status="ok", language="python", stdout="42\n")


@pytest.fixture
async def nc(nats_url: str) -> AsyncIterator[NATS]:
    connection = await nats.connect(nats_url)
    yield connection
    await connection.close()


async def test_a_lost_reply_is_fetched_by_execution_id(nc: NATS) -> None:
    """The runner ran it but its reply went nowhere (as in a NATS restart): the
    status subject has the result, and the request returns it within a heartbeat."""
    swallowed: list[Msg] = []

    async def run(msg: Msg) -> None:
        swallowed.append(msg)  # never answered

    async def status(msg: Msg) -> None:
        await msg.respond(encode(RunStatus(execution_id="e1", state="finished", result=RESULT)))

    subscriptions = [await nc.subscribe("t1.run", cb=run), await nc.subscribe("t1.s", cb=status)]
    started = time.monotonic()
    reply = await watched_request(
        nc, "t1.run", "t1.s", {}, execution_id="e1", request_id="r", timeout=60, heartbeat_s=0.2
    )
    assert ExecutionResult.model_validate(reply) == RESULT
    assert len(swallowed) == 1 and time.monotonic() - started < 5
    for subscription in subscriptions:
        await subscription.unsubscribe()


async def test_a_run_nobody_has_fails_within_seconds(nc: NATS) -> None:
    """Received, then its runner died: nobody answers the status; 503, not 60 s."""

    async def run(msg: Msg) -> None:
        pass

    async def status(msg: Msg) -> None:
        pass  # nobody knows the id: silence

    subscriptions = [await nc.subscribe("t2.run", cb=run), await nc.subscribe("t2.s", cb=status)]
    started = time.monotonic()
    with pytest.raises(RunLost) as lost:
        await watched_request(
            nc, "t2.run", "t2.s", {}, execution_id="e2", request_id="r", timeout=60, heartbeat_s=0.2
        )
    assert lost.value.code == UNAVAILABLE and "e2" in lost.value.message
    assert time.monotonic() - started < 5
    for subscription in subscriptions:
        await subscription.unsubscribe()


async def test_a_long_run_someone_has_is_waited_for(nc: NATS) -> None:
    """Running longer than many heartbeats: the status says so, the reply comes."""

    async def run(msg: Msg) -> None:
        await asyncio.sleep(1.5)
        await msg.respond(encode(RESULT))

    async def status(msg: Msg) -> None:
        await msg.respond(encode(RunStatus(execution_id="e3", state="running")))

    subscriptions = [await nc.subscribe("t3.run", cb=run), await nc.subscribe("t3.s", cb=status)]
    reply = await watched_request(
        nc, "t3.run", "t3.s", {}, execution_id="e3", request_id="r", timeout=60, heartbeat_s=0.2
    )
    assert ExecutionResult.model_validate(reply) == RESULT
    for subscription in subscriptions:
        await subscription.unsubscribe()


@pytest.mark.parametrize("watching", [False, True], ids=["before-the-watch", "while-watching"])
async def test_cancelling_the_caller_cancels_the_request_and_its_watch(
    nc: NATS, watching: bool
) -> None:
    """A caller that gives up (a client's own timeout, a service stopping) gets its
    cancellation, not a result, and leaves no request or status watch behind."""
    statuses: list[Msg] = []

    async def run(msg: Msg) -> None:
        pass  # a run that takes long

    async def status(msg: Msg) -> None:
        statuses.append(msg)
        await msg.respond(encode(RunStatus(execution_id="e4", state="running")))

    subscriptions = [await nc.subscribe("t4.run", cb=run), await nc.subscribe("t4.s", cb=status)]
    before = asyncio.all_tasks()
    caller = asyncio.create_task(
        watched_request(
            nc, "t4.run", "t4.s", {}, execution_id="e4", request_id="r", timeout=60, heartbeat_s=0.2
        )
    )
    await asyncio.sleep(0.5 if watching else 0.05)
    assert bool(statuses) == watching
    caller.cancel()
    with pytest.raises(asyncio.CancelledError):
        await caller
    ours = {"request", "_watch"}  # not nats-py's own (its reply inbox's task starts here)
    left = [task for task in asyncio.all_tasks() - before if _name(task) in ours]
    assert not [task for task in left if not task.done()], left
    asked = len(statuses)
    await asyncio.sleep(0.5)
    assert len(statuses) == asked, "the status watch went on after the caller gave up"
    for subscription in subscriptions:
        await subscription.unsubscribe()


def _name(task: asyncio.Task[object]) -> str:
    return getattr(task.get_coro(), "__qualname__", "")
