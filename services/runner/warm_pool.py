"""The runner's warm sandboxes: which languages, which limits, which slots.

The sandbox keeps them (`dcodex.shared.sandbox.warm`); this picks what each kind
serves, at the runner's default limits (a run asking for others goes the cold way), on
slots of their own with uids above the runner's and the compiler's:

- `interpreter` (`--warm-interpreters`): the registry's Python, its interpreter started,
  refilled only while fewer runs are under way than it may use cores and the host's
  CPUs have time to spare (`spare_core`);
- `native` (`--warm-native`): compiled programs of the first compiled language (C) and
  of every language whose runs look the same to the program (environment, read-only
  paths, address space: C++), set up to the program's exec (a deferred sandbox).
"""

from __future__ import annotations

import os
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from pathlib import Path

import structlog

from dcodex.services.runner.spare_cpu import SpareCpu
from dcodex.shared.languages.registry import Language, Registry
from dcodex.shared.sandbox.isolation import SANDBOX_WORKDIR
from dcodex.shared.sandbox.slots import SlotPool
from dcodex.shared.sandbox.warm import (
    WarmPool,
    WarmSpec,
    first_and_alike,
    start_warm_pool,
    warm_argv,
)
from dcodex.shared.service.config import Settings

# Warm slots run as sandbox_uid_base + offset + N (the compiler's are + 1000 + N).
WARM_UID_OFFSET = 2000
NATIVE_UID_OFFSET = 3000

log = structlog.get_logger("dcodex.runner")


@dataclass
class WarmPools:
    """The runner's warm sandboxes by kind (None: that kind is off)."""

    interpreter: WarmPool | None = None
    native: WarmPool | None = None

    def close(self) -> None:
        for pool in (self.interpreter, self.native):
            if pool is not None:
                pool.close()


def open_warm_pools(settings: Settings, registry: Registry, slots: SlotPool) -> WarmPools:
    """Start the warm sandboxes `settings` asks for, where the host allows them."""
    if not slots.isolation.namespaces:
        # Without namespaces a run's HOME and files are its own host directory, which a
        # sandbox started ahead cannot know; such hosts run everything the cold way.
        if settings.warm_interpreters or settings.warm_native:
            log.info("warm_sandboxes_off", reason="no namespaces")
        return WarmPools()
    return WarmPools(
        interpreter=_interpreter_pool(settings, registry, slots),
        native=_native_pool(settings, registry, slots),
    )


def _interpreter_pool(settings: Settings, registry: Registry, slots: SlotPool) -> WarmPool | None:
    """`settings.warm_interpreters` warm Python sandboxes (None: off, or no Python)."""
    size = settings.warm_interpreters
    for language in registry.languages if size else []:
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
        log.info("warm_interpreters", language=language.id, size=size)
        return _start(
            spec, size, settings, slots, WARM_UID_OFFSET, "runner-warm", [language],
            refill_gate=spare_core(slots),
        )  # fmt: skip
    return None


def spare_core(slots: SlotPool, spare: SpareCpu | None = None) -> Callable[[], Awaitable[None]]:
    """Until fewer of the runner's runs are under way than it may use cores, and the
    host's CPUs stayed partly idle lately (`spare_cpu`).

    A warm interpreter costs its whole start-up; a run forked from the zygote, the
    cold way, costs less CPU. While every core is busy a warm one started ahead only
    takes CPU from the runs waiting for it, so Python runs go the cold way then
    (W5: 0.97x of bare python3's rate without warm interpreters, 0.90-0.91x with them
    refilled on the count of runs alone).
    """
    cores = len(os.sched_getaffinity(0))
    cpu = spare if spare is not None else SpareCpu()

    async def gate() -> None:
        while True:
            await slots.until_fewer_running(cores)
            await cpu.until_spare()
            if slots.running < cores:  # still, after the wait for the CPUs
                return

    return gate


def _native_pool(settings: Settings, registry: Registry, slots: SlotPool) -> WarmPool | None:
    """`settings.warm_native` deferred sandboxes for compiled programs (None: off)."""
    size = settings.warm_native
    compiled = [language for language in registry.languages if language.binary is not None]
    if size == 0 or not compiled:
        return None
    spec, served = first_and_alike(compiled, lambda language: _native_spec(language, settings))
    log.info("warm_native", languages=[language.id for language in served], size=size)
    return _start(spec, size, settings, slots, NATIVE_UID_OFFSET, "runner-native", served)


def _native_spec(language: Language, settings: Settings) -> WarmSpec:
    """What a run of `language`'s binary at the default limits is set up with."""
    limits = settings.default_limits()
    return WarmSpec(
        argv=(),
        source_name="",
        env=language.sandbox_env(Path(SANDBOX_WORKDIR)),
        limits=limits,
        read_only=language.mounts,
        deferred=True,
        address_space=language.address_space(limits.memory_bytes),
    )


def _start(
    spec: WarmSpec,
    size: int,
    settings: Settings,
    slots: SlotPool,
    uid_offset: int,
    service: str,
    languages: list[Language],
    refill_gate: Callable[[], Awaitable[None]] | None = None,
) -> WarmPool:
    return start_warm_pool(
        spec,
        size,
        isolation=slots.isolation,
        uid_base=settings.sandbox_uid_base + uid_offset,
        service=service,
        languages=[language.id for language in languages],
        refill_gate=refill_gate,
    )
