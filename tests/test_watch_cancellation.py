"""A watched request's cancellation contract, in the turns of the event loop where a
real connection cannot be made to land (tests/test_watch.py has the bus cases).

The request here waits as nats-py's does (`asyncio.wait_for` on the reply's future),
so that a reply and a cancellation can arrive in the same turn of the loop."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Awaitable, Callable
from types import SimpleNamespace
from typing import Any

import pytest

from dcodex.shared.bus import watch
from dcodex.shared.bus.watch import watched_request
from dcodex.shared.contract import RunStatus


class Replies:
    """Stands in for `request`: each call waits on a future the test answers."""

    def __init__(self) -> None:
        self.pending: list[asyncio.Future[dict[str, Any]]] = []
        self.asked = asyncio.Event()

    async def request(self, *_args: object, **_kwargs: object) -> dict[str, Any]:
        reply = asyncio.get_running_loop().create_future()
        self.pending.append(reply)
        self.asked.set()
        return await asyncio.wait_for(reply, 60)


@pytest.fixture
def replies(monkeypatch: pytest.MonkeyPatch) -> Replies:
    stand_in = Replies()
    monkeypatch.setattr(watch, "request", stand_in.request)
    return stand_in


async def ask(heartbeat_s: float = 60.0) -> dict[str, Any]:
    # No connection: the stand-in needs none.
    return await watched_request(
        None,  # type: ignore[arg-type]
        "run",
        "status",
        {},
        execution_id="e",
        request_id="r",
        timeout=60,
        heartbeat_s=heartbeat_s,
    )


async def test_a_caller_cancelled_as_its_reply_comes_is_cancelled(replies: Replies) -> None:
    """The reply lands in the same turn as the caller's cancellation (a service
    stopping, a client's own timeout): the caller gets its cancellation, not the
    reply (the request's own wait would have handed the reply back)."""
    caller = asyncio.create_task(ask())
    await replies.asked.wait()
    replies.pending[0].set_result({"ok": 1})
    caller.cancel()
    with pytest.raises(asyncio.CancelledError):
        await caller


async def test_the_watchs_answer_is_returned_despite_an_older_cancellation(
    replies: Replies, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A caller that caught a cancellation earlier (without undoing it) still gets the
    answer the status watch found: only cancellations during the request count."""

    async def finished(*_args: object) -> dict[str, Any]:
        return {"from": "status"}

    monkeypatch.setattr(watch, "_watch", finished)

    async def caller() -> dict[str, Any]:
        task = asyncio.current_task()
        assert task is not None
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await asyncio.sleep(0)  # caught and carried on, its count left at 1
        return await ask(heartbeat_s=0.01)  # in this task: its count is 1

    assert await asyncio.create_task(caller()) == {"from": "status"}
    assert replies.pending[0].cancelled(), "the request went on after the watch's answer"


def watch_that_answers(also: Callable[[], object]) -> Callable[..., Awaitable[dict[str, Any]]]:
    """A status watch that answers after a moment, doing `also` in the same turn."""

    async def finished(*_args: object) -> dict[str, Any]:
        await asyncio.sleep(0.01)
        also()
        return {"from": "status"}

    return finished


async def test_a_timeout_of_the_caller_in_the_watchs_turn_is_still_a_timeout(
    replies: Replies, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The caller's `asyncio.timeout` runs out in the turn the watch answers: the
    caller sees its TimeoutError, and its task no cancellation of the watch's."""
    timeouts: list[asyncio.Timeout] = []
    expire = lambda: timeouts[0].reschedule(asyncio.get_running_loop().time())  # noqa: E731
    monkeypatch.setattr(watch, "_watch", watch_that_answers(expire))

    async def caller() -> int:
        task = asyncio.current_task()
        assert task is not None
        with pytest.raises(TimeoutError):
            async with asyncio.timeout(None) as timeout:
                timeouts.append(timeout)
                await ask(heartbeat_s=0.0)
        return task.cancelling()

    assert await asyncio.create_task(caller()) == 0


async def test_an_error_reply_in_the_watchs_turn_leaves_no_cancellation_behind(
    replies: Replies, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The request fails in the turn the watch answers: the failure is the caller's, and
    a timeout of the caller's later on is still a TimeoutError, not a cancellation."""
    fail = lambda: replies.pending[0].set_exception(ValueError("refused"))  # noqa: E731
    monkeypatch.setattr(watch, "_watch", watch_that_answers(fail))

    async def caller() -> str:
        try:
            async with asyncio.timeout(0.2):
                try:
                    await ask(heartbeat_s=0.0)
                except ValueError:
                    await asyncio.sleep(1)  # say, a pause before trying again
        except TimeoutError:
            return "timed out"
        return "slept"

    assert await asyncio.create_task(caller()) == "timed out"


async def test_a_watch_cancelled_as_its_status_answer_comes_stops(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """The watch is cancelled (its request was answered) in the turn its own status
    question is answered: it stops there, not a heartbeat later."""
    answers: list[asyncio.Future[RunStatus | None]] = []
    asked = asyncio.Event()

    async def status_question(*_args: object, **_kwargs: object) -> RunStatus | None:
        answer: asyncio.Future[RunStatus | None] = asyncio.get_running_loop().create_future()
        answers.append(answer)
        asked.set()
        return await asyncio.wait_for(answer, 60)  # as nats-py's request waits

    monkeypatch.setattr(watch, "ask_status", status_question)
    connected = SimpleNamespace(is_connected=True)
    watching = asyncio.create_task(
        watch._watch(connected, "run", "status", "e", "r", 60.0, None)  # type: ignore[arg-type]
    )
    await asked.wait()
    answers[0].set_result(RunStatus(execution_id="e", state="running"))
    watching.cancel()
    with pytest.raises(asyncio.CancelledError):
        await asyncio.wait_for(watching, 5)
