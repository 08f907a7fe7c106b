"""Hits answered from the cache's memory where the request arrives (`Cache.quick`):
the execution-id contract still holds, and what a request settles to follows the
runners' answer."""

from __future__ import annotations

import time
import uuid

import pytest
from pydantic import ValidationError

from dcodex.services.cache.service import Cache, Checked, Prepared
from dcodex.shared.bus.watch import ask_status
from dcodex.shared.client import DcodexClient
from dcodex.shared.contract import (
    EffectiveLimits,
    ExecutionResult,
    LanguageInfo,
    LanguagesReply,
    LimitsInfo,
)
from dcodex.shared.errors import CONFLICT, TOO_LARGE, DcodexError
from dcodex.shared.service.config import Settings
from dcodex.shared.service.executions import owned_key
from dcodex.shared.service.micro import Call


def program() -> str:
    return f"print('quick')  # {uuid.uuid4().hex}"


@pytest.mark.bus
async def test_a_hit_from_memory_keeps_the_execution_id_contract(client: DcodexClient) -> None:
    request = {"language": "python", "code": program()}
    first = await client.execute(request)
    assert first.status == "ok" and not first.cache_hit
    hit = await client.execute({**request, "execution_id": "quick-hit-1"})
    assert hit.cache_hit and hit.execution_id == "quick-hit-1"
    assert (hit.stdout, hit.cache_key) == (first.stdout, first.cache_key)
    # Asked again under the same id: the one it has, not a second answer.
    assert await client.execute({**request, "execution_id": "quick-hit-1"}) == hit
    # The same id for another request: refused, never that request's result.
    with pytest.raises(DcodexError) as refused:
        await client.execute(
            {"language": "python", "code": program(), "execution_id": "quick-hit-1"}
        )
    assert refused.value.code == CONFLICT
    # The status subject knows the hit, as it knows any execution.
    status = await ask_status(client.nc, "dcodex.status.execute", "quick-hit-1", "r", 5.0)
    assert status is not None and status.state == "finished" and status.result == hit


def languages(version: str) -> LanguagesReply:
    limits = EffectiveLimits(
        cpu_time_s=1,
        wall_time_s=2,
        memory_bytes=1 << 26,
        output_bytes=1 << 16,
        processes=8,
        file_size_bytes=1 << 20,
    )
    python = LanguageInfo(id="python", aliases=["py"], version=version, compiled=False)
    return LanguagesReply(
        languages=[python],
        limits=LimitsInfo(defaults=limits, ceilings=limits),
        isolation=[],
        max_code_bytes=1 << 20,
        max_stdin_bytes=1 << 20,
    )


def prepared(cache: Cache, info: LanguagesReply, code: str, tenant: str | None = None) -> Prepared:
    call = Call({"language": "py", "code": code}, "r", "application/json", tenant=tenant)
    return cache._settle(cache._checked(call), tenant, info)


def asked(**request: object) -> Call:
    return Call({"language": "python", **request}, "r", "application/json")


async def test_the_quick_handler_answers_hits_in_memory_and_hands_on_the_rest() -> None:
    cache = Cache(Settings(), None, None, None)  # type: ignore[arg-type]
    cache._languages, cache._languages_at = languages("3.11"), time.monotonic()
    # A miss goes on to the full handler, made ready.
    missed = cache.quick(asked(code="print(1)", execution_id="first"))
    assert isinstance(missed, Call) and isinstance(missed.prepared, Prepared)
    ready = missed.prepared
    assert ready.key is not None
    stored = ExecutionResult(execution_id="first", status="ok", language="python", stdout="1\n")
    cache.hot.put(ready.key, stored.model_copy(update={"cache_hit": True}), 100, time.time() + 60)
    # The same request under a new id: answered at once, and kept under that id.
    hit = cache.quick(asked(code="print(1)", execution_id="second"))
    assert isinstance(hit, ExecutionResult)
    assert (hit.execution_id, hit.stdout, hit.cache_hit) == ("second", "1\n", True)
    assert cache.counts["hit"] == 1
    status = cache.executions.status(owned_key("second", None))
    assert status is not None and status.state == "finished" and status.result == hit
    # That id asked again: the full handler joins what it names. For another request in
    # memory: a 409 (for one not in memory, the full handler's, tests above).
    assert isinstance(cache.quick(asked(code="print(1)", execution_id="second")), Call)
    other = cache.quick(asked(code="print(2)", execution_id="other"))
    assert isinstance(other, Call) and isinstance(other.prepared, Prepared)
    assert other.prepared.key is not None
    cache.hot.put(other.prepared.key, stored, 100, time.time() + 60)
    with pytest.raises(DcodexError) as refused:
        cache.quick(asked(code="print(2)", execution_id="second"))
    assert refused.value.code == CONFLICT
    # A request that streams its events replays them on the bus: the full handler.
    streamed = cache.quick(asked(code="print(1)", execution_id="third", stream=True))
    assert isinstance(streamed, Call) and isinstance(streamed.prepared, Prepared)
    assert cache.counts["hit"] == 1


def test_a_bad_request_is_refused_before_the_runners_languages_are_asked() -> None:
    cache = Cache(Settings(), None, None, None)  # type: ignore[arg-type]
    with pytest.raises(ValidationError):
        cache.quick(asked())  # no code: a 400 from the bus, whatever the runners say
    with pytest.raises(DcodexError) as too_large:
        cache.quick(asked(code="#" * (Settings().max_code_bytes + 1)))
    assert too_large.value.code == TOO_LARGE
    # Valid, with no languages known yet: handed on checked, to be settled after asking.
    handed_on = cache.quick(asked(code="print(1)"))
    assert isinstance(handed_on, Call)
    assert isinstance(handed_on.prepared, Checked) and not isinstance(handed_on.prepared, Prepared)


def test_what_a_request_settles_to_follows_the_runners_answer() -> None:
    # No bus: settling a request touches neither the connection nor the buckets.
    cache = Cache(Settings(), None, None, None)  # type: ignore[arg-type]
    old, new = languages("3.11"), languages("3.12")
    first = prepared(cache, old, "print(1)")
    again = prepared(cache, old, "print(1)")
    assert first.key is not None and again.key == first.key
    assert first.execution_id != again.execution_id  # each request gets its own id
    # A runner's new toolchain is a new key: what was remembered is not used.
    assert prepared(cache, new, "print(1)").key != first.key
    assert prepared(cache, old, "print(1)").key == first.key
    # Nor is one tenant's key another's, nor a big request's remembered.
    assert prepared(cache, old, "print(1)", tenant="acme").key != first.key
    big = "#" * 5000
    assert prepared(cache, old, big).key == prepared(cache, old, big).key
    assert all(len(fingerprint) < 5000 for _, fingerprint in cache._settled_by_request)
