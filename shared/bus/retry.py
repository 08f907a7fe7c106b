"""Sending again what nobody received: the one retry that is always safe.

A request that found no responders (the service is restarting, or not there yet) was
received by nobody, so nothing ran; it is sent again after a pause (doubling) until the
deadline. Anything else (a reply, an error reply, a timeout, a lost run) may have been
received and is final here: whether it is safe to repeat is the caller's decision.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable
from typing import TypeVar

from dcodex.shared.bus.request import NoResponders

FIRST_RETRY_S = 0.1
LONGEST_RETRY_S = 2.0
T = TypeVar("T")


async def retry_unreceived(attempt: Callable[[float], Awaitable[T]], deadline: float) -> T:
    """`attempt(seconds left)`, again while nobody received it, until `deadline`
    (a `time.monotonic()` instant)."""
    pause = FIRST_RETRY_S
    while True:
        try:
            return await attempt(max(deadline - time.monotonic(), 0.001))
        except NoResponders:
            if time.monotonic() + pause >= deadline:
                raise
        await asyncio.sleep(pause)
        pause = min(pause * 2, LONGEST_RETRY_S)
