"""Readiness: what a service needs before it should be counted on (Kubernetes `/readyz`).

Every service needs its NATS connection and its registered endpoints; each adds checks
of the stores it uses (the cache its result bucket, runner and compiler the artifact
Object Store). A check answers `None` when all is well, else the reason it is not.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field

from nats.aio.client import Client as NATS
from nats.js.object_store import ObjectStore

from dcodex.shared.service.micro import RunningService

# A store that does not answer within this is as good as unreachable for a probe.
CHECK_TIMEOUT_SECONDS = 2.0


@dataclass(frozen=True)
class Check:
    """Something a service needs: `probe` raises (or hangs) while it is unreachable."""

    what: str
    probe: Callable[[], Awaitable[object]]

    async def problem(self) -> str | None:
        try:
            await asyncio.wait_for(self.probe(), CHECK_TIMEOUT_SECONDS)
        except TimeoutError:
            return f"{self.what} did not answer within {CHECK_TIMEOUT_SECONDS:g} s"
        except Exception as exc:
            return f"{self.what} is unreachable: {exc}"
        return None


@dataclass
class Readiness:
    nc: NATS
    micro: RunningService
    checks: list[Check] = field(default_factory=list)

    async def problems(self) -> list[str]:
        """Why the service is not ready; empty when it is."""
        if not self.micro.serving:
            return ["stopping: its endpoints are no longer registered"]
        if not self.nc.is_connected:
            state = "reconnecting" if self.nc.is_reconnecting else "disconnected"
            return [f"not connected to NATS ({state})"]
        found = await asyncio.gather(*(check.problem() for check in self.checks))
        return [problem for problem in found if problem is not None]


def object_store_check(store: ObjectStore, bucket: str) -> Check:
    return Check(f"the Object Store {bucket}", store.status)
