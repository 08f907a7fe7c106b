"""The JetStream KV bucket of results, `dcodex-results`."""

from __future__ import annotations

import msgpack
import nats.js.errors
from nats.js.api import DiscardPolicy, StorageType, StreamConfig
from nats.js.client import JetStreamContext
from nats.js.kv import KeyValue

from dcodex.shared.contract import ExecutionResult

RESULTS_BUCKET = "dcodex-results"
RESULTS_STREAM = f"KV_{RESULTS_BUCKET}"  # the stream behind the bucket


async def open_results_bucket(js: JetStreamContext, ttl_s: float, max_bytes: int) -> KeyValue:
    """Create (or bring to this configuration) the results bucket.

    nats-py's `create_key_value` always discards NEW messages when the bucket is full,
    which would stop caching once it fills; a cache wants the oldest dropped, so the
    bucket's stream is declared here with `DiscardPolicy.OLD`.
    """
    config = StreamConfig(
        name=RESULTS_STREAM,
        description="DCodeX execution results by cache key",
        subjects=[f"$KV.{RESULTS_BUCKET}.>"],
        max_msgs_per_subject=1,
        max_age=ttl_s,
        max_bytes=max_bytes,
        discard=DiscardPolicy.OLD,
        storage=StorageType.FILE,
        allow_rollup_hdrs=True,
        allow_direct=True,
        deny_delete=True,
        duplicate_window=min(ttl_s, 120.0),
        num_replicas=1,
    )
    try:
        await js.add_stream(config)
    except nats.js.errors.BadRequestError:
        await js.update_stream(config)
    return await js.key_value(RESULTS_BUCKET)


def pack(result: ExecutionResult) -> bytes:
    data = result.model_dump(mode="json", exclude={"execution_id", "cache_hit"})
    packed: bytes = msgpack.packb(data, use_bin_type=True)
    return packed


def unpack(data: bytes, execution_id: str) -> ExecutionResult:
    stored = msgpack.unpackb(data, raw=False)
    return ExecutionResult.model_validate(
        {**stored, "execution_id": execution_id, "cache_hit": True}
    )
