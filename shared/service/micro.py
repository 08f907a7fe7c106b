"""A DCodeX service on the bus: a NATS micro service of plain async endpoints.

`Endpoint` / `start_micro_service`: endpoints are async functions `Call -> pydantic
model`; decoding, error replies, request ids, logging and concurrency are handled here
once. An endpoint may also have a quick handler, a plain function that answers what it
can at once where the request arrives (the cache's hits from memory) and hands the rest
on to the async one. Connecting and asking other services live in `dcodex.shared.bus`.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any

import nats
import nats.errors
import structlog
from nats.aio.client import Client as NATS
from nats.aio.msg import Msg
from nats.micro.request import Request as MicroRequest
from nats.micro.service import DEFAULT_QUEUE_GROUP, EndpointStats, Service, ServiceConfig
from pydantic import BaseModel, ValidationError

from dcodex.shared.bus.request import new_id
from dcodex.shared.codec import (
    CACHE_KEY_HEADER,
    CONTENT_TYPE_HEADER,
    REQUEST_ID_HEADER,
    Encoding,
    decode,
    encode,
    encoding_of,
)
from dcodex.shared.errors import (
    INTERNAL,
    DcodexError,
    from_validation_error,
)
from dcodex.shared.logging import debug_enabled, request_summary
from dcodex.shared.subjects import Subject, inbox_prefix

log = structlog.get_logger("dcodex.bus")


@dataclass(frozen=True)
class Call:
    """One decoded request as an endpoint handler sees it."""

    payload: dict[str, Any]
    request_id: str
    encoding: Encoding
    # The cache's key for this request, when the cache forwarded it (docs/cache.md).
    cache_key: str | None = None
    # The tenant whose subject the request came on (docs/tenancy.md): the NATS server
    # let only that tenant publish there. None on the plain subjects.
    tenant: str | None = None
    # Work the handler leaves for after its reply is sent (the cache stores a result
    # there): off the requester's critical path, yet still part of the request, so a
    # stopping service finishes it (`RunningService.stop`) like any request under way.
    after_reply: list[Callable[[], Awaitable[None]]] = field(default_factory=list)
    # What the endpoint's quick handler worked out before it handed the call on.
    prepared: object = None


Handler = Callable[[Call], Awaitable[BaseModel]]
# Answers a request at once, without waiting on anything (say, a result in memory), or
# hands it on to the endpoint's handler: the same call, or one carrying what it worked
# out (`Call.prepared`). Run where the request arrives: no task, no turn of the loop.
QuickHandler = Callable[[Call], "BaseModel | Call"]


@dataclass(frozen=True)
class Endpoint:
    name: str
    subject: str
    handler: Handler
    # `subject` ends in `*`, the tenant's token: the handler's Call says which tenant.
    per_tenant: bool = False
    # The endpoint name metrics count its requests under (default `name`): a tenant's
    # requests count with the plain subject's, and no tenant becomes a label.
    counted_as: str | None = None
    # Every instance gets each request (a queue group of its own), not just one of them:
    # for questions only the instance that knows the answer replies to (NoReply elsewhere).
    broadcast: bool = False
    quick: QuickHandler | None = None


def endpoints_of(
    subject: Subject, on: str, handler: Handler, quick: QuickHandler | None = None
) -> list[Endpoint]:
    """The endpoint of `subject`, served on `on` (its prefixed subject), and its twin on
    `<on>.*` when the subject is also served per tenant (counted as the plain one)."""
    plain = Endpoint(subject.endpoint, on, handler, broadcast=subject.broadcast, quick=quick)
    if not subject.per_tenant:
        return [plain]
    tenant = Endpoint(
        subject.tenant_endpoint,
        f"{on}.*",
        handler,
        per_tenant=True,
        counted_as=subject.endpoint,
        broadcast=subject.broadcast,
        quick=quick,
    )
    return [plain, tenant]


class NoReply(Exception):
    """Raised by a handler that has nothing to say: no reply is sent at all."""


def reply_allowed(reply: str, prefix: str, tenant: str | None = None) -> bool:
    """Whether a service may answer on `reply`.

    A requester picks its reply subject freely, and a service may publish where its
    requester may not: its own subjects (`<prefix>.output...`) and JetStream's (`$KV`,
    `$O`, `$JS.API`: a reply there would write a cache entry or purge a bucket). So
    replies go only elsewhere, to inboxes; a tenant's, only to its own inbox or to
    the services' (`_INBOX.`, where the cache asks a runner; no tenant reads there)
    (docs/tenancy.md, reflected replies).
    """
    if tenant is not None:
        return reply.startswith((inbox_prefix(tenant) + ".", "_INBOX."))
    return bool(reply) and not reply.startswith("$") and not reply.startswith(prefix + ".")


class _GuardedService(Service):
    """nats.micro's service, whose `$SRV` answers obey `reply_allowed` too."""

    subject_prefix = "dcodex"

    async def _handle_ping_request(self, msg: Msg) -> None:
        if reply_allowed(msg.reply, self.subject_prefix):
            await super()._handle_ping_request(msg)

    async def _handle_info_request(self, msg: Msg) -> None:
        if reply_allowed(msg.reply, self.subject_prefix):
            await super()._handle_info_request(msg)

    async def _handle_stats_request(self, msg: Msg) -> None:
        if reply_allowed(msg.reply, self.subject_prefix):
            await super()._handle_stats_request(msg)


