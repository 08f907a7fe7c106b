"""What every service has in common once started: a connection, a micro service, metrics."""

from __future__ import annotations

from dataclasses import dataclass
from importlib.metadata import PackageNotFoundError
from importlib.metadata import version as package_version

from nats.aio.client import Client as NATS
from prometheus_client import CollectorRegistry

from dcodex.shared.bus import RunningService


def version() -> str:
    try:
        return package_version("dcodex")
    except PackageNotFoundError:
        return "0.0.0"


@dataclass
class Service:
    name: str
    nc: NATS
    micro: RunningService
    metrics: CollectorRegistry

    async def stop(self, grace_seconds: float = 10.0) -> None:
        """Stop taking requests, finish those under way, then disconnect."""
        await self.micro.stop(grace_seconds)
        if not self.nc.is_closed:
            await self.nc.drain()
