"""The cache: the front door (`dcodex.execute`), read-through over the KV bucket.

A hit never reaches a runner. A miss is forwarded to `dcodex.run`; identical requests
that arrive while it runs wait for that one result (coalescing). Effective limits and
toolchain versions, which the key depends on, come from the runners' `dcodex.languages`.
"""

from __future__ import annotations

import collections
import time

import nats.errors
import nats.js.errors
import structlog
from nats.aio.client import Client as NATS
from nats.js.kv import KeyValue
from prometheus_client import CollectorRegistry, Counter
from pydantic import BaseModel

from dcodex.services.cache.keys import cache_key
from dcodex.services.cache.results import (
    RESULTS_BUCKET,
    RESULTS_STREAM,
    open_results_bucket,
    pack,
    unpack,
)
from dcodex.shared import bus
from dcodex.shared.codec import MSGPACK
from dcodex.shared.config import Settings, check_sizes
from dcodex.shared.contract import (
    UNCACHEABLE_STATUSES,
    CacheStats,
    ExecuteRequest,
    ExecutionResult,
    LanguagesReply,
    PurgeReply,
    PurgeRequest,
)
from dcodex.shared.errors import DcodexError
from dcodex.shared.service import Service, version
from dcodex.shared.single_flight import SingleFlight

NAME = "dcodex-cache"

log = structlog.get_logger("dcodex.cache")


class Cache:
    def __init__(self, settings: Settings, nc: NATS, results: KeyValue) -> None:
        self.settings = settings
        self.nc = nc
        self.results = results
        self._languages: LanguagesReply | None = None
        self._languages_at = 0.0
        self._in_flight: SingleFlight[str, ExecutionResult] = SingleFlight()
        self.counts: collections.Counter[str] = collections.Counter()
        self.metrics = CollectorRegistry()
        self.lookups = Counter(
            "dcodex_cache_lookups_total",
            "Result cache lookups by outcome (hit, miss, coalesced, bypass)",
            ["outcome"],
            registry=self.metrics,
        )

    def endpoints(self) -> list[bus.Endpoint]:
        subject = self.settings.subject
        return [
            bus.Endpoint("execute", subject("execute"), self.execute),
            bus.Endpoint("stats", subject("cache.stats"), self.stats),
            bus.Endpoint("purge", subject("cache.purge"), self.purge),
        ]

    async def execute(self, call: bus.Call) -> BaseModel:
        request = ExecuteRequest.model_validate(call.payload)
        check_sizes(request.code, request.stdin, self.settings)
        info = await self._runner_info(call.request_id)
        language = info.language(request.language)
        limits = info.limits.defaults.apply(request.limits, info.limits.ceilings)
        request = request.model_copy(
            update={"execution_id": request.execution_id or bus.new_id(), "language": language.id}
        )
        # Streamed runs go to a runner for now: their events come from the run itself.
        if not request.cache or request.interactive or request.stream:
            self._count("bypass")
            return await self._run(request, call)
        key = cache_key(
            language.id, language.version, request.code, request.stdin, request.args, limits
        )
        with structlog.contextvars.bound_contextvars(execution_id=request.execution_id):
            return await self._cached(key, request, call)

    async def _cached(self, key: str, request: ExecuteRequest, call: bus.Call) -> ExecutionResult:
        assert request.execution_id is not None
        stored = await self._get(key)
        if stored is not None:
            self._count("hit")
            return unpack(stored, request.execution_id)
        result, shared = await self._in_flight.run(
            key, lambda: self._run_and_store(key, request, call)
        )
        if not shared:
            self._count("miss")
            return result
        self._count("coalesced")
        # A shared result counts as cached only if it could have been (DESIGN §6).
        cached = result.status not in UNCACHEABLE_STATUSES
        return result.model_copy(update={"execution_id": request.execution_id, "cache_hit": cached})

    async def _run_and_store(
        self, key: str, request: ExecuteRequest, call: bus.Call
    ) -> ExecutionResult:
        result = await self._run(request, call)
        await self._put(key, result)
        return result

    def _count(self, outcome: str) -> None:
        self.counts[outcome] += 1
        self.lookups.labels(outcome).inc()
        log.info("served", cache=outcome)

    async def _run(self, request: ExecuteRequest, call: bus.Call) -> ExecutionResult:
        # Forwarded in the client's encoding: the runner streams events in it (DESIGN §9).
        reply = await bus.request(
            self.nc,
            self.settings.subject("run"),
            request,
            request_id=call.request_id,
            timeout=self.settings.request_timeout_seconds,
            encoding=call.encoding,
        )
        return ExecutionResult.model_validate(reply)

    async def _get(self, key: str) -> bytes | None:
        try:
            entry = await self.results.get(key)
        except nats.js.errors.KeyNotFoundError:
            return None
        except (nats.errors.Error, TimeoutError) as exc:
            # The bucket being unreachable costs a run, not the request.
            log.warning("cache_read_failed", error=repr(exc))
            return None
        return entry.value

    async def _put(self, key: str, result: ExecutionResult) -> None:
        if result.status in UNCACHEABLE_STATUSES:
            return
        try:
            await self.results.put(key, pack(result))
        except (nats.errors.Error, TimeoutError) as exc:
            log.warning("cache_write_failed", error=repr(exc))

    async def _runner_info(self, request_id: str) -> LanguagesReply:
        """Languages, versions and limits as the runners report them.

        Refreshed every `languages_refresh_seconds`; when no runner answers a refresh the last known
        answer is kept, so cache hits go on being served while every runner is down.
        """
        now = time.monotonic()
        fresh_for = self.settings.languages_refresh_seconds
        if self._languages is not None and now - self._languages_at < fresh_for:
            return self._languages
        try:
            reply = await bus.request(
                self.nc,
                self.settings.subject("languages"),
                {},
                request_id=request_id,
                timeout=5.0,
                encoding=MSGPACK,
            )
        except DcodexError:
            if self._languages is None:
                raise
            log.warning("languages_refresh_failed")
            return self._languages
        self._languages = LanguagesReply.model_validate(reply)
        self._languages_at = now
        return self._languages

    async def stats(self, call: bus.Call) -> BaseModel:
        state = (await self.results.status()).stream_info.state
        return CacheStats(
            entries=state.messages,
            bytes=state.bytes,
            hits=self.counts["hit"],
            misses=self.counts["miss"],
            coalesced=self.counts["coalesced"],
        )

    async def purge(self, call: bus.Call) -> BaseModel:
        request = PurgeRequest.model_validate(call.payload)
        js = self.nc.jetstream()
        before = (await self.results.status()).values
        # Purging the stream (or one subject of it) leaves no delete markers behind.
        if request.key is None:
            await js.purge_stream(RESULTS_STREAM)
        else:
            await js.purge_stream(RESULTS_STREAM, subject=f"$KV.{RESULTS_BUCKET}.{request.key}")
        return PurgeReply(purged=before - (await self.results.status()).values)


async def start(settings: Settings) -> Service:
    nc = await bus.connect(settings.nats_url, name=NAME)
    results = await open_results_bucket(
        nc.jetstream(), settings.cache_ttl_seconds, settings.cache_max_bytes
    )
    cache = Cache(settings, nc, results)
    micro = await bus.start_micro_service(
        nc,
        name=NAME,
        version=version(),
        description="Read-through result cache in front of the runners",
        endpoints=cache.endpoints(),
        metadata={"bucket": RESULTS_BUCKET, "ttl_seconds": f"{settings.cache_ttl_seconds:g}"},
    )
    return Service(NAME, nc, micro, cache.metrics)
