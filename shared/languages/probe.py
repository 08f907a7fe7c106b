"""Probing the registry: which languages really answer inside the sandbox, and their versions.

The one part of the registry that runs anything, so that reading the registry (the
client and the CLI map file extensions with it) never loads the sandbox.
"""

from __future__ import annotations

import asyncio
import os
from dataclasses import replace
from pathlib import Path

import structlog

from dcodex.shared.contract import EffectiveLimits
from dcodex.shared.languages.registry import Language, Registry
from dcodex.shared.sandbox.helper import prepare_sandbox
from dcodex.shared.sandbox.probe import PROBE_PROCESSES
from dcodex.shared.sandbox.run import run_sandboxed, working_directory
from dcodex.shared.sandbox.slot import Slot
from dcodex.shared.sandbox.workspace import workspace

_PROBE_TIMEOUT_S = 20.0

log = structlog.get_logger("dcodex.languages")


async def probe_registry(registry: Registry, slot: Slot | None = None) -> Registry:
    """A registry of the languages whose toolchain answers, each with its version.

    With `slot`, each version command runs sandboxed as the slot's programs do: a
    toolchain the sandbox cannot reach (say, under a private home directory, or
    outside its read-only view) is left out.
    """
    found = await asyncio.gather(*(probe_version(lang, slot) for lang in registry.languages))
    available = []
    for language, (version, problem) in zip(registry.languages, found, strict=True):
        if version is None:
            log.warning("language_unavailable", language=language.id, reason=problem)
            continue
        if not version.startswith(language.version_name):
            version = f"{language.version_name} {version}"
        available.append(replace(language, version=version))
    return Registry(available)


async def available_languages(languages_file: Path | None, slot: Slot) -> Registry:
    """The registry a service serves: shipped plus the operator's file, probed in `slot`."""
    await prepare_sandbox()
    return await probe_registry(Registry.load(languages_file), slot)


async def probe_version(language: Language, slot: Slot | None) -> tuple[str | None, str]:
    """First line of the toolchain's version output, else None and why not."""
    limits = EffectiveLimits(
        cpu_time_s=_PROBE_TIMEOUT_S,
        wall_time_s=_PROBE_TIMEOUT_S,
        memory_bytes=4 * 2**30,
        output_bytes=64 * 1024,
        processes=PROBE_PROCESSES,  # not to be starved by runs of the same uid
        file_size_bytes=2**20,
    )
    with workspace(prefix="dcodex-probe-") as cwd:
        if slot is not None and slot.uid is not None:
            os.chown(cwd, slot.uid, slot.uid)
        try:
            outcome = await run_sandboxed(
                language.version_command,
                cwd=cwd,
                limits=limits,
                env=language.sandbox_env(working_directory(slot, cwd)),
                slot=slot,
                read_only=language.mounts,
            )
        except (OSError, RuntimeError) as exc:
            return None, str(exc)
    output = (outcome.stdout + outcome.stderr).decode(errors="replace").strip()
    lines = output.splitlines()
    if outcome.exit_code != 0 or not lines:
        return None, f"{' '.join(language.version_command)} failed: {output[:200]!r}"
    return lines[0].strip(), ""
