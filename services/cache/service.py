"""The cache: the front door (`dcodex.execute`), read-through over the KV bucket.

A hit never reaches a runner. A miss is forwarded to `dcodex.run`; identical requests
that arrive while it runs wait for that one result (coalescing): on this replica through
a single flight, on other replicas through a lease in `dcodex-inflight`. Effective limits and
toolchain versions, which the key depends on, come from the runners' `dcodex.languages`.
While the bucket is unavailable requests pass through to the runners.
"""

from __future__ import annotations

import asyncio
import collections
import dataclasses
import time
from collections.abc import Awaitable
from dataclasses import dataclass
from typing import TypeVar

import structlog
from nats.aio.client import Client as NATS
from nats.micro.service import EndpointStats
from pydantic import BaseModel

from dcodex.services.cache.hot import HotResults
from dcodex.services.cache.inflight import (
    INFLIGHT_BUCKET,
    Abandoned,
    Claim,
    Finished,
    HeldLease,
    Inflight,
    InflightUnavailable,
    Lease,
)
from dcodex.services.cache.judge import CacheJudge
from dcodex.services.cache.metrics import CacheMetrics
from dcodex.services.cache.replicas import gather, gather_counts, summed
from dcodex.services.cache.results import BucketUnavailable, ResultStore
from dcodex.services.cache.run_ahead import RunAhead, RunAheadGate
from dcodex.shared import bus
from dcodex.shared.bus.watch import followed, watched_request
from dcodex.shared.codec import CONTENT_TYPE_HEADER, JSON, MSGPACK, REQUEST_ID_HEADER, encode
from dcodex.shared.contract import (
    UNCACHEABLE_STATUSES,
    CacheStats,
    EffectiveLimits,
    ExecuteRequest,
    ExecutionResult,
    LanguageInfo,
    LanguagesReply,
    PurgeReply,
    PurgeRequest,
    RunStatusRequest,
)
from dcodex.shared.errors import UNAVAILABLE, DcodexError
from dcodex.shared.logging import note
from dcodex.shared.results import RESULTS_BUCKET, pack, settle_request, unpack, unpack_stored
from dcodex.shared.service import micro
from dcodex.shared.service.config import Settings, check_sizes
from dcodex.shared.service.events import EventPublisher, replay
from dcodex.shared.service.executions import Executions, owned_key
from dcodex.shared.service.health import Check
from dcodex.shared.service.lifecycle import Service
from dcodex.shared.service.live_runs import LiveRuns
from dcodex.shared.service.single_flight import SingleFlight
from dcodex.shared.subjects import (
    CACHE,
    CACHE_FORGET,
    CACHE_PURGE,
    CACHE_STATS,
    EXECUTE,
    EXECUTE_STATUS,
    JUDGE,
    LANGUAGES,
    RUN,
    RUN_STATUS,
)
from dcodex.shared.version import version

NAME = CACHE.micro_name
PUT_HEADROOM = 4096  # bytes of a KV put besides the value: subject and headers
# A lease is renewed every third of it while its run lasts: a dead replica's lease is
# gone (and those waiting on it go ahead) within this, however long runs may be.
DEFAULT_LEASE_S = 10.0
# Leases a replica waits on, one after another, before it runs the request regardless.
LEASE_ROUNDS = 3
# How long a purge waits for the puts of results already answered.
SETTLE_WAIT_S = 5.0

log = structlog.get_logger("dcodex.cache")
T = TypeVar("T")


@dataclass(frozen=True)
class Outcome:
    """The result a request gets from a run: whether it was stored, and run for it here."""

    result: ExecutionResult
    kept: bool
    ran_here: bool


# A request's language, effective limits and cache key (None: not to be looked up).
Settled = tuple[LanguageInfo, EffectiveLimits, str | None]
# Requests whose settlement is remembered: at most this many, of at most this size.
SETTLED_MAX = 4096
SETTLED_MAX_CHARS = 2048


