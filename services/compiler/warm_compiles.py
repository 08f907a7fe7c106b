"""The compiler's warm sandboxes (`--warm-compiles`): compiles set up ahead of them.

A compile's sandbox is set up as a cold compile's (uid, cgroup, rlimits, namespaces,
tmpfs root, read-only view, seccomp) up to the compiler's exec, and waits for the source
and the compile command (`dcodex.shared.sandbox.warm`, deferred). It serves the first
compiled language (C) and every language whose compiles look the same to the compiler
(environment, read-only paths, output: C++), for compiles without extra files (judge
mode's, which go the cold way). The precompiled headers' store is shown read-only in
each, so that a C++ compile that has one uses it warm too.
"""

from __future__ import annotations

from pathlib import Path

import structlog

from dcodex.services.compiler.compile import warm_compile_spec
from dcodex.shared.languages.registry import Registry
from dcodex.shared.sandbox.slots import SlotPool
from dcodex.shared.sandbox.warm import WarmPool, first_and_alike, start_warm_pool
from dcodex.shared.service.config import Settings

# Warm compile slots run as sandbox_uid_base + 4000 + N (the runner's warm ones below).
WARM_COMPILE_UID_OFFSET = 4000
# How long the compiler's own work after a compile's reply (the used sandbox's cleanup,
# the next warm start, storing the program) waits: meanwhile the runner runs the
# program and the cache answers, and on a small host all of them want the same cores.
# A compile that finds no warm sandbox ready ends the pool's wait at once.
AFTER_REPLY_DELAY_S = 0.02

log = structlog.get_logger("dcodex.compiler")


def open_warm_compiles(
    settings: Settings, registry: Registry, slots: SlotPool, header_store: Path | None = None
) -> WarmPool | None:
    """Start `settings.warm_compiles` deferred compile sandboxes (None: off, or not here);
    `header_store` is the precompiled headers' directory, when they are on."""
    size = settings.warm_compiles
    compiled = [language for language in registry.languages if language.binary is not None]
    if size == 0 or not compiled:
        return None
    if not slots.isolation.namespaces:
        log.info("warm_compiles_off", reason="no namespaces")
        return None
    spec, alike = first_and_alike(
        compiled, lambda language: warm_compile_spec(language, settings, header_store)
    )
    served = [language.id for language in alike]
    log.info("warm_compiles", languages=served, size=size)
    return start_warm_pool(
        spec,
        size,
        isolation=slots.isolation,
        uid_base=settings.sandbox_uid_base + WARM_COMPILE_UID_OFFSET,
        service="compiler-warm",
        languages=served,
        refill_delay_s=AFTER_REPLY_DELAY_S,
    )
