"""The runner's warm interpreters (`--warm-interpreters`): which language, which slots.

The sandbox keeps them (`dcodex.shared.sandbox.warm`); this picks the Python of the
registry, the runner's default limits (a run asking for others goes the cold way) and
slots of their own, with uids above the runner's and the compiler's.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import structlog

from dcodex.shared.languages.registry import Registry
from dcodex.shared.sandbox.isolation import SANDBOX_WORKDIR
from dcodex.shared.sandbox.slots import SlotPool
from dcodex.shared.sandbox.warm import WarmPool as SandboxWarmPool
from dcodex.shared.sandbox.warm import WarmSandbox, WarmSpec, warm_argv
from dcodex.shared.service.config import Settings

# Warm slots run as sandbox_uid_base + 2000 + N (the compiler's are + 1000 + N).
WARM_UID_OFFSET = 2000

log = structlog.get_logger("dcodex.runner")


@dataclass
class WarmPool:
    """The pool, and the language run it stands for."""

    pool: SandboxWarmPool
    language_run: tuple[str, ...]

    @property
    def spec(self) -> WarmSpec:
        return self.pool.spec

    def take(self) -> WarmSandbox | None:
        return self.pool.take()

    def close(self) -> None:
        self.pool.close()


def open_warm_pool(settings: Settings, registry: Registry, slots: SlotPool) -> WarmPool | None:
    """Start `settings.warm_interpreters` warm Python sandboxes (None: off, or not here)."""
    size = settings.warm_interpreters
    if size == 0:
        return None
    if not slots.isolation.namespaces:
        # Without namespaces a run's HOME and files are its own host directory, which a
        # sandbox started ahead cannot know; such hosts run Python the cold way.
        log.info("warm_interpreters_off", reason="no namespaces")
        return None
    for language in registry.languages:
        argv = warm_argv(language.run, language.source)
        if argv is None or language.compiled:
            continue
        spec = WarmSpec(
            argv=tuple(argv),
            source_name=language.source,
            env=language.sandbox_env(Path(SANDBOX_WORKDIR)),
            limits=settings.default_limits(),
            read_only=language.mounts,
        )
        warm_slots = SlotPool(
            size,
            settings.sandbox_uid_base + WARM_UID_OFFSET,
            isolation=slots.isolation,
            service="runner-warm",
        )
        pool = SandboxWarmPool(spec, warm_slots, size)
        pool.start()
        log.info("warm_interpreters", language=language.id, size=size)
        return WarmPool(pool, language.run)
    return None