@dataclass
class EndpointCounts:
    """What `$SRV.STATS` reports of one endpoint, counted by us.

    nats.micro times its handler, but ours mostly hands the request to a task (so that
    requests run side by side) and answers errors as replies; its own figures would
    be the hand-over's time and 0 errors. These count the real work, and replace its
    figures.
    """

    requests: int = 0
    answered: int = 0
    errors: int = 0
    processing_ns: int = 0
    last_error: str | None = None

    def fill(self, stats: EndpointStats) -> None:
        stats.num_requests = self.requests
        stats.num_errors = self.errors
        stats.last_error = self.last_error
        stats.processing_time = self.processing_ns
        stats.average_processing_time = self.processing_ns // self.answered if self.answered else 0


# Told of every answered request: endpoint name, reply code (200 for a normal reply)
# and the seconds it took. Services feed their Prometheus metrics from it.
RequestObserver = Callable[[str, int, float], None]


@dataclass
class RunningService:
    """A registered micro service and the requests it is still answering."""

    micro: Service
    in_flight: set[asyncio.Task[None]] = field(default_factory=set)
    counts: dict[str, EndpointCounts] = field(default_factory=dict)

    @property
    def id(self) -> str:
        """This instance's micro id, as `$SRV.PING` shows it."""
        return self.micro.id

    @property
    def serving(self) -> bool:
        return not self.micro.stopped.is_set()

    async def stop(self, grace_seconds: float = 10.0) -> None:
        """Stop taking requests, then let those under way finish (or cancel them).

        The endpoints' subscriptions are drained, not dropped: nats.micro's own stop
        unsubscribes, which throws away the requests the server already delivered to us
        (a request arriving at the moment of SIGTERM would go unanswered). Draining
        tells the server to send no more, then hands us every message already sent.
        """
        await drain_endpoints(self.micro)
        if self.in_flight:
            _, pending = await asyncio.wait(self.in_flight, timeout=grace_seconds)
            for task in pending:
                task.cancel()
            await asyncio.gather(*pending, return_exceptions=True)
        # Broadcast endpoints (a run's status) answered while the runs finished.
        await self.micro.stop()


async def start_micro_service(
    nc: NATS,
    *,
    name: str,
    version: str,
    description: str,
    endpoints: list[Endpoint],
    metadata: dict[str, str] | None = None,
    stats_handler: Callable[[EndpointStats], Any] | None = None,
    observer: RequestObserver | None = None,
    subject_prefix: str = "dcodex",
) -> RunningService:
    """`stats_handler` gives each endpoint's `data` in the service's `$SRV.STATS` answer;
    no answer goes to a subject under `subject_prefix` or `$` (`reply_allowed`)."""
    counts = {endpoint.name: EndpointCounts() for endpoint in endpoints}

    def stats(endpoint: EndpointStats) -> Any:
        if endpoint.name in counts:
            counts[endpoint.name].fill(endpoint)
        return stats_handler(endpoint) if stats_handler else None

    config = ServiceConfig(
        name=name,
        version=version,
        description=description,
        metadata=metadata or {},
        stats_handler=stats,
    )
    micro = _GuardedService(nc, config)
    micro.subject_prefix = subject_prefix
    running = RunningService(micro, counts=counts)
    for endpoint in endpoints:
        answer = _Answerer(endpoint, name, running, observer, subject_prefix)
        await micro.add_endpoint(
            name=endpoint.name,
            subject=endpoint.subject,
            handler=answer.spawn,
            queue_group=f"{name}-{micro.id}" if endpoint.broadcast else None,
        )
    # `$SRV.PING` answers last: an instance that answers it serves all its endpoints.
    await micro.start()
    return running


