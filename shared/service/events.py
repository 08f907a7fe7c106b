"""Live events of one execution on `dcodex.output.<execution_id>` (docs/protocol.md, live events).

The runner publishes them while the program runs; the cache replays them from a stored
result for a cache hit or a coalesced request, so a streaming client sees the same
kinds of events in the same order either way.
"""

from __future__ import annotations

import asyncio
import codecs

import nats.errors
import structlog
from nats.aio.client import Client as NATS
from pydantic import BaseModel

from dcodex.shared.bus.flush import FLUSH_S
from dcodex.shared.codec import Encoding, encode
from dcodex.shared.contract import ExecutionResult, OutputEvent, ResultEvent

log = structlog.get_logger("dcodex.events")


class EventPublisher:
    """Publishes the live events of one execution, numbered from 0 (docs/protocol.md)."""

    def __init__(self, nc: NATS, subject: str, encoding: Encoding, enabled: bool = True) -> None:
        self.nc = nc
        self.subject = subject
        self.encoding = encoding
        self.enabled = enabled
        self.seq = 0
        self._last_send: asyncio.Future[None] | None = None
        # A character split between two chunks of output is sent whole, with the later.
        self._decoders = {
            name: codecs.getincrementaldecoder("utf-8")("replace") for name in ("stdout", "stderr")
        }

    def publish(self, kind: str, data: str = "") -> None:
        if self.enabled:
            self._send(OutputEvent.model_validate({"seq": self.seq, "type": kind, "data": data}))

    def output(self, stream: str, chunk: bytes) -> None:
        text = self._decoders[stream].decode(chunk)
        if text:
            self.publish(stream, text)

    async def result(self, result: ExecutionResult) -> None:
        if self.enabled:
            for stream, decoder in self._decoders.items():
                if rest := decoder.decode(b"", final=True):
                    self.publish(stream, rest)
            self._send(ResultEvent(seq=self.seq, result=result))
            await self.drain()

    def event(self, event: BaseModel) -> None:
        """Publish an event of another kind (judge mode's `case` and `judged`), in order."""
        if self.enabled:
            self._send(event)

    async def drain(self) -> None:
        """Wait until every event published so far has reached the server."""
        if self.enabled:
            if self._last_send is not None:
                await self._last_send
            try:
                await self.nc.flush(timeout=FLUSH_S)
            except nats.errors.FlushTimeoutError:
                # The connection is moving to another server (a NATS node was lost): what
                # was published waits in the client's buffer and goes first on the new
                # connection, still before the reply. Failing here would lose the result.
                log.warning("events_flush_timeout", subject=self.subject)

    def _send(self, event: BaseModel) -> None:
        self.seq += 1
        # Output arrives in callbacks that cannot await; each publish waits for the one
        # before it, so events leave in order of seq even when nats-py has to flush.
        payload = encode(event, self.encoding)
        self._last_send = asyncio.ensure_future(self._publish_after(self._last_send, payload))

    async def _publish_after(self, previous: asyncio.Future[None] | None, payload: bytes) -> None:
        if previous is not None:
            await previous
        await self.nc.publish(self.subject, payload)


async def replay(events: EventPublisher, result: ExecutionResult, compiled: bool) -> None:
    """Publish a finished result as the events its run would have published
    (`compiled`: the language is compiled, so the run began with a `compile` event).

    stdout and stderr come as one chunk each: how the run interleaved them is not kept.
    """
    if compiled:
        events.publish("compile", result.compile_output)
    if result.status != "compile_error":
        events.publish("started")
    for stream, text in (("stdout", result.stdout), ("stderr", result.stderr)):
        if text:
            events.publish(stream, text)
    await events.result(result)