@dataclass(frozen=True)
class Checked:
    """A request found valid and within the server's sizes."""

    request: ExecuteRequest  # as asked
    execution_id: str  # the request's, or a new one
    fingerprint: str  # what a request asking for the same execution id must match


@dataclass(frozen=True)
class Prepared(Checked):
    """A checked request with its language, effective limits and cache key settled."""

    language: LanguageInfo
    limits: EffectiveLimits
    key: str | None  # None: not looked up (the cache off, or an interactive run)


def lease_seconds(settings: Settings) -> float:
    """How long a lease lasts without renewal (its leader renews it while it runs)."""
    if settings.cache_lease_seconds is not None:
        return settings.cache_lease_seconds
    return DEFAULT_LEASE_S


class Cache:
    def __init__(
        self, settings: Settings, nc: NATS, store: ResultStore, inflight: Inflight
    ) -> None:
        self.settings = settings
        self.nc = nc
        self.store = store
        self.inflight = inflight
        # Results served or stored lately, for hits without a JetStream read.
        self.hot = HotResults(settings.cache_memory_bytes)
        self._languages: LanguagesReply | None = None
        self._languages_at = 0.0
        # What requests asked again settle to, under the runners' answer it was worked
        # out with (`_settle`).
        self._settled_by_request: dict[tuple[str | None, str], Settled] = {}
        self._settled_for: LanguagesReply | None = None
        # Per key: the one run's outcome, shared by the requests that arrive while it runs.
        self._in_flight: SingleFlight[str, Outcome] = SingleFlight()
        self.run_ahead_gate = RunAheadGate(settings.cache_run_ahead)
        self._running_ahead: set[str] = set()  # keys whose requests ran ahead, under way
        # Per execution id: the requests this replica answers (dcodex.status.execute[.<tenant>]).
        self.executions = Executions()
        self.counts: collections.Counter[str] = collections.Counter()
        self.live_runs = LiveRuns()
        self.metrics = CacheMetrics(version())
        self.metrics.expect_downstream([settings.subject(RUN), settings.subject(LANGUAGES)])
        # Results answered whose put (and lease's end) is still under way.
        self._settling: set[asyncio.Future[None]] = set()
        # Leases claimed ahead of a lookup that found the result, being ended.
        self._releasing: set[asyncio.Task[None]] = set()
        self.judging = CacheJudge(settings, nc, store, self._runner_info, self._count)

    def endpoints(self) -> list[micro.Endpoint]:
        subject = self.settings.subject
        return [
            *micro.endpoints_of(EXECUTE, subject(EXECUTE), self.execute, self.quick),
            *micro.endpoints_of(CACHE_STATS, subject(CACHE_STATS), self.stats),
            *micro.endpoints_of(CACHE_PURGE, subject(CACHE_PURGE), self.purge),
            *micro.endpoints_of(CACHE_FORGET, subject(CACHE_FORGET), self.forget),
            *micro.endpoints_of(EXECUTE_STATUS, subject(EXECUTE_STATUS), self.status),
            *micro.endpoints_of(JUDGE, subject(JUDGE), self.judging.judge),
        ]

    async def status(self, call: micro.Call) -> BaseModel:
        """What became of an execution this replica has; silence when it has none by that id.

        Clients ask here: on `dcodex.status.execute.<tenant>` (only that tenant may ask
        there) for that tenant's executions only, on `dcodex.status.execute` for those of
        no tenant. The tenant is the subject's, never the payload's.
        """
        asked = RunStatusRequest.model_validate(call.payload)
        if asked.tenant not in (None, call.tenant):
            raise micro.NoReply  # another tenant's (or, on the plain subject, any tenant's)
        status = self.executions.status(owned_key(asked.execution_id, call.tenant))
        if status is None:
            raise micro.NoReply
        return status.model_copy(update={"execution_id": asked.execution_id})

    def quick(self, call: micro.Call) -> BaseModel | micro.Call:
        """A hit in this replica's memory, answered where the request arrives (no task,
        nothing waited on); anything else goes on to `execute`, as far along as it got."""
        checked = self._checked(call)  # a bad request is told so before anything else
        info = self._fresh_languages()
        if info is None:  # the runners' languages are to be asked again first
            return dataclasses.replace(call, prepared=checked)
        ready = self._settle(checked, call.tenant, info)
        hot = None if ready.key is None else self.hot.get(ready.key)
        # A replay's events wait on the bus; an id asked again joins the one it names.
        owned = owned_key(ready.execution_id, call.tenant)
        if hot is None or ready.request.stream or self.executions.known(owned, ready.fingerprint):
            return dataclasses.replace(call, prepared=ready)
        result = self._memory_hit(hot, ready.execution_id)
        self.executions.keep(owned, ready.fingerprint, result)
        return result

    async def execute(self, call: micro.Call) -> BaseModel:
        ready = call.prepared
        if not isinstance(ready, Prepared):
            checked = ready if isinstance(ready, Checked) else self._checked(call)
            ready = self._settle(checked, call.tenant, await self._runner_info(call.request_id))
        execution_id = ready.execution_id

        async def work() -> ExecutionResult:
            with self.live_runs.claim(call.tenant, execution_id):
                return await self._execute(ready, call)

        # A tenant's executions are its own: kept under the tenant's key, which only
        # that tenant's status subject names.
        return await self.executions.once(
            owned_key(execution_id, call.tenant), ready.fingerprint, work
        )

    def _checked(self, call: micro.Call) -> Checked:
        """`call`'s request, valid and within the server's sizes (else a 400 or 413)."""
        request = ExecuteRequest.model_validate(call.payload)
        check_sizes(request.code, request.stdin, self.settings)
        fingerprint = request.model_dump_json(exclude={"execution_id"})
        return Checked(request, request.execution_id or bus.new_id(), fingerprint)

    def _settle(self, checked: Checked, tenant: str | None, info: LanguagesReply) -> Prepared:
        """A checked request with its language, limits and key settled: remembered for
        small requests asked again (the same fingerprint, tenant and runners' answer),
        which is what repeated requests (hits) are."""
        if info is not self._settled_for:
            self._settled_by_request.clear()
            self._settled_for = info
        request, fingerprint = checked.request, checked.fingerprint
        settled = self._settled_by_request.get((tenant, fingerprint))
        if settled is None:
            settled = settle_request(request, info, tenant)
            if len(fingerprint) <= SETTLED_MAX_CHARS:
                if len(self._settled_by_request) >= SETTLED_MAX:
                    self._settled_by_request.clear()
                self._settled_by_request[(tenant, fingerprint)] = settled
        return Prepared(request, checked.execution_id, fingerprint, *settled)

    async def _execute(self, ready: Prepared, call: micro.Call) -> ExecutionResult:
        request = ready.request.model_copy(
            update={"execution_id": ready.execution_id, "language": ready.language.id}
        )
        if ready.key is None:
            self._count("bypass")
            return await self._run(request, call)
        with structlog.contextvars.bound_contextvars(execution_id=ready.execution_id):
            return await self._cached(ready.key, request, call, ready.language.compiled)

    async def _cached(
        self, key: str, request: ExecuteRequest, call: micro.Call, compiled: bool
    ) -> ExecutionResult:
        assert request.execution_id is not None
        hot = self.hot.get(key)
        if hot is not None:
            result = self._memory_hit(hot, request.execution_id)
            return await self._replayed(result, request, call, compiled)
        # The lease a miss needs goes out with the lookup: one round trip, not two.
        ahead = self._claim_ahead(key, request.execution_id)
        run_ahead = self._run_ahead(key, request, call, ahead)
        try:
            return await self._looked_up_or_run(key, request, call, compiled, ahead, run_ahead)
        finally:
            run_ahead.drop()  # not this request's to run, if it was not taken
            if run_ahead.sent:
                self._running_ahead.discard(key)

    async def _looked_up_or_run(
        self,
        key: str,
        request: ExecuteRequest,
        call: micro.Call,
        compiled: bool,
        ahead: asyncio.Task[Claim] | None,
        run_ahead: RunAhead,
    ) -> ExecutionResult:
        assert request.execution_id is not None
        try:
            stored = await self._looked_up(key)
        except BaseException:
            self._drop(ahead)
            raise
        if stored is not None:
            self._drop(ahead)
            self._count("hit")
            self.run_ahead_gate.record(led=False)
            result, stored_at = unpack_stored(stored, request.execution_id, key)
            if stored_at is not None:
                self._keep_hot(key, result, len(stored), stored_at)
            return await self._replayed(result, request, call, compiled)
        sharing = self._in_flight.running(key)  # what `run` finds: nothing runs between
        try:
            outcome, shared = await self._in_flight.run(
                key, lambda: self._coalesced_run(key, request, call, ahead, run_ahead)
            )
        except BaseException:
            if sharing:  # the run this request shared failed: its claim was not used
                self._drop(ahead)
            raise
        if shared:  # another request of this replica ran it: the claim was not used
            self._drop(ahead)
        ran_here = outcome.ran_here and not shared
        self.run_ahead_gate.record(led=ran_here)
        self._count("miss" if ran_here else "coalesced")
        # A shared result is a hit when it is now in the cache, as the next request's would be.
        result = outcome.result.model_copy(
            update={
                "execution_id": request.execution_id,
                "cache_hit": outcome.kept and not ran_here,
                "cache_key": key,
            }
        )
        # The one that ran streamed live from the runner; those that shared its run replay.
        return result if ran_here else await self._replayed(result, request, call, compiled)

    def _memory_hit(self, hot: ExecutionResult, execution_id: str) -> ExecutionResult:
        self._count("hit")
        self.metrics.memory_hits.inc()
        return hot.model_copy(update={"execution_id": execution_id})

    async def _looked_up(self, key: str) -> bytes | None:
        """The stored result of `key`; None when there is none, or the bucket is away."""
        try:
            return await self.store.get(key)
        except BucketUnavailable:
            self.counts["passthrough"] += 1
            self.metrics.passthrough.inc()
            note(passthrough=True)
            return None

    def _claim_ahead(self, key: str, execution_id: str) -> asyncio.Task[Claim] | None:
        """The claim of `key`'s lease, sent now, alongside the lookup; None when a request
        of this replica is running the key already (this one will share that run)."""
        if self._in_flight.running(key):
            return None
        return asyncio.create_task(self.inflight.claim(key, execution_id))

    def _run_ahead(
        self,
        key: str,
        request: ExecuteRequest,
        call: micro.Call,
        ahead: asyncio.Task[Claim] | None,
    ) -> RunAhead:
        """The run sent to the runners with the lookup, when this replica's lookups keep
        missing (`RunAheadGate`). Never for a request that streams (its live events
        could not be taken back) or whose key a request of this replica runs already
        (`ahead` is None then: it shares that run), or runs ahead already: identical
        requests arriving together send one run, whose lookup is still under way."""
        if (
            ahead is None
            or request.stream
            or key in self._running_ahead
            or not self.run_ahead_gate.open
        ):
            return RunAhead()
        self._running_ahead.add(key)
        self.run_ahead_gate.sent()
        note(run_ahead=True)
        task = asyncio.create_task(self._run(request, call, key))
        return RunAhead(task, self._run_ahead_counted)

    def _run_ahead_counted(self, outcome: str) -> None:
        """A run ahead taken or dropped (whatever ended its request: an error too)."""
        self.metrics.run_ahead.labels(outcome).inc()
        self.run_ahead_gate.settled(used=outcome == "used")
        if outcome == "unused":
            note(run_ahead="unused")

    def _drop(self, ahead: asyncio.Task[Claim] | None) -> None:
        """End the lease a claim sent ahead takes, if it takes one, since the request
        needs none (a hit, or shared in this replica). Replicas that waited on it look
        the result up."""
        if ahead is not None:
            ahead.add_done_callback(self._release_unused)

    def _release_unused(self, claimed: asyncio.Task[Claim]) -> None:
        if claimed.cancelled() or claimed.exception() is not None:
            return  # no lease taken (the bucket is away: `InflightUnavailable`)
        lease = claimed.result()
        if isinstance(lease, Lease):
            releasing = asyncio.create_task(self.inflight.release(lease))
            self._releasing.add(releasing)
            releasing.add_done_callback(self._releasing.discard)

    async def _coalesced_run(
        self,
        key: str,
        request: ExecuteRequest,
        call: micro.Call,
        ahead: asyncio.Task[Claim] | None,
        run_ahead: RunAhead,
    ) -> Outcome:
        """Run `request` (or take its run ahead), or share the run another replica
        holds the lease on; `ahead`, the first claim, already sent."""
        assert request.execution_id is not None  # execute() always sets it
        abandoned = Abandoned()  # the execution a lease that ended without an outcome named
        for _ in range(LEASE_ROUNDS):
            try:
                naming = abandoned.execution_id or request.execution_id
                if ahead is not None:
                    lease, ahead = await ahead, None
                else:
                    lease = await self.inflight.claim(key, naming)
                if isinstance(lease, Finished):
                    # Just stored by another run (after our lookup missed it), unless it
                    # was purged or expired since: then it is ours to run again.
                    stored = await self._stored(key)
                    if stored is not None:
                        return Outcome(unpack(stored, request.execution_id, key), True, False)
                    lease = await self.inflight.claim(
                        key, request.execution_id, share_finished=False
                    )
                if isinstance(lease, Lease):
                    self.metrics.leases.labels("led").inc()
                    return await self._lead(lease, key, request, call, run_ahead)
                assert not isinstance(lease, Finished)
                finished = await self.inflight.wait(key)
            except InflightUnavailable:
                self.metrics.leases.labels("unavailable").inc()
                note(lease="unavailable")  # coalesced on this replica only (dcodex chaos)
                break
            if isinstance(finished, Finished):
                self.metrics.leases.labels("followed").inc()
                return self._followed(finished)
            # The lease ended without an outcome (its replica died or gave up). It may
            # have stored the result first; if not, claim the lease, naming the run it
            # named: the new leader asks the runners for that run before running again.
            self.metrics.leases.labels("lost").inc()
            log.info("lease_lost", key=key, abandoned_execution_id=finished.execution_id)
            stored = await self._stored(key)
            if stored is not None:
                return Outcome(unpack(stored, request.execution_id, key), True, False)
            abandoned = finished
        result, kept = await self._run_and_store(key, request, call, run_ahead)
        return Outcome(result, kept, True)

    async def _lead(
        self,
        lease: Lease,
        key: str,
        request: ExecuteRequest,
        call: micro.Call,
        run_ahead: RunAhead,
    ) -> Outcome:
        """Run under `lease` (renewed as long as the run lasts), then end it with the
        outcome for the replicas waiting on it. A lease taken over from a dead replica
        names that replica's run: its result is taken when a runner still has it."""
        held = HeldLease(self.inflight, lease)
        try:
            async with held:  # renewal stops before the lease is ended
                adopted = await self._adopted(lease.execution_id, request, call)
                result = (
                    adopted
                    if adopted is not None
                    else await run_ahead.result(lambda: self._run(request, call, key))
                )
        except DcodexError as exc:
            await self.inflight.finish(held.lease, Finished(error=exc))
            raise
        except BaseException:
            await self.inflight.release(held.lease)
            raise
        kept = self._store_after_reply(key, result, call, held)
        return Outcome(result, kept, ran_here=adopted is None)

    async def _adopted(
        self, execution_id: str, request: ExecuteRequest, call: micro.Call
    ) -> ExecutionResult | None:
        """The result of `execution_id`, the run a dead replica led, if a runner still
        has it (under way, or finished a moment ago); None when it is not another's run
        or no runner has it: then it is run again."""
        if execution_id == request.execution_id:
            return None
        reply = await followed(
            self.nc,
            self.settings.subject(RUN_STATUS),
            execution_id,
            request_id=call.request_id,
            timeout=self.settings.request_timeout_seconds,
            tenant=call.tenant,
        )
        if reply is None:
            return None
        self.metrics.leases.labels("adopted").inc()
        log.info("run_adopted", adopted_execution_id=execution_id)
        return ExecutionResult.model_validate(reply)

    @staticmethod
    def _followed(finished: Finished) -> Outcome:
        if finished.error is not None:
            raise finished.error
        assert finished.result is not None
        return Outcome(finished.result, finished.kept, False)

    async def _stored(self, key: str) -> bytes | None:
        try:
            return await self.store.get(key)
        except BucketUnavailable:
            return None

    async def _replayed(
        self, result: ExecutionResult, request: ExecuteRequest, call: micro.Call, compiled: bool
    ) -> ExecutionResult:
        """`result`, after its events when the request streams (docs/protocol.md, live events)."""
        if request.stream and request.execution_id is not None:  # execute() always sets it
            subject = self.settings.output_subject(request.execution_id, call.tenant)
            await replay(EventPublisher(self.nc, subject, call.encoding), result, compiled)
        return result

    async def _run_and_store(
        self, key: str, request: ExecuteRequest, call: micro.Call, run_ahead: RunAhead
    ) -> tuple[ExecutionResult, bool]:
        result = await run_ahead.result(lambda: self._run(request, call, key))
        return result, self._store_after_reply(key, result, call)

    def _store_after_reply(
        self, key: str, result: ExecutionResult, call: micro.Call, held: HeldLease | None = None
    ) -> bool:
        """Whether `result` is to be kept under `key`. It is in this replica's memory at
        once; the bucket's put, then the end of the lease with the outcome, happen once
        the reply is on its way (two JetStream round trips the requester does not wait
        for). Until then the lease stands: another replica asking for the same key
        waits for the outcome, as it did while the program ran."""
        packed = self._packed(result)
        if packed is not None:
            hit = result.model_copy(update={"cache_hit": True, "cache_key": key})
            self._keep_hot(key, hit, len(packed), time.time())
        settled = asyncio.get_running_loop().create_future()
        self._settling.add(settled)

        async def settle() -> None:
            try:
                kept = packed is not None and await self._put(key, result, packed)
                if held is not None:
                    await self.inflight.finish(held.lease, Finished(result, kept))
            finally:
                self._settling.discard(settled)
                settled.set_result(None)

        call.after_reply.append(settle)
        return packed is not None

    def _packed(self, result: ExecutionResult) -> bytes | None:
        """`result` as stored, or None when the policy keeps it out of the bucket."""
        if result.status in UNCACHEABLE_STATUSES:
            self._not_stored("verdict")
            return None
        if not result.separated_from_other_runs():
            # Under `rlimits` isolation an earlier run may have shaped this one.
            self._not_stored("isolation", layers=result.isolation)
            return None
        packed = pack(result)
        # Above the server's max payload a put would fail and look like a lost bucket.
        largest = min(self.settings.cache_max_result_bytes, self.nc.max_payload - PUT_HEADROOM)
        if len(packed) > largest:
            self._not_stored("too_large", size=len(packed))
            return None
        return packed

    async def _put(self, key: str, result: ExecutionResult, packed: bytes) -> bool:
        """Whether the bucket took it; if not, memory forgets it too (a copy only)."""
        try:
            await self.store.put(key, packed)
        except BucketUnavailable:
            self.hot.forget(key)
            self.metrics.not_stored.labels("unavailable").inc()
            # After the reply, so a line of its own (`dcodex chaos` reads it).
            log.info(
                "result_not_stored",
                reason="unavailable",
                cache_key=key,
                execution_id=result.execution_id,
            )
            return False
        return True

    async def _settled(self) -> None:
        """Until the puts of results already answered are done (a purge waits for them:
        a put landing after it would bring a purged result back)."""
        if self._settling:
            await asyncio.wait(set(self._settling), timeout=SETTLE_WAIT_S)

    def _keep_hot(self, key: str, result: ExecutionResult, size: int, stored_at: float) -> None:
        """In memory until its stored copy expires (the bucket's max age from its put)."""
        self.hot.put(key, result, size, stored_at + self.settings.cache_ttl_seconds)

    def _not_stored(self, reason: str, **fields: object) -> None:
        self.metrics.not_stored.labels(reason).inc()
        note(not_stored=reason)  # `dcodex chaos` tells a program run again uncached by it
        log.debug("result_not_stored", reason=reason, **fields)

    def _count(self, outcome: str) -> None:
        self.counts[outcome] += 1
        self.metrics.lookups_by_outcome[outcome].inc()
        note(cache=outcome)  # in the request's own line: no line of its own

    async def _run(
        self, request: ExecuteRequest, call: micro.Call, key: str | None = None
    ) -> ExecutionResult:
        # Forwarded in the client's encoding: the runner streams events in it
        # (docs/protocol.md, live events).
        assert request.execution_id is not None  # execute() always sets it
        # On the tenant's subject: the runner publishes on that tenant's live subjects.
        subject = RUN.for_tenant(self.settings.subject_prefix, call.tenant)
        # Watched: a runner that dies, or a reply lost in a NATS restart, costs seconds.
        reply = await watched_request(
            self.nc,
            subject,
            self.settings.subject(RUN_STATUS),
            request,
            execution_id=request.execution_id,
            request_id=call.request_id,
            timeout=self.settings.request_timeout_seconds,
            encoding=call.encoding,
            cache_key=key,
            observe=self._run_answered,
            tenant=call.tenant,  # dcodex.status.run is the services' alone: tenants too
        )
        return ExecutionResult.model_validate(reply)

    def _run_answered(self, _subject: str, outcome: str, seconds: float) -> None:
        """Counted under the plain subject: no tenant becomes a label."""
        self.metrics.downstream_answered(self.settings.subject(RUN), outcome, seconds)

    async def _runner_info(self, request_id: str) -> LanguagesReply:
        """Languages, versions and limits as the runners report them.

        Refreshed every `languages_refresh_seconds`; when no runner answers a refresh the last known
        answer is kept, so cache hits go on being served while every runner is down.
        """
        fresh = self._fresh_languages()
        if fresh is not None:
            return fresh
        now = time.monotonic()
        try:
            reply = await bus.request(
                self.nc,
                self.settings.subject(LANGUAGES),
                {},
                request_id=request_id,
                timeout=5.0,
                encoding=MSGPACK,
                observe=self.metrics.downstream_answered,
            )
        except DcodexError:
            if self._languages is None:
                raise
            log.warning("languages_refresh_failed")
            return self._languages
        self._languages = LanguagesReply.model_validate(reply)
        self._languages_at = now
        return self._languages

    def _fresh_languages(self) -> LanguagesReply | None:
        """The runners' languages while not yet due for a refresh."""
        if self._languages is None:
            return None
        if time.monotonic() - self._languages_at >= self.settings.languages_refresh_seconds:
            return None
        return self._languages

    async def stats(self, call: micro.Call) -> BaseModel:
        state = await self._bucket_call(self.store.state())
        replicas = await gather_counts(self.nc, NAME, self.settings.subject(EXECUTE))
        counts = summed(replicas or [dict(self.counts)])
        return CacheStats(
            entries=state.messages,
            bytes=state.bytes,
            hits=counts["hit"],
            misses=counts["miss"],
            coalesced=counts["coalesced"],
            passthrough=counts["passthrough"],
            replicas=max(len(replicas), 1),
        )

    def replica_counts(self, endpoint: EndpointStats) -> dict[str, int] | None:
        """This replica's counts, published as the `execute` endpoint's `$SRV.STATS` data."""
        return dict(self.counts) if endpoint.name == "execute" else None

    async def purge(self, call: micro.Call) -> BaseModel:
        request = PurgeRequest.model_validate(call.payload)
        # Every replica's answered puts land first, then the bucket is purged, then
        # every replica's memory drops what was kept in between.
        await self._forget_everywhere(request, call.request_id)
        purged = await self._bucket_call(self.store.purge(request.key))
        await self._forget_everywhere(request, call.request_id)
        return PurgeReply(purged=purged)

    async def _forget_everywhere(self, request: PurgeRequest, request_id: str) -> None:
        """Every replica's memory drops what was purged before the purge is answered:
        no replica serves a purged result from memory afterwards."""
        await self._settled()
        self.hot.forget(request.key)
        replicas = await gather_counts(self.nc, NAME, self.settings.subject(EXECUTE))
        headers = {CONTENT_TYPE_HEADER: JSON, REQUEST_ID_HEADER: request_id}
        answers = await gather(
            self.nc,
            self.settings.subject(CACHE_FORGET),
            encode(request, JSON),
            headers=headers,
            expected=len(replicas),
        )
        if len(answers) < len(replicas):
            log.warning("replicas_not_forgotten", replicas=len(replicas), answered=len(answers))

    async def forget(self, call: micro.Call) -> BaseModel:
        """Drop the purged results from this replica's memory (`dcodex.cache.forget`)."""
        request = PurgeRequest.model_validate(call.payload)
        await self._settled()
        return PurgeReply(purged=self.hot.forget(request.key))

    @staticmethod
    async def _bucket_call(work: Awaitable[T]) -> T:
        try:
            return await work
        except BucketUnavailable as exc:
            raise DcodexError(
                UNAVAILABLE, f"the result bucket {RESULTS_BUCKET} is unavailable"
            ) from exc


