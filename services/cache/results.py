"""The JetStream KV bucket of results, `dcodex-results`, and the cache's view of it."""

from __future__ import annotations

import nats.errors
import nats.js.errors
from nats.js.api import StreamState
from nats.js.client import JetStreamContext

from dcodex.services.cache.buckets import ReopeningBucket
from dcodex.shared.results import RESULTS_BUCKET, RESULTS_STREAM, stored_subject


def results_bucket(js: JetStreamContext, ttl_s: float, max_bytes: int) -> ReopeningBucket:
    """The results bucket: its max age is the cache's TTL."""
    description = "DCodeX execution results by cache key"
    return ReopeningBucket(
        js, RESULTS_BUCKET, description, ttl_s, max_bytes, BucketUnavailable, "results"
    )


class BucketUnavailable(Exception):
    """The results bucket is missing or JetStream does not answer."""


class ResultStore:
    """The results bucket as the cache uses it: a lost bucket is reported, not fatal
    (see `buckets.ReopeningBucket`)."""

    def __init__(self, js: JetStreamContext, ttl_s: float, max_bytes: int) -> None:
        self._js = js
        self._bucket = results_bucket(js, ttl_s, max_bytes)

    async def open(self) -> bool:
        """Declare the bucket now; whether that worked (a service starts either way)."""
        return await self._bucket.open()

    async def get(self, key: str) -> bytes | None:
        kv = await self._bucket.kv()
        try:
            entry = await kv.get(key)
        except nats.js.errors.KeyNotFoundError:
            # Also what nats-py raises for a bucket deleted behind a non-direct read.
            return None
        except (nats.errors.Error, TimeoutError) as exc:
            raise self._bucket.lost(exc) from exc
        return entry.value

    async def put(self, key: str, value: bytes) -> None:
        kv = await self._bucket.kv()
        try:
            await kv.put(key, value)
        except (nats.errors.NoRespondersError, nats.js.errors.NoStreamResponseError) as exc:
            # Nobody takes writes right now: on a cluster, the stream is electing a
            # leader. Its replicas still serve reads, so the bucket is not given up
            # (a bucket that is really gone is noticed by the next read).
            raise BucketUnavailable(f"{RESULTS_BUCKET} takes no writes: {exc!r}") from exc
        except (nats.errors.Error, TimeoutError) as exc:
            raise self._bucket.lost(exc) from exc

    async def state(self) -> StreamState:
        await self._bucket.kv()
        try:
            return (await self._js.stream_info(RESULTS_STREAM)).state
        except (nats.errors.Error, TimeoutError) as exc:
            raise self._bucket.lost(exc) from exc

    async def purge(self, key: str | None) -> int:
        """Drop every result, or the one under `key`; how many were dropped.

        Purging the stream (or one subject of it) leaves no delete markers behind.
        """
        before = (await self.state()).messages
        try:
            if key is None:
                await self._js.purge_stream(RESULTS_STREAM)
            else:
                await self._js.purge_stream(RESULTS_STREAM, subject=stored_subject(key))
        except (nats.errors.Error, TimeoutError) as exc:
            raise self._bucket.lost(exc) from exc
        return before - (await self.state()).messages
