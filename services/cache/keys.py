"""The result-cache key (docs/cache.md): pure, testable without a bus."""

from __future__ import annotations

import hashlib
import json

from dcodex.shared.contract import EffectiveLimits


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
    """SHA-256 over a canonical encoding of everything that decides a result.

    Callers pass the canonical language id (not an alias), the effective limits and
    the effective compile options (defaults filled in), so requests that mean the
    same run share one key. A tenant's requests share keys with no other tenant's
    (docs/tenancy.md); requests on the plain subjects keep the keys they always had.
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
    return hashlib.sha256(canonical.encode()).hexdigest()
