"""Hits answered from the cache's memory where the request arrives (`Cache.quick`):
the execution-id contract still holds, and what a request settles to follows the
runners' answer."""

from __future__ import annotations

import uuid

import pytest

from dcodex.services.cache.service import Cache, Prepared
from dcodex.shared.bus.watch import ask_status
from dcodex.shared.client import DcodexClient
from dcodex.shared.contract import EffectiveLimits, LanguageInfo, LanguagesReply, LimitsInfo
from dcodex.shared.errors import CONFLICT, DcodexError
from dcodex.shared.service.config import Settings
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
    return cache._prepared(call, info)


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