async def drain_endpoints(service: Service) -> None:
    """Drain the subscription of every endpoint that takes work (not the broadcast ones,
    which go on answering until the work is done) and let nats.micro's stop skip them.

    nats.micro (2.x) has no drain of its own: this reaches into its endpoints, which
    is why it is one function, here.
    """
    working = [e for e in service._endpoints if e._queue_group == DEFAULT_QUEUE_GROUP]
    for endpoint in working:
        subscription = endpoint._subscription
        if subscription is None or service._client.is_closed:
            continue
        try:
            await subscription.drain()
        except nats.errors.Error as exc:  # closed or draining connection: nothing to save
            log.debug("endpoint_drain_failed", endpoint=endpoint._name, error=repr(exc))
    # Drained subscriptions are gone; the service's stop skips them.
    service._endpoints = [e for e in service._endpoints if e not in working]


@dataclass
class _Answering:
    """A request being answered: what its reply and its log line need."""

    request: MicroRequest
    started: int  # perf_counter_ns at its arrival
    request_id: str
    encoding: Encoding
    reply_headers: dict[str, str]
    summary: dict[str, Any] = field(default_factory=dict)  # its log line's fields

    @classmethod
    def of(cls, request: MicroRequest) -> _Answering:
        started = time.perf_counter_ns()
        headers = request.headers or {}
        request_id = headers.get(REQUEST_ID_HEADER) or new_id()
        encoding = encoding_of(headers)
        reply_headers = {REQUEST_ID_HEADER: request_id, CONTENT_TYPE_HEADER: encoding}
        return cls(request, started, request_id, encoding, reply_headers)


@dataclass(frozen=True)
class _Answerer:
    endpoint: Endpoint
    service: str
    running: RunningService
    observer: RequestObserver | None
    subject_prefix: str

    async def spawn(self, request: MicroRequest) -> None:
        reply = request._msg.reply
        if reply and not reply_allowed(reply, self.subject_prefix, self._tenant(request)):
            # Asking for a reflected reply (`reply_allowed`): nothing is run for it.
            log.info("request_dropped", endpoint=self.endpoint.name, reply=request._msg.reply)
            return
        self.running.counts[self.endpoint.name].requests += 1
        answering = _Answering.of(request)
        context = {
            "service": self.service,
            "instance": self.running.id,
            "request_id": answering.request_id,
        }
        with structlog.contextvars.bound_contextvars(**context), request_summary(answering.summary):
            if debug_enabled():
                log.debug("request_received", endpoint=self.endpoint.name, size=len(request.data))
            call: Call | None = None
            try:
                call = self._call(request, answering)
                outcome: BaseModel | Call | Exception = (
                    self.endpoint.quick(call) if self.endpoint.quick is not None else call
                )
            except Exception as exc:
                outcome = exc
            if not isinstance(outcome, Call):
                try:
                    await self.finish(answering, outcome, call)
                except Exception:  # the reply could not go (the connection closed): logged
                    log.exception("reply_failed", endpoint=self.endpoint.name)
                return
            # nats-py delivers a subscription's messages one at a time; answering each in
            # its own task (which inherits this context) is what lets one runner serve
            # many requests at once.
            task = asyncio.create_task(self.answer(answering, outcome))
            self.running.in_flight.add(task)
            task.add_done_callback(self.running.in_flight.discard)

    def _call(self, request: MicroRequest, answering: _Answering) -> Call:
        payload = decode(request.data, answering.encoding) if request.data else {}
        headers = request.headers or {}
        return Call(
            payload,
            answering.request_id,
            answering.encoding,
            headers.get(CACHE_KEY_HEADER),
            self._tenant(request),
        )

    async def answer(self, answering: _Answering, call: Call) -> None:
        try:
            outcome: BaseModel | Exception = await self.endpoint.handler(call)
        except Exception as exc:
            outcome = exc
        await self.finish(answering, outcome, call)

    async def finish(
        self, answering: _Answering, outcome: BaseModel | Exception, call: Call | None
    ) -> None:
        """Reply with `outcome` (an error's reply for an exception), log and count it,
        then run the handler's work left for after the reply."""
        if isinstance(outcome, NoReply):
            self.running.counts[self.endpoint.name].requests -= 1  # not ours to answer
            await _after_reply(call)
            return
        error: DcodexError | None = None
        failure: Exception | None = None
        reply_headers = answering.reply_headers
        if isinstance(outcome, Exception):
            failure = outcome
        else:
            try:
                body = encode(outcome, answering.encoding)
            except Exception as exc:
                failure = exc
        if failure is not None:
            error = as_dcodex_error(failure)
            body = encode(error.to_body(), answering.encoding)
            reply_headers = reply_headers | error.to_headers()
        error = await _respond(answering.request, body, reply_headers) or error
        elapsed_ns = time.perf_counter_ns() - answering.started
        self._record(error, elapsed_ns)
        if isinstance(outcome, BaseModel):  # the log line's, after the reply
            answering.summary |= _summary_of(outcome)
        answering.summary |= {
            "endpoint": self.endpoint.name,
            "duration_ms": round(elapsed_ns / 1e6, 3),
        }
        _log_request(answering.summary, error, failure)
        await _after_reply(call)

    def _tenant(self, request: MicroRequest) -> str | None:
        """The last token of a per-tenant subject: the server let only its tenant send."""
        return request.subject.rsplit(".", 1)[1] if self.endpoint.per_tenant else None

    def _record(self, error: DcodexError | None, elapsed_ns: int) -> None:
        counts = self.running.counts[self.endpoint.name]
        counts.answered += 1
        counts.processing_ns += elapsed_ns
        if error is not None:
            counts.errors += 1
            counts.last_error = f"{error.code}: {error.message}"
        if self.observer is not None:
            code = 200 if error is None else error.code
            self.observer(self.endpoint.counted_as or self.endpoint.name, code, elapsed_ns / 1e9)


