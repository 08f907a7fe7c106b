"""The cache's JetStream KV buckets: declared on first use, and healed when lost.

Both buckets (`dcodex-results` and `dcodex-inflight`) are KV buckets whose oldest
entries go first when full, and both are treated the same way when a read or write
fails because the bucket is gone or JetStream is down: the cache leaves the bucket
alone for `REOPEN_AFTER_S` (so requests are not each slowed by a timeout), then
declares it again, which re-creates a deleted one. The cache heals without an operator.
"""

from __future__ import annotations

import time

import nats.errors
import nats.js.errors
import structlog
from nats.js.api import DiscardPolicy, StorageType, StreamConfig
from nats.js.client import JetStreamContext
from nats.js.kv import KeyValue

REOPEN_AFTER_S = 1.0

log = structlog.get_logger("dcodex.cache")


async def declare_kv_bucket(
    js: JetStreamContext, bucket: str, description: str, max_age_s: float, max_bytes: int
) -> KeyValue:
    """A KV bucket whose oldest entries are dropped when it is full.

    nats-py's `create_key_value` always discards NEW messages when the bucket is full,
    which would stop caching once it fills; a cache wants the oldest dropped, so the
    bucket's stream is declared here with `DiscardPolicy.OLD`.
    """
    stream = f"KV_{bucket}"
    config = StreamConfig(
        name=stream,
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
        config.num_replicas = (await js.stream_info(stream)).config.num_replicas
        await js.update_stream(config)
    return await js.key_value(bucket)


class ReopeningBucket:
    """One bucket as the cache uses it: `kv()` to use it, `lost(exc)` when it failed."""

    def __init__(
        self,
        js: JetStreamContext,
        bucket: str,
        description: str,
        max_age_s: float,
        max_bytes: int,
        unavailable: type[Exception],
        log_name: str,
    ) -> None:
        self.bucket = bucket
        self._declare = (js, bucket, description, max_age_s, max_bytes)
        self._unavailable = unavailable  # what callers catch for this bucket
        self._log_name = log_name
        self._kv: KeyValue | None = None
        self._reopen_at = 0.0

    async def kv(self) -> KeyValue:
        if self._kv is not None:
            return self._kv
        if time.monotonic() < self._reopen_at:
            raise self._unavailable(f"{self.bucket} was unavailable moments ago")
        try:
            self._kv = await self.declare()
        except (nats.errors.Error, TimeoutError) as exc:
            raise self.lost(exc) from exc
        log.info(f"{self._log_name}_bucket_open", bucket=self.bucket)
        return self._kv

    async def declare(self) -> KeyValue:
        """Create the bucket, or bring it to this configuration (errors as they come)."""
        return await declare_kv_bucket(*self._declare)

    def lost(self, exc: BaseException) -> Exception:
        """Forget the bucket for a while; the exception to raise in its place."""
        self._kv = None
        self._reopen_at = time.monotonic() + REOPEN_AFTER_S
        log.warning(f"{self._log_name}_bucket_unavailable", bucket=self.bucket, error=repr(exc))
        return self._unavailable(f"{self.bucket} is unavailable: {exc!r}")

    async def open(self) -> bool:
        """Declare the bucket now; whether that worked (a service starts either way)."""
        try:
            await self.kv()
        except self._unavailable:
            return False
        return True
