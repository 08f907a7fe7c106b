"""Coalescing across cache replicas: a lease per cache key in the KV bucket `dcodex-inflight`.

The replica that creates a key's lease (`kv.create`, which fails when the key exists)
runs the request; the others wait for the lease's outcome. The leader ends its lease by
writing the outcome into it (the result, or the error it got), so waiting replicas share
even results that are never cached. A lease lives the bucket's max age from its last
write, and its leader renews it every third of that while the run goes on (a run may
last longer than a lease): a crashed leader's lease vanishes within one lease, and
those waiting run the request themselves.

The server places no marker when max age removes a key, so a watcher cannot see a lease
expire: waiting replicas also look every `poll_s`.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import socket
import time
from dataclasses import dataclass
from typing import Any

import msgpack
import nats.errors
import nats.js.errors
import structlog
from nats.js.client import JetStreamContext
from nats.js.kv import KV_DEL, KV_PURGE, KeyValue

from dcodex.services.cache.buckets import ReopeningBucket
from dcodex.shared.contract import ExecutionResult
from dcodex.shared.errors import DcodexError

INFLIGHT_BUCKET = "dcodex-inflight"
LONGEST_POLL_S = 1.0

log = structlog.get_logger("dcodex.cache")


def inflight_bucket(js: JetStreamContext, lease_s: float, max_bytes: int) -> ReopeningBucket:
    """The lease bucket: its max age is the lease."""
    description = "DCodeX runs in flight: which cache replica runs each cache key"
    return ReopeningBucket(
        js, INFLIGHT_BUCKET, description, lease_s, max_bytes, InflightUnavailable, "inflight"
    )


class InflightUnavailable(Exception):
    """The lease bucket is missing or JetStream does not answer: coalesce locally only."""


@dataclass(frozen=True)
class Lease:
    key: str
    revision: int
    execution_id: str  # what its leader asked the runners for: named in the lease's value


@dataclass(frozen=True)
class Abandoned:
    """A lease that ended without an outcome (released, or its leader died); the
    execution its leader had asked the runners for, when the lease named one."""

    execution_id: str | None = None


@dataclass(frozen=True)
class Finished:
    """A leader's outcome: its result (and whether it was stored), or the error it got."""

    result: ExecutionResult | None = None
    kept: bool = False
    error: DcodexError | None = None


# What a claim gets: the lease; a just finished and stored run's outcome; or None
# while another replica holds the lease.
Claim = Lease | Finished | None

# ------------------------------------------------------------------ lease values


def holder() -> dict[str, Any]:
    """Who holds a lease, for an operator reading the bucket (`nats kv get`)."""
    return {"host": socket.gethostname(), "pid": os.getpid()}


def running_value(who: dict[str, Any], execution_id: str) -> bytes:
    value = {"state": "running", "holder": who, "since": time.time(), "execution_id": execution_id}
    packed: bytes = msgpack.packb(value)
    return packed


def finished_value(finished: Finished) -> bytes:
    data: dict[str, Any] = {"state": "finished", "kept": finished.kept}
    if finished.result is not None:
        data["result"] = finished.result.model_dump(mode="json")
    if finished.error is not None:
        data["error"] = finished.error.to_body()["error"]
    packed: bytes = msgpack.packb(data, use_bin_type=True)
    return packed


def decode(value: bytes | None) -> Finished | Abandoned | bool:
    """A lease's value: its outcome; while running, the execution it waits for
    (`Abandoned`, should it end now), or True when it names none; False when it holds
    neither."""
    try:
        data = msgpack.unpackb(value or b"", raw=False)
    except (ValueError, msgpack.UnpackException):
        return False
    if not isinstance(data, dict):
        return False
    if data.get("state") == "running":
        execution_id = data.get("execution_id")
        return Abandoned(execution_id) if isinstance(execution_id, str) else True
    if data.get("state") != "finished":
        return False
    if "error" in data:
        error = DcodexError.from_body(data, 500, "the leading replica failed")
        return Finished(error=error)
    if "result" in data:
        return Finished(ExecutionResult.model_validate(data["result"]), bool(data.get("kept")))
    return False


# ------------------------------------------------------------------ the bucket