async def start(settings: Settings) -> Service:
    nc = await bus.open_connection(settings.connect_options(), NAME, log_events=True)
    store = ResultStore(nc.jetstream(), settings.cache_ttl_seconds, settings.cache_max_bytes)
    if not await store.open():
        log.warning("starting_without_results_bucket", bucket=RESULTS_BUCKET)
    largest = nc.max_payload - PUT_HEADROOM
    inflight = Inflight(nc.jetstream(), lease_seconds(settings), settings.cache_max_bytes, largest)
    if not await inflight.open():
        log.warning("starting_without_inflight_bucket", bucket=INFLIGHT_BUCKET)
    cache = Cache(settings, nc, store, inflight)
    running = await micro.start_micro_service(
        nc,
        name=NAME,
        version=version(),
        description="Read-through result cache in front of the runners",
        endpoints=cache.endpoints(),
        metadata={
            "bucket": RESULTS_BUCKET,
            "ttl_seconds": f"{settings.cache_ttl_seconds:g}",
            "lease_seconds": f"{inflight.lease_s:g}",
        },
        stats_handler=cache.replica_counts,
        observer=cache.metrics.request_answered,
        subject_prefix=settings.subject_prefix,
    )
    cache.metrics.watch_connection(nc)
    bucket = Check(f"the result bucket {RESULTS_BUCKET}", store.state)
    return Service(NAME, nc, running, cache.metrics.registry, ready_checks=[bucket])
