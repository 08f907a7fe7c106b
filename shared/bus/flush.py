"""Knowing the server has what we wrote (a subscription, a publish): a flush that
outlasts a reconnection.

nats-py forgets the flushes pending when its connection drops, so such a flush can only
time out; the subscriptions and buffered publishes go out again on the new connection,
and a flush sent after them confirms them.
"""

from __future__ import annotations

import time

import nats.errors
from nats.aio.client import Client as NATS

from dcodex.shared.errors import UNAVAILABLE, DcodexError

FLUSH_S = 2  # a flush answered later than this is waiting for a reconnection


async def flushed(nc: NATS, timeout: float, what: str) -> None:
    """Returns once the server has all written so far; a 503 naming `what` after `timeout`."""
    deadline = time.monotonic() + timeout
    while True:
        try:
            await nc.flush(timeout=FLUSH_S)
            return
        except nats.errors.FlushTimeoutError as exc:
            if time.monotonic() >= deadline:
                raise DcodexError(
                    UNAVAILABLE, f"NATS did not confirm {what} within {timeout:g} s; try again"
                ) from exc
