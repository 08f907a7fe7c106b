"""Cache hits read straight from the results bucket (docs/cache.md#direct-hits).

A hit through the cache service crosses nats-server twice each way with the cache's
Python in between; the same hit read from the bucket is one JetStream direct get,
answered by nats-server itself. The client computes the key exactly as the cache does
(`shared/results.py`, from the languages and limits the runners report), asks
`$JS.API.DIRECT.GET.KV_dcodex-results.$KV.dcodex-results.<key>`, and returns what is
stored there as the cache would. Anything else, and any doubt, goes to the cache.

Only on the plain subjects (no tenant), where every client is trusted with the bucket
anyway: a tenant's login may not send JetStream requests at all, not even a direct get
of its own results, because nats-server answers one on whatever reply subject it
names, unchecked, which would let a tenant aim the answer at a KV subject or a purge
(docs/tenancy.md).
"""

from __future__ import annotations

import time
from typing import Any

import nats.errors
import structlog
from nats.aio.client import Client as NATS
from pydantic import ValidationError

from dcodex.shared import bus
from dcodex.shared.codec import MSGPACK
from dcodex.shared.contract import ExecuteRequest, ExecutionResult, LanguagesReply
from dcodex.shared.errors import DcodexError
from dcodex.shared.results import RESULTS_STREAM, settle_request, stored_subject, unpack

# Direct lookups that found nothing, in a row, after which requests go straight to the
# cache (new code each call: a lookup would cost each a round trip for nothing) until
# the cache answers one with a hit. A client starts there too: the cache's first hit
# for it says that its requests repeat.
MISSES_TO_STOP = 8
# A lookup unanswered this long turns direct hits off for the connection: a login the
# server does not let read the bucket is refused without an answer.
LOOKUP_TIMEOUT_S = 1.0
LANGUAGES_REFRESH_S = 30.0  # as the cache's default `--languages-refresh-seconds`
KV_OPERATION = "KV-Operation"  # a delete or purge marker says DEL or PURGE here

log = structlog.get_logger("dcodex.client")


class DirectHits:
    """One connection's direct lookups: the runners' languages and the miss streak."""

    def __init__(self, nc: NATS, prefix: str) -> None:
        self._nc = nc
        self._prefix = prefix
        self._languages: LanguagesReply | None = None
        self._languages_at = float("-inf")
        self._misses = MISSES_TO_STOP
        self.off = False

    @property
    def looking(self) -> bool:
        """Whether the next `execute` looks in the bucket first."""
        return not self.off and self._misses < MISSES_TO_STOP

    async def lookup(
        self, request: ExecuteRequest | dict[str, Any], execution_id: str
    ) -> ExecutionResult | None:
        """The stored result of `request`, as the cache's hit would be; None: ask the cache."""
        if not self.looking:
            return None
        key = await self._key(request)
        if key is None:
            return None
        stored = await self._stored(key)
        if stored is None:
            self._misses += 1
            return None
        self._misses = 0
        try:
            return unpack(stored, execution_id, key)
        except Exception:  # not a result as this client reads one: the cache's to answer
            return None

    def saw(self, result: ExecutionResult) -> None:
        """A result from the cache: a hit there means repeated requests are coming."""
        if result.cache_hit:
            self._misses = 0

    async def _key(self, request: ExecuteRequest | dict[str, Any]) -> str | None:
        try:
            parsed = ExecuteRequest.model_validate(request)
        except ValidationError:
            return None  # the cache's 400 says what is wrong
        if parsed.stream:
            return None  # the cache replays a hit's events; a direct hit would have none
        info = await self._info()
        if info is None:
            return None
        try:
            return settle_request(parsed, info, None)[2]
        except DcodexError:
            return None  # the cache's 400

    async def _info(self) -> LanguagesReply | None:
        """The runners' languages and limits, re-read every `LANGUAGES_REFRESH_S`."""
        now = time.monotonic()
        if now - self._languages_at < LANGUAGES_REFRESH_S:
            return self._languages
        self._languages_at = now  # asked at most once a period, answered or not
        try:
            reply = await bus.request(
                self._nc,
                f"{self._prefix}.languages",
                {},
                request_id=bus.new_id(),
                timeout=LOOKUP_TIMEOUT_S,
                encoding=MSGPACK,
            )
            self._languages = LanguagesReply.model_validate(reply)
        except (DcodexError, ValidationError):
            pass  # the last answer stands; without one, the cache decides
        return self._languages

    async def _stored(self, key: str) -> bytes | None:
        subject = f"$JS.API.DIRECT.GET.{RESULTS_STREAM}.{stored_subject(key)}"
        try:
            msg = await self._nc.request(subject, b"", timeout=LOOKUP_TIMEOUT_S)
        except nats.errors.NoRespondersError:
            return None  # no bucket (yet), or JetStream is away
        except (nats.errors.TimeoutError, TimeoutError):
            self.off = True
            log.warning("direct_hits_off", reason=f"{subject} unanswered", bucket=RESULTS_STREAM)
            return None
        except nats.errors.Error:
            return None  # the connection's trouble: the request to the cache reports it
        headers = msg.headers or {}
        if "Status" in headers or headers.get(KV_OPERATION) in ("DEL", "PURGE"):
            return None  # 404: not stored (or expired, or purged)
        return msg.data or None
