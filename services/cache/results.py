"""The JetStream KV bucket of results, `dcodex-results`, and the cache's view of it."""

from __future__ import annotations

import time

import msgpack
import nats.errors
import nats.js.errors
import structlog
from nats.js.api import DiscardPolicy, StorageType, StreamConfig, StreamState
from nats.js.client import JetStreamContext
from nats.js.kv import KeyValue

from dcodex.shared.contract import ExecutionResult

RESULTS_BUCKET = "dcodex-results"
RESULTS_STREAM = f"KV_{RESULTS_BUCKET}"  # the stream behind the bucket
# How long the cache goes without the bucket after losing it before it tries again.
REOPEN_AFTER_S = 1.0

log = structlog.get_logger("dcodex.cache")


async def open_results_bucket(js: JetStreamContext, ttl_s: float, max_bytes: int) -> KeyValue:
    """Create (or bring to this configuration) the results bucket."""
    return await declare_kv_bucket(
        js, RESULTS_BUCKET, "DCodeX execution results by cache key", ttl_s, max_bytes
    )


async def declare_kv_bucket(
    js: JetStreamContext, bucket: str, description: str, max_age_s: float, max_bytes: int
) -> KeyValue:
    """A KV bucket whose oldest entries are dropped when it is full.

    nats-py's `create_key_value` always discards NEW messages when the bucket is full,
    which would stop caching once it fills; a cache wants the oldest dropped, so the
    bucket's stream is declared here with `DiscardPolicy.OLD`.
    """
    config = StreamConfig(
        name=f"KV_{bucket}",
        description=description,
        subjects=[f"$KV.{bucket}.>"],
        max_msgs_per_subject=1,
        max_age=max_age_s,
        max_bytes=max_bytes,
        discard=DiscardPolicy.OLD,
        storage=StorageType.FILE,
        allow_rollup_hdrs=True,
        allow_direct=True,
        deny_delete=True,
        duplicate_window=min(max_age_s, 120.0),
        num_replicas=1,
    )
    try:
        await js.add_stream(config)
    except nats.js.errors.BadRequestError:
        # Keep the replicas the bucket was given (deploy/nats/buckets.py makes it R3).
        config.num_replicas = (await js.stream_info(f"KV_{bucket}")).config.num_replicas
        await js.update_stream(config)
    return await js.key_value(bucket)


class BucketUnavailable(Exception):
    """The results bucket is missing or JetStream does not answer."""


class ResultStore:
    """The results bucket as the cache uses it: a lost bucket is reported, not fatal.

    When a read or write fails because the bucket is gone or JetStream is down, the
    store stops touching it for `REOPEN_AFTER_S` (so requests are not each slowed by a
    timeout) and then declares the bucket again, which re-creates a deleted one: the
    cache heals without an operator.
    """

    def __init__(self, js: JetStreamContext, ttl_s: float, max_bytes: int) -> None:
        self._js = js
        self._ttl_s = ttl_s
        self._max_bytes = max_bytes
        self._kv: KeyValue | None = None
        self._reopen_at = 0.0

    async def _bucket(self) -> KeyValue:
        if self._kv is not None:
            return self._kv
        if time.monotonic() < self._reopen_at:
            raise BucketUnavailable(f"{RESULTS_BUCKET} was unavailable moments ago")
        try:
            self._kv = await open_results_bucket(self._js, self._ttl_s, self._max_bytes)
        except (nats.errors.Error, TimeoutError) as exc:
            raise self._lost(exc) from exc
        log.info("results_bucket_open", bucket=RESULTS_BUCKET)
        return self._kv

    def _lost(self, exc: BaseException) -> BucketUnavailable:
        self._kv = None
        self._reopen_at = time.monotonic() + REOPEN_AFTER_S
        log.warning("results_bucket_unavailable", bucket=RESULTS_BUCKET, error=repr(exc))
        return BucketUnavailable(f"{RESULTS_BUCKET} is unavailable: {exc!r}")

    async def open(self) -> bool:
        """Declare the bucket now; whether that worked (a service starts either way)."""
        try:
            await self._bucket()
        except BucketUnavailable:
            return False
        return True

    async def get(self, key: str) -> bytes | None:
        kv = await self._bucket()
        try:
            entry = await kv.get(key)
        except nats.js.errors.KeyNotFoundError:
            # Also what nats-py raises for a bucket deleted behind a non-direct read.
            return None
        except (nats.errors.Error, TimeoutError) as exc:
            raise self._lost(exc) from exc
        return entry.value

    async def put(self, key: str, value: bytes) -> None:
        kv = await self._bucket()
        try:
            await kv.put(key, value)
        except (nats.errors.Error, TimeoutError) as exc:
            raise self._lost(exc) from exc

    async def state(self) -> StreamState:
        await self._bucket()
        try:
            return (await self._js.stream_info(RESULTS_STREAM)).state
        except (nats.errors.Error, TimeoutError) as exc:
            raise self._lost(exc) from exc

    async def purge(self, key: str | None) -> int:
        """Drop every result, or the one under `key`; how many were dropped.

        Purging the stream (or one subject of it) leaves no delete markers behind.
        """
        before = (await self.state()).messages
        try:
            if key is None:
                await self._js.purge_stream(RESULTS_STREAM)
            else:
                await self._js.purge_stream(RESULTS_STREAM, subject=f"$KV.{RESULTS_BUCKET}.{key}")
        except (nats.errors.Error, TimeoutError) as exc:
            raise self._lost(exc) from exc
        return before - (await self.state()).messages


def pack(result: ExecutionResult) -> bytes:
    data = result.model_dump(mode="json", exclude={"execution_id", "cache_hit", "cache_key"})
    packed: bytes = msgpack.packb(data, use_bin_type=True)
    return packed


def unpack(data: bytes, execution_id: str, key: str) -> ExecutionResult:
    stored = msgpack.unpackb(data, raw=False)
    return ExecutionResult.model_validate(
        {**stored, "execution_id": execution_id, "cache_hit": True, "cache_key": key}
    )
