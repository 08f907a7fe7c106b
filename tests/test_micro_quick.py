"""An endpoint's quick handler on a real NATS server: what it answers at once, what it
hands on to the full handler, and its errors in the contract's format."""

from __future__ import annotations

import dataclasses
from collections.abc import AsyncIterator

import nats
import pytest
from nats.aio.client import Client as NATS
from pydantic import BaseModel

from dcodex.shared import bus
from dcodex.shared.errors import BAD_REQUEST, DcodexError
from dcodex.shared.service.micro import Call, Endpoint, RunningService, start_micro_service

pytestmark = pytest.mark.bus

SUBJECT = "quicktest.echo"


class Echo(BaseModel):
    text: str
    answered_by: str
    prepared: str | None = None


class Echoes:
    """Answers "fast:..." at once, refuses "bad", hands the rest on with a note."""

    def __init__(self) -> None:
        self.handled: list[str] = []

    def quick(self, call: Call) -> BaseModel | Call:
        text = str(call.payload.get("text", ""))
        if text == "bad":
            raise DcodexError(BAD_REQUEST, "bad text", "text")
        if text.startswith("fast:"):
            return Echo(text=text, answered_by="quick")
        return dataclasses.replace(call, prepared=f"looked at {text}")

    async def handle(self, call: Call) -> BaseModel:
        text = str(call.payload.get("text", ""))
        self.handled.append(text)
        prepared = call.prepared if isinstance(call.prepared, str) else None
        return Echo(text=text, answered_by="handler", prepared=prepared)


@pytest.fixture
async def served(nats_url: str) -> AsyncIterator[tuple[NATS, Echoes]]:
    nc = await nats.connect(nats_url)
    echoes = Echoes()
    running: RunningService = await start_micro_service(
        nc,
        name="quicktest",
        version="0.0.0",
        description="an endpoint with a quick handler",
        endpoints=[Endpoint("echo", SUBJECT, echoes.handle, quick=echoes.quick)],
    )
    try:
        yield nc, echoes
    finally:
        await running.stop(grace_seconds=1)
        await nc.close()


async def ask(nc: NATS, text: str) -> Echo:
    reply = await bus.request(nc, SUBJECT, {"text": text}, request_id=bus.new_id(), timeout=5)
    return Echo.model_validate(reply)


async def test_the_quick_handler_answers_without_the_handler(served: tuple[NATS, Echoes]) -> None:
    nc, echoes = served
    assert await ask(nc, "fast:1") == Echo(text="fast:1", answered_by="quick")
    assert echoes.handled == []


async def test_what_it_hands_on_reaches_the_handler_with_what_it_worked_out(
    served: tuple[NATS, Echoes],
) -> None:
    nc, echoes = served
    echoed = await ask(nc, "slow")
    assert echoed == Echo(text="slow", answered_by="handler", prepared="looked at slow")
    assert echoes.handled == ["slow"]


async def test_its_errors_are_replies_in_the_contracts_format_and_serving_goes_on(
    served: tuple[NATS, Echoes],
) -> None:
    nc, _ = served
    with pytest.raises(DcodexError) as refused:
        await ask(nc, "bad")
    assert (refused.value.code, refused.value.field) == (BAD_REQUEST, "text")
    # A body that is no JSON object never reaches either handler: a 400 too.
    msg = await nc.request(SUBJECT, b"[1, 2", timeout=5)
    assert msg.headers is not None and msg.headers.get("Nats-Service-Error-Code") == "400"
    assert (await ask(nc, "fast:2")).answered_by == "quick"
