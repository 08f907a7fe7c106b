"""NATS helpers shared by every service and the client.

- `connect`: a connection that reconnects forever.
- `Endpoint` / `start_micro_service`: a NATS micro service whose endpoints are plain
  async functions `Call -> pydantic model`; decoding, error replies, request ids and
  concurrency are handled here once.
- `request`: a request to another service, carrying the request id, that turns error
  replies, timeouts and missing responders into `DcodexError`.
"""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any

import nats
import nats.errors
import structlog
from nats.aio.client import Client as NATS
from nats.micro import add_service
from nats.micro.request import Request as MicroRequest
from nats.micro.service import EndpointStats, Service
from pydantic import BaseModel, ValidationError

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
    UNAVAILABLE,
    DcodexError,
    from_validation_error,
)

log = structlog.get_logger("dcodex.bus")


def new_id() -> str:
    return uuid.uuid4().hex


async def connect(
    url: str, name: str, connect_timeout: float = 5.0, log_events: bool = True
) -> NATS:
    """Connect, then reconnect forever: a service outlives restarts of its NATS server.

    With unlimited reconnects nats-py also retries the first connection forever, so
    that one is bounded here: after `connect_timeout` seconds it is a 503.
    `log_events=False` (the client library) keeps connection events out of the logs.
    """
    quiet = not log_events
    try:
        return await asyncio.wait_for(
            nats.connect(
                url,
                name=name,
                connect_timeout=2,
                max_reconnect_attempts=-1,
                reconnect_time_wait=0.5,
                allow_reconnect=True,
                error_cb=_ignore_error if quiet else _on_error,
                disconnected_cb=None if quiet else _on_disconnected,
                reconnected_cb=None if quiet else _on_reconnected,
            ),
            timeout=connect_timeout,
        )
    except (OSError, nats.errors.Error, TimeoutError) as exc:
        raise DcodexError(UNAVAILABLE, f"no NATS server reachable at {url}") from exc


async def _ignore_error(exc: Exception) -> None:
    pass


async def _on_error(exc: Exception) -> None:
    log.debug("nats_error", error=repr(exc))


async def _on_disconnected() -> None:
    log.debug("nats_disconnected")  # also on every normal close


async def _on_reconnected() -> None:
    log.warning("nats_reconnected")


@dataclass(frozen=True)
class Call:
    """One decoded request as an endpoint handler sees it."""

    payload: dict[str, Any]
    request_id: str
    encoding: Encoding
    # The cache's key for this request, when the cache forwarded it (DESIGN §10).
    cache_key: str | None = None


Handler = Callable[[Call], Awaitable[BaseModel]]


@dataclass(frozen=True)
class Endpoint:
    name: str
    subject: str
    handler: Handler


@dataclass
class RunningService:
    """A registered micro service and the requests it is still answering."""

    micro: Service
    in_flight: set[asyncio.Task[None]] = field(default_factory=set)

    async def stop(self, grace_seconds: float = 10.0) -> None:
        """Stop taking requests, then let those under way finish (or cancel them)."""
        await self.micro.stop()
        if self.in_flight:
            _, pending = await asyncio.wait(self.in_flight, timeout=grace_seconds)
            for task in pending:
                task.cancel()
            await asyncio.gather(*pending, return_exceptions=True)


async def start_micro_service(
    nc: NATS,
    *,
    name: str,
    version: str,
    description: str,
    endpoints: list[Endpoint],
    metadata: dict[str, str] | None = None,
    stats_handler: Callable[[EndpointStats], Any] | None = None,
) -> RunningService:
    """`stats_handler` gives each endpoint's `data` in the service's `$SRV.STATS` answer."""
    micro = await add_service(
        nc,
        name=name,
        version=version,
        description=description,
        metadata=metadata or {},
        stats_handler=stats_handler,
    )
    running = RunningService(micro)
    for endpoint in endpoints:
        await micro.add_endpoint(
            name=endpoint.name,
            subject=endpoint.subject,
            handler=_spawning(endpoint.handler, name, running.in_flight),
        )
    return running


def _spawning(
    handler: Handler, service: str, in_flight: set[asyncio.Task[None]]
) -> Callable[[MicroRequest], Awaitable[None]]:
    # nats-py delivers a subscription's messages one at a time; answering each in its
    # own task is what lets one runner serve many requests at once.
    async def on_request(request: MicroRequest) -> None:
        task = asyncio.create_task(_answer(request, handler, service))
        in_flight.add(task)
        task.add_done_callback(in_flight.discard)

    return on_request


async def _answer(request: MicroRequest, handler: Handler, service: str) -> None:
    headers = request.headers or {}
    request_id = headers.get(REQUEST_ID_HEADER) or new_id()
    encoding = encoding_of(headers)
    reply_headers = {REQUEST_ID_HEADER: request_id, CONTENT_TYPE_HEADER: encoding}
    with structlog.contextvars.bound_contextvars(request_id=request_id, service=service):
        try:
            payload = decode(request.data, encoding) if request.data else {}
            call = Call(payload, request_id, encoding, headers.get(CACHE_KEY_HEADER))
            body = encode(await handler(call), encoding)
        except Exception as exc:
            error = as_dcodex_error(exc)
            if error.code >= INTERNAL:
                log.error("request_failed", code=error.code, error=error.message, exc_info=exc)
            else:
                log.info("request_rejected", code=error.code, error=error.message)
            body = encode(error.to_body(), encoding)
            reply_headers |= error.to_headers()
        await _respond(request, body, reply_headers)


async def _respond(request: MicroRequest, body: bytes, headers: dict[str, str]) -> None:
    """Send the reply; one too large for the server still gets a (small) error reply."""
    if not request._msg.reply:
        return  # published without a reply subject: nobody to answer
    try:
        await request.respond(body, headers=headers)
    except nats.errors.MaxPayloadError:
        error = DcodexError(
            INTERNAL,
            f"the reply ({len(body)} bytes) is larger than the NATS server's max payload;"
            " ask for a smaller limits.output_bytes",
        )
        log.error("reply_too_large", size=len(body))
        await request.respond(
            encode(error.to_body(), encoding_of(headers)), {**headers, **error.to_headers()}
        )


def as_dcodex_error(exc: BaseException) -> DcodexError:
    if isinstance(exc, DcodexError):
        return exc
    if isinstance(exc, ValidationError):
        return from_validation_error(exc)
    return DcodexError(INTERNAL, f"internal error: {type(exc).__name__}: {exc}")


async def request(
    nc: NATS,
    subject: str,
    payload: BaseModel | dict[str, Any],
    *,
    request_id: str,
    timeout: float,
    encoding: Encoding = JSON,
    cache_key: str | None = None,
) -> dict[str, Any]:
    """Ask `subject`, return the decoded reply; error replies raise `DcodexError`."""
    headers = {REQUEST_ID_HEADER: request_id, CONTENT_TYPE_HEADER: encoding}
    if cache_key is not None:
        headers[CACHE_KEY_HEADER] = cache_key
    try:
        msg = await nc.request(subject, encode(payload, encoding), timeout=timeout, headers=headers)
    except nats.errors.NoRespondersError as exc:
        raise DcodexError(UNAVAILABLE, f"no service answers on {subject}") from exc
    except (nats.errors.TimeoutError, TimeoutError) as exc:
        raise DcodexError(TIMEOUT, f"{subject} did not answer within {timeout:g} s") from exc
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
