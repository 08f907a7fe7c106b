"""NATS micro discovery: every service instance, its version, uptime and endpoint stats.

`$SRV.PING`, `$SRV.INFO` and `$SRV.STATS` are published once each; every instance of
every micro service on the server answers each, so the answers are gathered for a
short while and joined by instance id. Models ignore fields they do not know, so newer
servers (or other micro services) do not break the client.
"""

from __future__ import annotations

import asyncio
import json
from datetime import UTC, datetime
from typing import Any

import nats.errors
from nats.aio.client import Client as NATS
from pydantic import BaseModel, ConfigDict, Field, computed_field

VERBS = ("PING", "INFO", "STATS")


class _Tolerant(BaseModel):
    model_config = ConfigDict(extra="ignore")


class EndpointStats(_Tolerant):
    name: str
    subject: str = ""
    num_requests: int = 0
    num_errors: int = 0
    processing_time: int = Field(0, description="nanoseconds, all requests together")
    average_processing_time: int = Field(0, description="nanoseconds")
    last_error: str | None = None

    @computed_field  # type: ignore[prop-decorator]
    @property
    def average_processing_time_ms(self) -> float:
        """The average in milliseconds, as `dcodex bus stats` shows it."""
        return round(self.average_processing_time / 1e6, 3)


class ServiceInstance(_Tolerant):
    """One running instance of a micro service, as its PING, INFO and STATS describe it."""

    name: str
    id: str
    version: str = ""
    description: str = ""
    metadata: dict[str, str] = Field(default_factory=dict)
    started: datetime | None = None
    endpoints: list[EndpointStats] = Field(default_factory=list)

    def uptime_s(self, now: datetime | None = None) -> float | None:
        if self.started is None:
            return None
        started = self.started if self.started.tzinfo else self.started.replace(tzinfo=UTC)
        return ((now or datetime.now(UTC)) - started).total_seconds()


async def gather(nc: NATS, subject: str, wait_s: float) -> list[dict[str, Any]]:
    """Every answer to one request published on `subject` within `wait_s` seconds."""
    inbox = nc.new_inbox()
    answers: list[dict[str, Any]] = []
    subscription = await nc.subscribe(inbox)
    await nc.publish(subject, b"", reply=inbox)
    loop = asyncio.get_running_loop()
    deadline = loop.time() + wait_s
    while (left := deadline - loop.time()) > 0:
        try:
            msg = await subscription.next_msg(timeout=left)
        except nats.errors.TimeoutError:
            break
        if not msg.data:  # an empty message is the server's "no responders" status
            continue
        try:
            answer = json.loads(msg.data)
        except ValueError:
            continue
        if isinstance(answer, dict) and "name" in answer and "id" in answer:
            answers.append(answer)
    await subscription.unsubscribe()
    return answers


async def discover(nc: NATS, wait_s: float = 0.5, name: str | None = None) -> list[ServiceInstance]:
    """Every instance (of service `name`, or of all) joined from PING, INFO and STATS."""
    suffix = f".{name}" if name else ""
    replies = await asyncio.gather(*(gather(nc, f"$SRV.{verb}{suffix}", wait_s) for verb in VERBS))
    merged: dict[str, dict[str, Any]] = {}
    for answers in replies:
        for answer in answers:
            merged.setdefault(answer["id"], {}).update(answer)
    instances = [ServiceInstance.model_validate(fields) for fields in merged.values()]
    return sorted(instances, key=lambda instance: (instance.name, instance.id))
