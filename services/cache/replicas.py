"""The counts of every cache replica, gathered over the NATS Services API.

Each replica answers `$SRV.STATS.dcodex-cache` with its own counts as the `data` of
its `execute` endpoint. Replicas have no list of each other, so the gatherer takes the
answers that arrive until none has come for `QUIET_S`. Only replicas serving the
same `execute` subject count: caches under another subject prefix on the same NATS
server are other systems.
"""

from __future__ import annotations

import asyncio
import collections
import json
from typing import Any

import nats.errors
from nats.aio.client import Client as NATS

QUIET_S = 0.25  # replicas on one cluster answer within milliseconds
LONGEST_S = 2.0


async def gather_counts(nc: NATS, service: str, execute_subject: str) -> list[dict[str, int]]:
    """The counts each replica of `service` serving `execute_subject` reports."""
    answers = await gather(nc, f"$SRV.STATS.{service}")
    return [c for c in (_counts_of(data, execute_subject) for data in answers) if c is not None]


async def gather(
    nc: NATS,
    subject: str,
    payload: bytes = b"",
    *,
    headers: dict[str, str] | None = None,
    expected: int | None = None,
) -> list[bytes]:
    """The answers to one request every replica hears: until `expected` have come, or
    none has come for `QUIET_S` (and at most for `LONGEST_S`)."""
    inbox = nc.new_inbox()
    subscription = await nc.subscribe(inbox)
    found: list[bytes] = []
    try:
        await nc.publish(subject, payload, reply=inbox, headers=headers)
        deadline = asyncio.get_running_loop().time() + LONGEST_S
        while (left := deadline - asyncio.get_running_loop().time()) > 0:
            quiet = left if expected is not None else min(QUIET_S, left)
            try:
                msg = await subscription.next_msg(timeout=quiet)
            except nats.errors.TimeoutError:
                break
            if msg.data:  # not an empty "no responders" status
                found.append(msg.data)
            if expected is not None and len(found) >= expected:
                break
    finally:
        await subscription.unsubscribe()
    return found


def _counts_of(data: bytes, execute_subject: str) -> dict[str, int] | None:
    try:
        stats: Any = json.loads(data)
        endpoints = stats["endpoints"]
    except (ValueError, TypeError, KeyError):
        return None  # an empty "no responders" status, or not a micro STATS answer
    for endpoint in endpoints or ():
        if endpoint.get("subject") == execute_subject and isinstance(endpoint.get("data"), dict):
            return {str(k): int(v) for k, v in endpoint["data"].items()}
    return None


def summed(replicas: list[dict[str, int]]) -> collections.Counter[str]:
    total: collections.Counter[str] = collections.Counter()
    for counts in replicas:
        total.update(counts)
    return total