class Inflight:
    """The lease bucket as the cache uses it; like `ResultStore`, a lost bucket is not fatal."""

    def __init__(
        self, js: JetStreamContext, lease_s: float, max_bytes: int, largest_value: int
    ) -> None:
        self.lease_s = lease_s
        self.poll_s = min(LONGEST_POLL_S, lease_s / 4)
        self._largest_value = largest_value
        self._holder = holder()
        self._bucket = inflight_bucket(js, lease_s, max_bytes)

    async def open(self) -> bool:
        return await self._bucket.open()

    async def claim(self, key: str, execution_id: str, share_finished: bool = True) -> Claim:
        """The lease on `key`, naming `execution_id`, if no replica is running it; None
        while one is; the outcome of a finished run that stored its result
        (`share_finished`: the caller checks the result is still stored, and else claims
        again without sharing)."""
        kv = await self._bucket.kv()
        value = running_value(self._holder, execution_id)
        try:
            return Lease(key, await kv.create(key, value), execution_id)
        except nats.js.errors.KeyWrongLastSequenceError:
            pass  # the key exists: a running lease, or a finished one nobody waits for now
        except (nats.errors.Error, TimeoutError) as exc:
            raise self._bucket.lost(exc) from exc
        try:
            entry = await kv.get(key)
            state = decode(entry.value)
            if state is True or isinstance(state, Abandoned) or entry.revision is None:
                return None
            if share_finished and isinstance(state, Finished) and state.kept and state.result:
                # Just finished and stored: share it (running it again would run the
                # program twice for the request that missed the store a moment ago).
                return state
            # Finished otherwise (or unreadable): take it over, unless another replica just did.
            return Lease(key, await kv.update(key, value, last=entry.revision), execution_id)
        except (nats.js.errors.KeyNotFoundError, nats.js.errors.KeyWrongLastSequenceError):
            return None  # it changed under us: wait on whatever holds it now
        except (nats.errors.Error, TimeoutError) as exc:
            raise self._bucket.lost(exc) from exc

    async def renew(self, lease: Lease) -> Lease | None:
        """`lease` written again (its age starts over); None when it is no longer ours."""
        try:
            kv = await self._bucket.kv()
            value = running_value(self._holder, lease.execution_id)
            revision = await kv.update(lease.key, value, last=lease.revision)
            return Lease(lease.key, revision, lease.execution_id)
        except (nats.js.errors.KeyWrongLastSequenceError, nats.js.errors.KeyNotFoundError):
            log.warning("lease_lost_while_running", key=lease.key, lease_s=self.lease_s)
            return None
        except (nats.errors.Error, TimeoutError, InflightUnavailable) as exc:
            log.info("lease_not_renewed", key=lease.key, error=repr(exc))
            return lease  # try again next time: the lease may outlive a short outage

    async def finish(self, lease: Lease, finished: Finished) -> None:
        """End `lease` with its outcome, for the replicas waiting on it (best effort)."""
        value = finished_value(finished)
        if len(value) > self._largest_value:
            await self.release(lease)  # those waiting look up the result or run it themselves
            return
        try:
            kv = await self._bucket.kv()
            await kv.update(lease.key, value, last=lease.revision)
        except nats.js.errors.KeyWrongLastSequenceError:
            log.info("lease_lost_before_finish", key=lease.key, lease_s=self.lease_s)
        except (nats.errors.Error, TimeoutError, InflightUnavailable) as exc:
            log.warning("lease_not_finished", key=lease.key, error=repr(exc))

    async def release(self, lease: Lease) -> None:
        """End `lease` without an outcome (best effort): those waiting stop waiting."""
        try:
            kv = await self._bucket.kv()
            await kv.delete(lease.key, last=lease.revision)
        except (nats.errors.Error, TimeoutError, InflightUnavailable) as exc:
            log.debug("lease_not_released", key=lease.key, error=repr(exc))

    async def wait(self, key: str) -> Finished | Abandoned:
        """The outcome of the run another replica holds `key` for, or `Abandoned` if its
        lease ends without one (released, or expired because that replica died)."""
        kv = await self._bucket.kv()
        try:
            watcher = await kv.watch(key, inactive_threshold=max(10.0, 4 * self.poll_s))
        except (nats.errors.Error, TimeoutError) as exc:
            raise self._bucket.lost(exc) from exc
        try:
            return await self._outcome(kv, watcher, key)
        except (nats.errors.Error, TimeoutError) as exc:
            raise self._bucket.lost(exc) from exc
        finally:
            with contextlib.suppress(nats.errors.Error, TimeoutError):
                await watcher.stop()  # type: ignore[no-untyped-call]  # nats-py: untyped

    async def _outcome(
        self, kv: KeyValue, watcher: KeyValue.KeyWatcher, key: str
    ) -> Finished | Abandoned:
        last_seen = Abandoned()  # the execution the lease last named
        while True:
            try:
                entry = await watcher.updates(timeout=self.poll_s)  # type: ignore[no-untyped-call]
            except nats.errors.TimeoutError:
                entry = None
            if entry is None:
                # Quiet for poll_s (an expired lease sends nothing), or the watch's end of
                # initial values, which can come before a value already on its way: ask.
                entry = await self._current(kv, key)
                if entry is None:
                    return last_seen
            if entry.operation in (KV_DEL, KV_PURGE):
                return last_seen
            state = decode(entry.value)
            if state is False:
                return last_seen
            if isinstance(state, Finished):
                return state
            if isinstance(state, Abandoned):
                last_seen = state

    @staticmethod
    async def _current(kv: KeyValue, key: str) -> KeyValue.Entry | None:
        try:
            return await kv.get(key)
        except nats.js.errors.KeyNotFoundError:
            return None


class HeldLease:
    """A lease its leader keeps renewing while the run goes on; `lease` is its latest
    revision (what `finish` and `release` must name).

    Renewal waits on a timer, not in a task of its own: a run shorter than a third of
    the lease (most) costs no task and no turn of the loop to stop it."""

    def __init__(self, inflight: Inflight, lease: Lease) -> None:
        self.inflight = inflight
        self.lease = lease
        self._stopped = False
        self._timer: asyncio.TimerHandle | None = None
        self._renewing: asyncio.Task[None] | None = None

    async def __aenter__(self) -> HeldLease:
        self._schedule()
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        # Stopped between two writes, never in the middle of one: the revision stays known.
        self._stopped = True
        if self._timer is not None:
            self._timer.cancel()
        if self._renewing is not None and not self._renewing.done():
            await asyncio.shield(self._renewing)

    def _schedule(self) -> None:
        loop = asyncio.get_running_loop()
        self._timer = loop.call_later(self.inflight.lease_s / 3, self._start_renewal)

    def _start_renewal(self) -> None:
        self._timer = None
        self._renewing = asyncio.create_task(self._renew())

    async def _renew(self) -> None:
        if self._stopped:
            return  # the run ended as the timer fired: nothing left to keep
        try:
            renewed = await self.inflight.renew(self.lease)
        except Exception:
            # Nobody awaits this task: said here, or the lease would lapse in silence.
            log.exception("lease_renewal_failed", key=self.lease.key)
            return
        if renewed is None:
            return  # another replica took it over: our finish will say so
        self.lease = renewed
        if not self._stopped:
            self._schedule()
