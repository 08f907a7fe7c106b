"""Asking for a run and watching that someone still has it: seconds, not minutes.

A plain request waits its whole timeout when its answer can never come: the party
running it died (kill -9), or its reply was published while our connection was down
(a nats-server restart) and nobody was subscribed to receive it. So while the request
is out, every `HEARTBEAT_S` we ask the status subject (heard by every instance; the
one that has the execution id answers, the others stay silent) what became of it:

- "running": someone has it; keep waiting (up to the request's own timeout).
- "finished": its result, fetched again — the reply that was lost.
- silence `MISSES` times in a row while we are connected: nobody has it any more,
  so it can never be answered: a 503 saying so, a few seconds after the fact.
"""

from __future__ import annotations

import asyncio
import contextlib
from typing import Any

import nats.errors
from nats.aio.client import Client as NATS
from pydantic import BaseModel, ValidationError

from dcodex.shared.bus.request import DownstreamObserver, request
from dcodex.shared.codec import CONTENT_TYPE_HEADER, JSON, REQUEST_ID_HEADER, Encoding, decode
from dcodex.shared.codec import encode as encode_body
from dcodex.shared.contract import RunStatus, RunStatusRequest
from dcodex.shared.errors import UNAVAILABLE, DcodexError

HEARTBEAT_S = 1.0  # how often a run under way is looked after
ANSWER_S = 1.0  # how long the one that has it may take to say so (milliseconds, usually)
MISSES = 3  # silences in a row (while connected) that mean nobody has the run


class RunLost(DcodexError):
    """Nobody has the execution any more: its answer will never come."""


async def watched_request(
    nc: NATS,
    subject: str,
    status_subject: str,
    payload: BaseModel | dict[str, Any],
    *,
    execution_id: str,
    request_id: str,
    timeout: float,
    encoding: Encoding = JSON,
    cache_key: str | None = None,
    observe: DownstreamObserver | None = None,
    heartbeat_s: float = HEARTBEAT_S,
    tenant: str | None = None,
) -> dict[str, Any]:
    """`request(...)`, answered by the status subject when the reply is lost, and
    failed with `RunLost` once nobody has `execution_id` any more."""
    # The request is awaited in the caller's own task (a task of its own would cost two
    # more turns of the loop on every request); a watch that ends first cancels it.
    caller = asyncio.current_task()
    if caller is None:
        raise RuntimeError("watched_request runs in a task")
    watching: asyncio.Future[dict[str, Any]] | None = None
    asking = True  # the caller still waits for the reply
    by_watch = False  # the watch answered and cancelled that wait: one cancellation to undo
    # Cancellations of the caller from here on are counted above this (one left over
    # from before, caught and not undone by the caller, is not ours to act on).
    cancelled_before = caller.cancelling()

    def watch() -> None:
        nonlocal watching
        watching = asyncio.ensure_future(
            _watch(nc, subject, status_subject, execution_id, request_id, heartbeat_s, tenant)
        )
        watching.add_done_callback(answered_by_watch)

    def answered_by_watch(ended: asyncio.Future[dict[str, Any]]) -> None:
        nonlocal by_watch
        # The watch's answer ends the request, unless the reply came first (it is the
        # one the runner meant to send).
        if asking and not ended.cancelled():
            caller.cancel()
            by_watch = True

    # Most answers come within the first heartbeat: watching starts after it. (A timer,
    # not `asyncio.wait`: no waiter to wake on the common path.)
    timer = asyncio.get_running_loop().call_later(heartbeat_s, watch)
    try:
        reply = await request(
            nc,
            subject,
            payload,
            request_id=request_id,
            timeout=timeout,
            encoding=encoding,
            cache_key=cache_key,
            observe=observe,
        )
    except asyncio.CancelledError:
        ended = watching
        if not by_watch or ended is None:
            raise  # the caller was cancelled, not the request by the watch
        by_watch = False
        if caller.uncancel() > cancelled_before:
            raise  # the caller was cancelled too: that wins
        return ended.result()
    finally:
        asking = False
        if by_watch:  # the watch's cancellation came, yet a reply or an error won
            by_watch = False
            caller.uncancel()
        timer.cancel()
        # A watch still under way is cancelled and waited for (usually there is none);
        # one that ended unheard has its outcome taken, so asyncio does not log it.
        if watching is not None and not watching.done():
            watching.cancel()
            await asyncio.gather(watching, return_exceptions=True)
        elif watching is not None and not watching.cancelled():
            watching.exception()
    # nats-py's wait (`wait_for`) returns a reply come in the same turn as a
    # cancellation instead of raising it: the caller's cancellation wins.
    if caller.cancelling() > cancelled_before:
        raise asyncio.CancelledError
    return reply


def _cancelling() -> int:
    """How many cancellations of the current task are pending."""
    current = asyncio.current_task()
    return current.cancelling() if current is not None else 0


async def followed(
    nc: NATS,
    status_subject: str,
    execution_id: str,
    *,
    request_id: str,
    timeout: float,
    heartbeat_s: float = HEARTBEAT_S,
    tenant: str | None = None,
) -> dict[str, Any] | None:
    """The result of an execution someone else asked for (and stopped waiting for),
    watched on the status subject until it finishes; None when nobody has it, or it
    does not finish within `timeout`."""
    try:
        return await asyncio.wait_for(
            _watch(nc, "", status_subject, execution_id, request_id, heartbeat_s, tenant),
            timeout,
        )
    except (RunLost, TimeoutError):
        return None


async def _watch(
    nc: NATS,
    subject: str,
    status_subject: str,
    execution_id: str,
    request_id: str,
    heartbeat_s: float,
    tenant: str | None,
) -> dict[str, Any]:
    """Asks at once, then every `heartbeat_s`: the result once finished, or `RunLost`."""
    misses = 0
    while True:
        if not nc.is_connected:
            misses = 0  # we cannot hear anyone now; the count starts again once back
        else:
            status = await ask_status(
                nc, status_subject, execution_id, request_id, min(heartbeat_s, ANSWER_S), tenant
            )
            if _cancelling():  # nats-py's wait gave the answer that came with our cancellation
                raise asyncio.CancelledError
            if status is None:
                misses += 1
                if misses >= MISSES:
                    raise RunLost(
                        UNAVAILABLE,
                        f"execution {execution_id} was lost: whoever ran it on {subject} "
                        "stopped before answering (the program may have run); nothing "
                        "answers for it now",
                    )
            else:
                misses = 0
                if status.state == "finished" and status.result is not None:
                    return status.result.model_dump(mode="json")
        await asyncio.sleep(heartbeat_s)


async def ask_status(
    nc: NATS,
    status_subject: str,
    execution_id: str,
    request_id: str,
    timeout: float,
    tenant: str | None = None,
) -> RunStatus | None:
    """What the instance that has `execution_id` says of it; None when nobody answers."""
    headers = {REQUEST_ID_HEADER: request_id, CONTENT_TYPE_HEADER: JSON}
    body = encode_body(RunStatusRequest(execution_id=execution_id, tenant=tenant), JSON)
    try:
        msg = await nc.request(status_subject, body, timeout=timeout, headers=headers)
    except (nats.errors.NoRespondersError, nats.errors.TimeoutError, TimeoutError):
        return None
    except nats.errors.Error:
        return None  # connection trouble: counted as silence, bounded by MISSES
    with contextlib.suppress(DcodexError, ValidationError):
        return RunStatus.model_validate(decode(msg.data, JSON))
    return None
