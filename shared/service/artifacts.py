"""Compiled artifacts in the JetStream Object Store (docs/cache.md).

The compiler writes a binary under the digest of everything that determines it; the
runner reads it by that name. Both open the bucket through `open_artifact_store`.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Sequence

import nats.js.errors
from nats.js.api import ObjectStoreConfig
from nats.js.client import JetStreamContext
from nats.js.object_store import ObjectStore

from dcodex.shared.judge.plan import files_digest
from dcodex.shared.languages.registry import CompileOptions, Language

ARTIFACT_BUCKET = "dcodex-artifacts"


async def open_artifact_store(js: JetStreamContext, max_bytes: int | None = None) -> ObjectStore:
    """The artifact bucket, created when it does not exist yet."""
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
