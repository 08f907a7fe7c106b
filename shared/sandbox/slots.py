"""Sandbox slots: a bound on concurrent sandboxes, and what each slot runs with.

When the service runs as root, slot N runs its programs as uid/gid `uid_base + N`, so
processes of two concurrent runs cannot signal each other and the process-count
rlimit counts one run only; with cgroups each slot also has cgroups of its own. Without
root every slot runs as the service's own user.

Requests beyond the free slots wait in a queue of bounded length; past it,
`acquire` raises `Overloaded` at once rather than letting work pile up.

A slot goes back to the pool only clean: with a cgroup, once no process of its run is
left in it (else it is kept out, and logged); without namespaces, once the files its
uid left in the host's shared writable directories are gone (`sweep_uid_files`).
"""

from __future__ import annotations

import asyncio
import os
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

import structlog

from dcodex.shared.sandbox.helper import prepare_sandbox
from dcodex.shared.sandbox.isolation import RLIMITS_ONLY, Isolation, IsolationMode
from dcodex.shared.sandbox.leftovers import remove_leftovers
from dcodex.shared.sandbox.probe import detect_isolation
from dcodex.shared.sandbox.slot import Slot
from dcodex.shared.sandbox.slot_cgroups import create_slot_cgroup, slot_cgroup_name
from dcodex.shared.sandbox.workspace import sweep_uid_files

log = structlog.get_logger("dcodex.sandbox")


class Overloaded(Exception):
    """Every slot is busy and the queue is full."""


class SlotPool:
    def __init__(
        self,
        size: int,
        uid_base: int | None,
        *,
        isolation: Isolation = RLIMITS_ONLY,
        max_queued: int | None = None,
        service: str = "sandbox",
        cpu_cores: float | None = None,
    ) -> None:
        self.size = size
        self.isolation = isolation
        self.max_queued = max_queued
        self.waiting = 0
        self.running = 0  # runs holding a slot now
        self._fewer_running: list[asyncio.Future[None]] = []
        self._free: asyncio.Queue[Slot] = asyncio.Queue()
        self._slots: list[Slot] = []
        use_uids = uid_base is not None and os.geteuid() == 0
        for index in range(size):
            uid = uid_base + index if use_uids and uid_base is not None else None
            cgroup = (
                create_slot_cgroup(slot_cgroup_name(service, index), cpu_cores)
                if isolation.cgroups
                else None
            )
            slot = Slot(index, uid, uid, isolation, cgroup)
            self._slots.append(slot)
            self._free.put_nowait(slot)

    @property
    def busy(self) -> int:
        return self.size - self._free.qsize()

    @property
    def full(self) -> bool:
        """Every slot is busy and the queue holds as many runs as it may."""
        limit = self.max_queued
        return self._free.empty() and limit is not None and self.waiting >= limit

    @asynccontextmanager
    async def acquire(self) -> AsyncIterator[Slot]:
        if self.full:
            raise Overloaded(f"all {self.size} sandboxes are busy and {self.waiting} runs wait")
        self.waiting += 1
        try:
            slot = await self._free.get()
        finally:
            self.waiting -= 1
        self.running += 1
        try:
            yield slot
        finally:
            self.running -= 1
            try:
                self._release(slot)
            finally:
                self._wake_waiters()

    async def until_fewer_running(self, than: int) -> None:
        """Until fewer than `than` runs hold a slot (a warm pool refills then)."""
        while self.running >= than:
            waiter = asyncio.get_running_loop().create_future()
            self._fewer_running.append(waiter)
            await waiter

    def _wake_waiters(self) -> None:
        waiters, self._fewer_running = self._fewer_running, []
        for waiter in waiters:
            if not waiter.done():
                waiter.set_result(None)

    def _release(self, slot: Slot) -> None:
        if slot.cgroup is not None and slot.cgroup.kill_all():
            # Processes of the last run are still there: the slot stays out of service.
            log.error("sandbox_slot_unclean", slot=slot.index, action="taken out of service")
            return
        if not slot.isolation.namespaces and slot.uid is not None:
            sweep_uid_files(slot.uid)
        self._free.put_nowait(slot)

    def probe_slot(self) -> Slot:
        """A slot like the first, without its cgroup: for short probes run side by side."""
        first = self._slots[0]
        return Slot(first.index, first.uid, first.gid, first.isolation, shared_uid=True)

    def close(self) -> None:
        """Remove the slots' cgroups (call once no run is left)."""
        for slot in self._slots:
            if slot.cgroup is not None:
                slot.cgroup.remove()


async def open_slot_pool(
    mode: IsolationMode,
    *,
    size: int,
    uid_base: int,
    disk_bytes: int,
    max_queued: int | None,
    service: str,
    cpu_cores: float | None = None,
) -> SlotPool:
    """Build the sandbox helper, find the isolation `mode` gets here, and make the slots.

    Raises IsolationUnavailable when `mode` is "strict" and a layer is missing.
    """

    await prepare_sandbox()
    removed = remove_leftovers()
    if removed.count:
        log.warning(
            "removed_leftovers",
            directories=[str(path) for path in removed.directories],
            cgroups=[str(path) for path in removed.cgroups],
        )
    isolation = await detect_isolation(mode, disk_bytes=disk_bytes, probe_uid=uid_base)
    return SlotPool(
        size,
        uid_base,
        isolation=isolation,
        max_queued=max_queued,
        service=service,
        cpu_cores=cpu_cores,
    )
