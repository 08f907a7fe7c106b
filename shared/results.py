"""A cached result: its key, where it is stored, and its stored form (docs/cache.md).

Pure and shared: the cache keeps results under these keys in the `dcodex-results`
KV bucket, and the client reads a hit straight from it (`client/_direct_hits.py`).
Both must agree on every byte of the key, so it is computed here only.
"""

from __future__ import annotations

import hashlib
import json
import time

import msgpack

from dcodex.shared.contract import (
    EffectiveLimits,
    ExecuteRequest,
    ExecutionResult,
    LanguageInfo,
    LanguagesReply,
)

RESULTS_BUCKET = "dcodex-results"
RESULTS_STREAM = f"KV_{RESULTS_BUCKET}"  # the stream behind the bucket
STORED_AT = "stored_at"  # wall-clock time of the put: when a copy in memory expires


def cache_key(
    language_id: str,
    language_version: str,
    code: str,
    stdin: str,
    args: list[str],
    limits: EffectiveLimits,
    *,
    std: str | None = None,
    optimization: str | None = None,
    tenant: str | None = None,
) -> str:
    """SHA-256 over a canonical encoding of everything that decides a result; a
    tenant's keys start with the tenant and a dot.

    Callers pass the canonical language id (not an alias), the effective limits and
    the effective compile options (defaults filled in), so requests that mean the
    same run share one key. A tenant's requests share keys with no other tenant's
    (docs/tenancy.md), and its keys lie under a subject token of its own
    (`$KV.dcodex-results.<tenant>.<digest>`). Requests on the plain subjects keep the
    keys they always had.
    """
    scope = {} if tenant is None else {"tenant": tenant}
    canonical = json.dumps(
        {
            **scope,
            "language": language_id,
            "version": language_version,
            "code": code,
            "stdin": stdin,
            "args": args,
            "limits": limits.model_dump(mode="json"),
            "std": std,
            "optimization": optimization,
        },
        sort_keys=True,
        separators=(",", ":"),
        ensure_ascii=False,
    )
    digest = hashlib.sha256(canonical.encode()).hexdigest()
    return digest if tenant is None else f"{tenant}.{digest}"


def request_key(
    request: ExecuteRequest, language: LanguageInfo, limits: EffectiveLimits, tenant: str | None
) -> str | None:
    """`request`'s cache key, its language and effective limits settled; None when it
    is not to be looked up: `cache: false`, or an interactive run (a conversation,
    nothing to look up or keep)."""
    if not request.cache or request.interactive:
        return None
    return cache_key(
        language.id,
        language.version,
        request.code,
        request.stdin,
        request.args,
        limits,
        std=request.std or language.default_std,
        optimization=request.optimization or language.default_optimization,
        # Tenants share no results: a program's output may differ from run to run.
        tenant=tenant,
    )


def settle_request(
    request: ExecuteRequest, info: LanguagesReply, tenant: str | None
) -> tuple[LanguageInfo, EffectiveLimits, str | None]:
    """`request`'s language, effective limits and key, as the runners' languages and
    limits (`info`) settle them; a DcodexError (400) for a language they do not serve
    or limits above their ceilings."""
    language = info.language(request.language)
    limits = info.limits.defaults.apply(request.limits, info.limits.ceilings)
    return language, limits, request_key(request, language, limits, tenant)


def stored_subject(key: str) -> str:
    """The subject `key`'s result is stored under in the bucket's stream."""
    return f"$KV.{RESULTS_BUCKET}.{key}"


def pack(result: ExecutionResult, now: float | None = None) -> bytes:
    data = result.model_dump(mode="json", exclude={"execution_id", "cache_hit", "cache_key"})
    data[STORED_AT] = time.time() if now is None else now
    packed: bytes = msgpack.packb(data, use_bin_type=True)
    return packed


def unpack(data: bytes, execution_id: str, key: str) -> ExecutionResult:
    return unpack_stored(data, execution_id, key)[0]


def unpack_stored(data: bytes, execution_id: str, key: str) -> tuple[ExecutionResult, float | None]:
    """The result (a hit, under `execution_id`) and when it was stored, if it says."""
    stored = msgpack.unpackb(data, raw=False)
    at = stored.pop(STORED_AT, None)
    result = ExecutionResult.model_validate(
        {**stored, "execution_id": execution_id, "cache_hit": True, "cache_key": key}
    )
    return result, at if isinstance(at, int | float) else None
