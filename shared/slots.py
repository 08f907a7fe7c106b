"""Sandbox slots: a bound on concurrent sandboxes, each slot with a uid of its own.

When the service runs as root, slot N runs its programs as uid/gid `uid_base + N`, so
processes of two concurrent runs cannot signal each other and the process-count
rlimit counts one run only. Without root every slot runs as the service's own user.
"""

from __future__ import annotations

import asyncio
import os
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass


@dataclass(frozen=True)
class Slot:
    index: int
    uid: int | None
    gid: int | None


class SlotPool:
    def __init__(self, size: int, uid_base: int | None) -> None:
        self.size = size
        self._free: asyncio.Queue[Slot] = asyncio.Queue()
        use_uids = uid_base is not None and os.geteuid() == 0
        for index in range(size):
            uid = uid_base + index if use_uids and uid_base is not None else None
            self._free.put_nowait(Slot(index, uid, uid))

    @asynccontextmanager
    async def acquire(self) -> AsyncIterator[Slot]:
        slot = await self._free.get()
        try:
            yield slot
        finally:
            self._free.put_nowait(slot)
