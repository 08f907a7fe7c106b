"""Compiled artifacts in the JetStream Object Store (docs/cache.md).

The compiler writes a binary under the digest of everything that determines it; the
runner reads it by that name. Both open the bucket through `open_artifact_store`.
"""

from __future__ import annotations

import asyncio
import hashlib
import json
import time
from collections.abc import Sequence

import nats.errors
import nats.js.errors
import structlog
from nats.js.api import ObjectStoreConfig
from nats.js.client import JetStreamContext
from nats.js.object_store import ObjectStore

from dcodex.shared.errors import UNAVAILABLE, DcodexError
from dcodex.shared.judge.plan import files_digest
from dcodex.shared.languages.registry import CompileOptions, Language

ARTIFACT_BUCKET = "dcodex-artifacts"


# JetStream may not answer a service that starts with it (a cluster electing its
# leaders, a store being recovered): the service tries again this long before it gives up.
OPEN_PATIENCE_S = 60.0
OPEN_RETRY_S = 1.0

log = structlog.get_logger("dcodex.artifacts")


async def open_artifact_store(
    js: JetStreamContext, max_bytes: int | None = None, patience_s: float = OPEN_PATIENCE_S
) -> ObjectStore:
    """The artifact bucket, created when it does not exist yet; tried again while
    JetStream does not answer, for `patience_s`, then a 503 (a service that starts
    then exits with it, and its orchestrator starts it again)."""
    deadline = time.monotonic() + patience_s
    while True:
        try:
            return await _open_or_create(js, max_bytes)
        except (nats.errors.TimeoutError, nats.errors.NoRespondersError,
                nats.js.errors.ServiceUnavailableError) as exc:  # fmt: skip
            if time.monotonic() + OPEN_RETRY_S > deadline:
                raise DcodexError(
                    UNAVAILABLE,
                    f"JetStream did not open {ARTIFACT_BUCKET} within {patience_s:g} s: {exc!r}",
                ) from exc
            log.warning("artifact_store_unavailable", bucket=ARTIFACT_BUCKET, error=repr(exc))
            await asyncio.sleep(OPEN_RETRY_S)


async def _open_or_create(js: JetStreamContext, max_bytes: int | None) -> ObjectStore:
    try:
        return await js.object_store(ARTIFACT_BUCKET)
    except nats.js.errors.NotFoundError:
        config = ObjectStoreConfig(
            bucket=ARTIFACT_BUCKET,
            description="DCodeX compiled programs, by compile digest",
            max_bytes=max_bytes,
        )
        return await js.create_object_store(ARTIFACT_BUCKET, config=config)


def compile_digest(
    language: Language,
    code: str,
    options: CompileOptions | None = None,
    files: Sequence[tuple[str, bytes]] = (),
) -> str:
    """SHA-256 of language, toolchain version, compile command with its flags, and source.

    `options` default to the language's defaults; the command is the one the chosen
    `std` and `optimization` expand to, so every flag that shapes the binary counts.
    """
    chosen = options or language.options(None, None)
    parts: dict[str, object] = {
        "language": language.id,
        "version": language.version,
        "command": language.compile_argv(chosen) if language.compiled else [],
        "source": code,
    }
    if files:  # extra files (headers) shape the binary too; none leaves old digests be
        parts["files"] = files_digest(files)
    canonical = json.dumps(
        parts,
        sort_keys=True,
        separators=(",", ":"),
    )
    return hashlib.sha256(canonical.encode()).hexdigest()
