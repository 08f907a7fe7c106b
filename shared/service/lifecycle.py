"""What every service has in common once started: a connection, a micro service, metrics."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field

from nats.aio.client import Client as NATS
from prometheus_client import CollectorRegistry

from dcodex.shared.service.health import Check
from dcodex.shared.service.micro import RunningService


@dataclass
class Service:
    name: str
    nc: NATS
    micro: RunningService
    metrics: CollectorRegistry
    # What `dcodex up` shows of it besides its metrics port (e.g. the sandbox layers).
    details: dict[str, str] = field(default_factory=dict)
    # Run once the service has stopped (e.g. removing its sandbox slots' cgroups).
    on_stopped: list[Callable[[], None]] = field(default_factory=list)
    # What `/readyz` checks besides NATS and the endpoints (the stores it needs).
    ready_checks: list[Check] = field(default_factory=list)

    async def stop(self, grace_seconds: float = 10.0) -> None:
        """Stop taking requests, finish those under way, then disconnect."""
        await self.micro.stop(grace_seconds)
        if not self.nc.is_closed:
            await self.nc.drain()
        for cleanup in self.on_stopped:
            cleanup()