async def _after_reply(call: Call | None) -> None:
    """The handler's work left for after the reply (whatever the reply was); a failure
    there is logged: the requester has its answer already."""
    for work in call.after_reply if call is not None else ():
        try:
            await work()
        except Exception:
            log.exception("after_reply_failed")


def _log_request(
    fields: dict[str, Any], error: DcodexError | None, failure: Exception | None
) -> None:
    """The one INFO line of a request; a failure of ours is an ERROR with its traceback."""
    if error is None:
        log.info("request", code=200, **fields)
    elif error.code >= INTERNAL:
        log.error("request", code=error.code, error=error.message, exc_info=failure, **fields)
    else:
        log.info("request", code=error.code, error=error.message, **fields)


# Reply fields worth a place in the request's log line, when the reply has them.
_SUMMARY_FIELDS = (
    "execution_id",
    "cache_key",
    "language",
    "status",
    "cache_hit",
    "cached",
    "compile_time_ms",
    "cpu_time_ms",
    "wall_time_ms",
)


def _summary_of(reply: BaseModel) -> dict[str, Any]:
    # From the fields themselves: `getattr` of a field a model lacks raises, at a cost.
    fields = reply.__dict__
    return {
        name: value
        for name in _SUMMARY_FIELDS
        if isinstance(value := fields.get(name), (str, int, float, bool))
    }


async def _respond(
    request: MicroRequest, body: bytes, headers: dict[str, str]
) -> DcodexError | None:
    """Send the reply; one too large for the server still gets a (small) error reply,
    which is returned."""
    if not request._msg.reply:
        return None  # published without a reply subject: nobody to answer
    try:
        await request.respond(body, headers=headers)
        # nats-py writes what is published from its flusher task: let it run now, so the
        # reply leaves before whatever this loop does next (a run's clean-up, a sandbox
        # started ahead) instead of after it. 1-3 ms less per run on a busy runner.
        await asyncio.sleep(0)
    except nats.errors.MaxPayloadError:
        error = DcodexError(
            INTERNAL,
            f"the reply ({len(body)} bytes) is larger than the NATS server's max payload;"
            " ask for a smaller limits.output_bytes",
        )
        await request.respond(
            encode(error.to_body(), encoding_of(headers)), {**headers, **error.to_headers()}
        )
        return error
    return None


def as_dcodex_error(exc: BaseException) -> DcodexError:
    if isinstance(exc, DcodexError):
        return exc
    if isinstance(exc, ValidationError):
        return from_validation_error(exc)
    return DcodexError(INTERNAL, f"internal error: {type(exc).__name__}: {exc}")
