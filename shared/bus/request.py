"""Asking another party on the bus: one request, its reply or a `DcodexError`.

Used by the services (the cache asks the runner, the runner the compiler) and by the
client alike; error replies, timeouts and missing responders all become `DcodexError`.
"""

from __future__ import annotations

import os
import time
from collections.abc import Callable
from typing import Any

import nats.errors
from nats.aio.client import Client as NATS
from pydantic import BaseModel

from dcodex.shared.bus.connect import refusals
from dcodex.shared.codec import (
    CACHE_KEY_HEADER,
    CONTENT_TYPE_HEADER,
    JSON,
    REQUEST_ID_HEADER,
    Encoding,
    decode,
    encode,
    encoding_of,
)
from dcodex.shared.errors import (
    ERROR_CODE_HEADER,
    INTERNAL,
    TIMEOUT,
    TOO_LARGE,
    UNAVAILABLE,
    DcodexError,
)


def new_id() -> str:
    """128 random bits as 32 hex digits (a uuid4's form, at a fifth of its cost)."""
    return os.urandom(16).hex()


class NoResponders(DcodexError):
    """Nothing subscribes to the subject: the service behind it is down."""


class RequestTimedOut(DcodexError):
    """The service behind the subject did not answer in time."""


# Told of every request to another service: subject, outcome ("ok", "error" for an
# error reply, "timeout", "no_responders") and the seconds it took.
DownstreamObserver = Callable[[str, str, float], None]


async def request(
    nc: NATS,
    subject: str,
    payload: BaseModel | dict[str, Any],
    *,
    request_id: str,
    timeout: float,
    encoding: Encoding = JSON,
    cache_key: str | None = None,
    observe: DownstreamObserver | None = None,
) -> dict[str, Any]:
    """Ask `subject`, return the decoded reply; error replies raise `DcodexError`."""
    started = time.perf_counter()
    outcome = "error"
    try:
        reply = await _request(nc, subject, payload, request_id, timeout, encoding, cache_key)
        outcome = "ok"
        return reply
    except NoResponders:
        outcome = "no_responders"
        raise
    except RequestTimedOut:
        outcome = "timeout"
        raise
    finally:
        if observe is not None:
            observe(subject, outcome, time.perf_counter() - started)


async def _request(
    nc: NATS,
    subject: str,
    payload: BaseModel | dict[str, Any],
    request_id: str,
    timeout: float,
    encoding: Encoding,
    cache_key: str | None,
) -> dict[str, Any]:
    headers = {REQUEST_ID_HEADER: request_id, CONTENT_TYPE_HEADER: encoding}
    if cache_key is not None:
        headers[CACHE_KEY_HEADER] = cache_key
    try:
        msg = await nc.request(subject, encode(payload, encoding), timeout=timeout, headers=headers)
    except nats.errors.NoRespondersError as exc:
        raise NoResponders(UNAVAILABLE, f"no service answers on {subject}") from exc
    except nats.errors.MaxPayloadError as exc:
        raise DcodexError(
            TOO_LARGE, f"the request is larger than the NATS server's max payload ({exc})"
        ) from exc
    except (nats.errors.TimeoutError, TimeoutError) as exc:
        if refusal := _refusal(nc, subject):
            raise DcodexError(UNAVAILABLE, refusal) from exc
        raise RequestTimedOut(TIMEOUT, f"{subject} did not answer within {timeout:g} s") from exc
    reply_encoding = encoding_of(msg.headers)
    if msg.headers and ERROR_CODE_HEADER in msg.headers:
        header = msg.headers[ERROR_CODE_HEADER]
        code = int(header) if header.isdigit() else INTERNAL
        try:
            body: Any = decode(msg.data, reply_encoding)
        except DcodexError:
            body = None
        raise DcodexError.from_body(body, code, msg.headers.get("Nats-Service-Error", "error"))
    return decode(msg.data, reply_encoding)


def _refusal(nc: NATS, subject: str) -> str | None:
    """Why a request to `subject` got no answer, when the server refused it: the
    publish itself, or the subscription to the reply inbox (docs/tenancy.md)."""
    for refused in reversed(refusals(nc)):
        if (
            f'"{subject.lower()}"' in refused.lower()
            or 'subscription to "_inbox' in refused.lower()
        ):
            return (
                f"the NATS server refused this login a request to {subject} ({refused.strip()});"
                " a tenant's login needs its tenant (--tenant, DCODEX_NATS_TENANT)"
            )
    return None
