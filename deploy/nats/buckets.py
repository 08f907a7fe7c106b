"""Create DCodeX's JetStream buckets with N replicas, or bring existing ones to N.

    DCODEX_NATS_URL=nats://dcodex-setup:PW@nats:4222 python buckets.py --replicas 3

The services create the buckets they miss with 1 replica; on a NATS cluster that is
one node's disk. This declares the result bucket (`dcodex-results`, with the cache's
TTL and size from `DCODEX_CACHE_TTL_SECONDS` and `DCODEX_CACHE_MAX_BYTES`), the lease
bucket (`dcodex-inflight`, its max age the lease time: `DCODEX_CACHE_LEASE_SECONDS`,
or 10 s when unset) and the artifact Object Store (`dcodex-artifacts`) exactly as the
services do, then sets the replicas of all three. It logs in like the services, from
the same DCODEX_NATS_* variables. Safe to run again, before or after the services
start: the cache keeps the replicas it finds when it re-declares its buckets. In the
image it is /opt/dcodex/share/buckets.py; deploy/k8s runs it as the Job dcodex-buckets.
"""

from __future__ import annotations

import argparse
import asyncio
import os

import nats
import nats.errors
from nats.js.client import JetStreamContext

from dcodex.services.cache.inflight import INFLIGHT_BUCKET, inflight_bucket
from dcodex.services.cache.results import results_bucket
from dcodex.services.cache.service import lease_seconds
from dcodex.shared.bus.connect import open_connection
from dcodex.shared.results import RESULTS_STREAM
from dcodex.shared.service.artifacts import ARTIFACT_BUCKET, open_artifact_store
from dcodex.shared.service.config import Settings, env_var

ARTIFACT_STREAM = f"OBJ_{ARTIFACT_BUCKET}"
INFLIGHT_STREAM = f"KV_{INFLIGHT_BUCKET}"
_FROM_ENV = (
    "nats_url",
    "nats_user",
    "nats_password",
    "nats_token",
    "nats_nkey",
    "nats_creds",
    "nats_tls_ca",
    "nats_tls_cert",
    "nats_tls_key",
    "cache_ttl_seconds",
    "cache_max_bytes",
    "cache_lease_seconds",
)
ATTEMPTS = 6


async def declare(replicas: int, settings: Settings) -> dict[str, int]:
    """Every bucket exists with `replicas` replicas; returns each stream's replicas.

    It logs in like the services do (`Settings.connect_options`): URL, user/password,
    token, NKey, creds or client TLS from the same DCODEX_NATS_* variables.
    """
    nc = await open_connection(settings.connect_options(), "dcodex-buckets")
    try:
        js = nc.jetstream(timeout=10)
        for attempt in range(ATTEMPTS):
            try:
                return await _declare(js, replicas, settings)
            except nats.errors.TimeoutError:
                # A cluster still electing its leaders drops JetStream API requests;
                # every step here is idempotent, so try again.
                if attempt == ATTEMPTS - 1:
                    raise
        raise AssertionError("unreachable")
    finally:
        await nc.close()


async def _declare(js: JetStreamContext, replicas: int, settings: Settings) -> dict[str, int]:
    await results_bucket(js, settings.cache_ttl_seconds, settings.cache_max_bytes).declare()
    await inflight_bucket(js, lease_seconds(settings), settings.cache_max_bytes).declare()
    await open_artifact_store(js)
    return {
        stream: await _set_replicas(js, stream, replicas)
        for stream in (RESULTS_STREAM, INFLIGHT_STREAM, ARTIFACT_STREAM)
    }


async def _set_replicas(js: JetStreamContext, stream: str, replicas: int) -> int:
    config = (await js.stream_info(stream)).config
    if config.num_replicas != replicas:
        config.num_replicas = replicas
        config = (await js.update_stream(config)).config
    return config.num_replicas or 1


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--replicas", type=int, default=3, help="replicas of each bucket")
    args = parser.parse_args()
    present = {name: os.environ[env_var(name)] for name in _FROM_ENV if env_var(name) in os.environ}
    settings = Settings.model_validate(present)
    found = asyncio.run(declare(args.replicas, settings))
    for stream, replicas in found.items():
        print(f"{stream}: {replicas} replicas")


if __name__ == "__main__":
    main()
