"""Live runs for the client: events as they happen, and input for interactive runs.

A `LiveRun` subscribes to `dcodex.output.<execution_id>` before it sends the request,
so no event is missed; `events()` yields them in order until the `result` event.
Input (`send`, `close_stdin`, `signal`) goes to `dcodex.input.<execution_id>` once
the program has started (or a second has passed without the `started` event), one
event at a time, each numbered and sent again until the runner acknowledges it: input
sent while a connection moves to another NATS node arrives, and arrives once.
With a tenant both are `dcodex.{output,input}.<tenant>.<execution_id>` and the
request goes to `dcodex.<execute|run>.<tenant>` (docs/tenancy.md).
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import AsyncIterator
from typing import Any

import structlog
from nats.aio.client import Client as NATS
from nats.aio.msg import Msg
from nats.aio.subscription import Subscription
from pydantic import ValidationError

from dcodex.shared import bus
from dcodex.shared.bus.flush import flushed
from dcodex.shared.bus.watch import watched_request
from dcodex.shared.codec import JSON, Encoding, decode
from dcodex.shared.contract import (
    EofEvent,
    ExecuteRequest,
    ExecutionResult,
    OutputEvent,
    ResultEvent,
    SignalEvent,
    StdinEvent,
)
from dcodex.shared.errors import UNAVAILABLE, DcodexError
from dcodex.shared.subjects import execution_subjects, input_subject, output_subject

log = structlog.get_logger("dcodex.client")

Event = OutputEvent | ResultEvent
SignalName = str  # "SIGINT", "SIGTERM" or "SIGKILL"
# After the reply, how long a result event that has not come yet is waited for.
_RESULT_EVENT_GRACE_S = 1.0
# An input event not acknowledged within this is sent again (the runner applies it once).
_INPUT_ACK_S = 1.0
_INPUT_RETRY_PAUSE_S = 0.1  # after "no responders": the runner's connection is moving
# Input waits this long at most for the `started` event (which a lost node can lose).
_STARTED_WAIT_S = 1.0


class LiveRun:
    def __init__(
        self,
        nc: NATS,
        prefix: str,
        request: ExecuteRequest,
        *,
        subject: str = "execute",
        timeout: float,
        encoding: Encoding = JSON,
        tenant: str | None = None,
    ) -> None:
        execution_id = request.execution_id or bus.new_id()
        self.request = request.model_copy(update={"execution_id": execution_id, "stream": True})
        self.execution_id = execution_id
        self.result: ExecutionResult | None = None
        self._nc = nc
        self._prefix = prefix
        self._subject = subject
        self._timeout = timeout
        self._encoding = encoding
        self._tenant = tenant
        self._events: asyncio.Queue[Event] = asyncio.Queue()
        self._started = asyncio.Event()
        self._subscription: Subscription | None = None
        self._reply: asyncio.Task[dict[str, Any]] | None = None
        self._input_seq = 0
        self._input_lock = asyncio.Lock()  # one event at a time: they arrive in order

    async def start(self) -> LiveRun:
        self._subscription = await self._nc.subscribe(
            output_subject(self._prefix, self.execution_id, self._tenant), cb=self._on_event
        )
        # Subscribed on the server before the run can begin (and again after a reconnection).
        await flushed(self._nc, self._timeout, "the subscription to the run's events")
        # Watched like `execute` (docs/reliability.md): a lost reply or replica costs
        # seconds; a tenant's on its own status subject.
        subject, status = execution_subjects(self._prefix, self._subject, self._tenant)
        asking = watched_request(
            self._nc,
            subject,
            status,
            self.request,
            execution_id=self.execution_id,
            request_id=bus.new_id(),
            timeout=self._timeout,
            encoding=self._encoding,
        )
        self._reply = asyncio.ensure_future(asking)
        return self

    async def events(self) -> AsyncIterator[Event]:
        """Every event of the run, the `result` event last; error replies raise."""
        assert self._reply is not None, "start() first"
        while True:
            event = await self._next_event()
            if isinstance(event, ResultEvent):
                # The reply's copy also says what the cache did (`cache_key`, `cache_hit`).
                self.result = await self._reply_result(event.result)
                event = event.model_copy(update={"result": self.result})
                self._started.set()
            yield event
            if isinstance(event, ResultEvent):
                return

    async def wait(self) -> ExecutionResult:
        """The result, once the run has ended (events not yet read are skipped)."""
        async for _ in self.events():
            pass
        assert self.result is not None
        return self.result

    async def send(self, text: str) -> None:
        await self._input(StdinEvent(type="stdin", data=text))

    async def close_stdin(self) -> None:
        await self._input(EofEvent(type="eof"))

    async def signal(self, name: SignalName) -> None:
        await self._input(SignalEvent.model_validate({"type": "signal", "signal": name}))

    async def close(self) -> None:
        if self._subscription is not None:
            with contextlib.suppress(Exception):
                await self._subscription.unsubscribe()
            self._subscription = None
        if self._reply is not None and not self._reply.done():
            self._reply.cancel()
            with contextlib.suppress(BaseException):
                await self._reply

    async def __aenter__(self) -> LiveRun:
        return await self.start()

    async def __aexit__(self, *exc_info: object) -> None:
        await self.close()

    async def _input(self, event: StdinEvent | EofEvent | SignalEvent) -> None:
        assert self._reply is not None, "start() first"
        # The `started` event says the runner listens; should it be lost (published while
        # a NATS node was lost), a second later the input goes anyway: a runner that has
        # the request keeps it for the program, and before that it is sent again.
        started = asyncio.ensure_future(self._started.wait())
        await asyncio.wait(
            {started, self._reply}, timeout=_STARTED_WAIT_S, return_when=asyncio.FIRST_COMPLETED
        )
        started.cancel()
        if self.result is not None or self._reply.done():
            return  # the run is over (or was refused): there is no one to tell
        async with self._input_lock:
            self._input_seq += 1
            await self._deliver(event.model_copy(update={"seq": self._input_seq}))

    async def _deliver(self, event: StdinEvent | EofEvent | SignalEvent) -> None:
        """Sent until the runner acknowledges it, or the run ends; a 503 after the timeout."""
        assert self._reply is not None
        subject = input_subject(self._prefix, self.execution_id, self._tenant)
        deadline = time.monotonic() + self._timeout
        while True:
            try:
                await bus.request(
                    self._nc,
                    subject,
                    event,
                    request_id=bus.new_id(),
                    timeout=_INPUT_ACK_S,
                    encoding=self._encoding,
                )
                return
            except (bus.NoResponders, bus.RequestTimedOut) as exc:
                if self._reply.done():
                    return  # the run is over: there is no one to tell
                if time.monotonic() >= deadline:
                    raise DcodexError(
                        UNAVAILABLE, f"the run did not acknowledge its input on {subject}"
                    ) from exc
                if isinstance(exc, bus.NoResponders):
                    await asyncio.sleep(_INPUT_RETRY_PAUSE_S)

    async def _on_event(self, msg: Msg) -> None:
        event: Event
        try:
            payload = decode(msg.data, self._encoding)
            if payload.get("type") == "result":
                event = ResultEvent.model_validate(payload)
            else:
                event = OutputEvent.model_validate(payload)
        except (DcodexError, ValidationError, AttributeError):
            # Not an event of the contract: not from a DCodeX service; dropped.
            log.warning("event_dropped", subject=msg.subject, size=len(msg.data))
            return
        if event.type in ("started", "result"):
            self._started.set()
        self._events.put_nowait(event)

    async def _reply_result(self, fallback: ExecutionResult) -> ExecutionResult:
        assert self._reply is not None
        with contextlib.suppress(Exception):
            reply = await asyncio.wait_for(asyncio.shield(self._reply), _RESULT_EVENT_GRACE_S)
            return ExecutionResult.model_validate(reply)
        return fallback

    async def _next_event(self) -> Event:
        """The next event; if the reply comes first, the reply tells how the run ended."""
        assert self._reply is not None
        getter = asyncio.ensure_future(self._events.get())
        try:
            await asyncio.wait({getter, self._reply}, return_when=asyncio.FIRST_COMPLETED)
            if getter.done():
                return getter.result()
            reply = self._reply.result()  # an error reply raises DcodexError here
            with contextlib.suppress(TimeoutError):
                return await asyncio.wait_for(asyncio.shield(getter), _RESULT_EVENT_GRACE_S)
            result = ExecutionResult.model_validate(reply)
            return ResultEvent(seq=-1, result=result)  # its events were lost on the way
        finally:
            getter.cancel()
