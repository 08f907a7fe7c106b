"""Input of an interactive run: `dcodex.input.<execution_id>` fed to the program.

Each message is one event (docs/protocol.md, interactive input): `{"type":"stdin","data":"..."}`,
`{"type":"eof"}` or `{"type":"signal","signal":"SIGINT"}`, in JSON or msgpack (by
its Content-Type header). One sent as a request is acknowledged with `{}` once applied;
one carrying a `seq` the run has already had is acknowledged and not applied again (the
client sent it again because an acknowledgement was lost). A message that is none of
these is dropped with a log line and, when it asked for a reply, answered with the error.
"""

from __future__ import annotations

import contextlib
import functools
import signal
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Annotated

import nats.errors
import structlog
from nats.aio.client import Client as NATS
from nats.aio.msg import Msg
from pydantic import Field, TypeAdapter, ValidationError

from dcodex.shared.bus.flush import FLUSH_S
from dcodex.shared.codec import CONTENT_TYPE_HEADER, decode, encode, encoding_of
from dcodex.shared.contract import EofEvent, SignalEvent, StdinEvent
from dcodex.shared.errors import UNAVAILABLE, DcodexError, from_validation_error
from dcodex.shared.sandbox.run import LiveInput

InputEvent = Annotated[StdinEvent | EofEvent | SignalEvent, Field(discriminator="type")]


@functools.cache
def _input_event() -> TypeAdapter[StdinEvent | EofEvent | SignalEvent]:
    """Built on the first interactive run: an idle runner keeps no validator it never uses."""
    return TypeAdapter(InputEvent)


log = structlog.get_logger("dcodex.runner")


@asynccontextmanager
async def input_feed(nc: NATS, subject: str, live: LiveInput | None) -> AsyncIterator[None]:
    """While inside, events on `subject` go to `live` (nothing happens without one)."""
    if live is None:
        yield
        return

    applied = InputSequence()

    async def on_message(msg: Msg) -> None:
        encoding = encoding_of(msg.headers)
        try:
            event = _input_event().validate_python(decode(msg.data, encoding))
        except (DcodexError, ValidationError) as exc:
            error = exc if isinstance(exc, DcodexError) else from_validation_error(exc)
            log.info("input_event_rejected", error=error.message)
            if msg.reply:
                body = encode(error.to_body(), encoding)
                await nc.publish(msg.reply, body, headers=error.to_headers())
            return
        if applied.is_new(event.seq):
            apply(live, event)
        if msg.reply:  # acknowledged: the client stops sending it
            ack = encode({}, encoding)
            await nc.publish(msg.reply, ack, headers={CONTENT_TYPE_HEADER: encoding})

    subscription = await nc.subscribe(subject, cb=on_message)
    try:
        # Subscribed on the server before the program can ask for input.
        await nc.flush(timeout=FLUSH_S)
    except nats.errors.FlushTimeoutError as exc:
        # The connection is moving to another server (a NATS node was lost): input sent
        # meanwhile could miss the run. It has not started: say so, to be sent again.
        with contextlib.suppress(nats.errors.Error):
            await subscription.unsubscribe()
        raise DcodexError(
            UNAVAILABLE, "NATS did not confirm the run's input subscription; try again"
        ) from exc
    try:
        yield
    finally:
        await subscription.unsubscribe()


class InputSequence:
    """The highest `seq` applied: an event sent again after a lost acknowledgement is
    recognised. Events without one (a `nats pub` by hand) are always applied."""

    def __init__(self) -> None:
        self.highest = 0

    def is_new(self, seq: int | None) -> bool:
        if seq is None:
            return True
        if seq <= self.highest:
            return False
        self.highest = seq
        return True


def apply(live: LiveInput, event: StdinEvent | EofEvent | SignalEvent) -> None:
    if isinstance(event, StdinEvent):
        live.write(event.data.encode())
    elif isinstance(event, EofEvent):
        live.close()
    else:
        live.signal(signal.Signals[event.signal])
