"""Compile one source file in a sandbox: pure core, no NATS.

The compiler reads untrusted source (which may `#include` or `.incbin` any path), so
it runs exactly like a program: as the slot's unprivileged uid, in a fresh private
workspace, with a clean environment and its own limits. A compile that hits a limit
is a compile error whose diagnostics end with a `[dcodex]` line naming the limit.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from signal import SIGXCPU, SIGXFSZ

from dcodex.services.compiler.pch import header_text, link_into
from dcodex.shared.contract import EffectiveLimits
from dcodex.shared.languages.registry import PCH_HEADER, CompileOptions, Language
from dcodex.shared.sandbox.handover import HandedFile
from dcodex.shared.sandbox.isolation import SANDBOX_WORKDIR
from dcodex.shared.sandbox.run import SandboxResult, run_sandboxed, working_directory
from dcodex.shared.sandbox.slot import Slot
from dcodex.shared.sandbox.warm import WarmSandbox, WarmSpec
from dcodex.shared.sandbox.workspace import (
    hand_over,
    read_output_file,
    workspace,
    write_file,
    write_read_only,
)
from dcodex.shared.service.config import Settings

# A precompiled header of the whole standard library is about 100 MiB.
PCH_FILE_SIZE_BYTES = 512 * 2**20
# How compilers say they ran out of address space (gcc, g++, rustc/LLVM, C++ runtimes).
_OUT_OF_MEMORY = re.compile(
    r"out of memory|virtual memory exhausted|cannot allocate memory|memory allocation of "
    r"\d+ bytes failed|std::bad_alloc",
    re.IGNORECASE,
)
# How the gcc driver reports a tool (ld, as) that hit the file-size limit.
_FILE_TOO_LARGE = re.compile(r"File size limit exceeded|terminated with signal 25\b")


@dataclass(frozen=True)
class Compilation:
    ok: bool
    output: str
    time_ms: float
    binary: bytes | None


def compile_limits(settings: Settings, file_size_bytes: int | None = None) -> EffectiveLimits:
    return EffectiveLimits(
        cpu_time_s=settings.compile_timeout_seconds,
        wall_time_s=settings.compile_timeout_seconds,
        memory_bytes=settings.compile_memory_limit_bytes,
        output_bytes=settings.max_compile_output_bytes,
        processes=64,  # gcc runs cc1, as, collect2 and ld
        file_size_bytes=file_size_bytes or settings.max_artifact_bytes,
    )


async def compile_source(
    language: Language,
    code: str,
    settings: Settings,
    slot: Slot,
    options: CompileOptions | None = None,
    precompiled: Path | None = None,
    files: Sequence[tuple[str, bytes]] = (),
    warm: WarmSandbox | None = None,
) -> Compilation:
    """Compile `code`; `precompiled` is a built header directory from the HeaderStore;
    `files` (headers, other units) lie read-only beside the source. `warm`: a deferred
    sandbox of `warm_compile_spec` to compile in (no `files`; a `precompiled` header only
    from the store that spec shows)."""
    assert language.compile is not None and language.binary is not None
    chosen = options or language.options(None, None)
    if warm is not None:
        assert not files
        header = str(precompiled / PCH_HEADER) if precompiled is not None else None
        return await _compile_warm(language, code, settings, chosen, warm, header)
    with workspace(prefix="dcodex-compile-") as cwd:
        write_file(cwd, language.source, code.encode(), slot, mode=0o400)
        for name, data in files:
            write_read_only(cwd, name, data)
        header = _place_header(precompiled, cwd, slot)
        hand_over(cwd, slot)
        outcome = await run_sandboxed(
            language.compile_argv(chosen, header=header),
            cwd=cwd,
            limits=compile_limits(settings),
            env=language.sandbox_env(working_directory(slot, cwd)),
            slot=slot,
            read_only=language.mounts + ((str(precompiled),) if header and precompiled else ()),
            outputs=(language.binary,),  # from the sandbox's own working directory
        )
        name = language.binary
        largest = settings.max_artifact_bytes
        return _compilation(outcome, lambda: read_output_file(cwd, name, largest), name, settings)


def warm_compile_spec(
    language: Language, settings: Settings, header_store: Path | None = None
) -> WarmSpec:
    """What a compile of `language` (without extra files) is set up with: a deferred
    sandbox given the source and the compile command later. `header_store`: the
    HeaderStore's directory, shown read-only, so that a compile may use any header built
    there (none holds anything of a tenant's: each is built from standard headers only)."""
    assert language.binary is not None
    return WarmSpec(
        argv=(),
        source_name="",
        env=language.sandbox_env(Path(SANDBOX_WORKDIR)),
        limits=compile_limits(settings),
        read_only=language.mounts + ((str(header_store),) if header_store is not None else ()),
        deferred=True,
        outputs=(language.binary,),
    )


async def _compile_warm(
    language: Language,
    code: str,
    settings: Settings,
    options: CompileOptions,
    warm: WarmSandbox,
    header: str | None,
) -> Compilation:
    """The compile in a sandbox set up ahead: handed the source (as a cold compile's,
    mode 0400) and the compile command (using the precompiled `header`, where the
    sandbox shows it); its binary comes back as a cold compile's does."""
    name = language.binary
    assert name is not None
    taken: list[bytes | None] = []

    def collect(directory: Path) -> None:  # before the sandbox's directory is removed
        taken.append(read_output_file(directory, name, settings.max_artifact_bytes))

    source = HandedFile(language.source, code.encode(), 0o400)
    argv = language.compile_argv(options, header=header)
    outcome = await warm.run_program([source], argv, b"", None, collect=collect)
    return _compilation(outcome, lambda: taken[0] if taken else None, name, settings)


def _compilation(
    outcome: SandboxResult,
    read_binary: Callable[[], bytes | None],
    name: str,
    settings: Settings,
) -> Compilation:
    """What the compile's run amounts to: its binary, or why there is none."""
    output = (outcome.stdout + outcome.stderr).decode("utf-8", errors="replace")
    failure = _failure(outcome, output, settings)
    binary = read_binary() if failure is None else None
    if failure is None and binary is None:
        failure = _missing(outcome.skipped_outputs.get(name), settings)
    if binary is not None and len(binary) > settings.max_artifact_bytes:
        failure, binary = _too_large(settings), None
    if failure is not None:
        return Compilation(False, _join(output, failure), outcome.wall_time_ms, None)
    return Compilation(True, output, outcome.wall_time_ms, binary)


def _place_header(precompiled: Path | None, cwd: Path, slot: Slot) -> str | None:
    """Where the compile finds the precompiled header, if it can have it: in namespaces,
    where it is stored (shown read-only, nothing copied); else linked into `cwd`."""
    if precompiled is None:
        return None
    if slot.isolation.namespaces:
        return str(precompiled / PCH_HEADER)
    # A header that cannot be put there is only a lost speed-up.
    return PCH_HEADER if link_into(precompiled, cwd) else None


async def build_header(
    language: Language,
    options: CompileOptions,
    headers: tuple[str, ...],
    settings: Settings,
    slot: Slot,
) -> bytes | None:
    """Build a precompiled header in the sandbox; None when the compiler would not."""
    argv = language.precompile_argv(options)
    if argv is None:
        return None
    with workspace(prefix="dcodex-pch-build-") as cwd:
        write_file(cwd, PCH_HEADER, header_text(headers).encode(), slot, mode=0o400)
        hand_over(cwd, slot)
        outcome = await run_sandboxed(
            argv,
            cwd=cwd,
            limits=compile_limits(settings, PCH_FILE_SIZE_BYTES),
            env=language.sandbox_env(working_directory(slot, cwd)),
            slot=slot,
            read_only=language.mounts,
            outputs=(f"{PCH_HEADER}.gch",),
        )
        if outcome.exit_code != 0:
            return None
        return read_output_file(cwd, f"{PCH_HEADER}.gch", PCH_FILE_SIZE_BYTES)


def _failure(outcome: SandboxResult, output: str, settings: Settings) -> str | None:
    """Why a compile failed in a way the compiler's own diagnostics may not say."""
    if outcome.killed_for == "wall_time":
        return f"compilation timed out after {settings.compile_timeout_seconds:g} s"
    if outcome.killed_for == "cpu_time" or outcome.signal == SIGXCPU:
        return f"compilation used more than {settings.compile_timeout_seconds:g} s of CPU"
    if outcome.killed_for == "output":
        return f"compiler output exceeded {settings.max_compile_output_bytes} bytes"
    failed = outcome.signal is not None or outcome.exit_code != 0
    if outcome.signal == SIGXFSZ or (failed and _FILE_TOO_LARGE.search(output)):
        return _too_large(settings)
    if failed and _OUT_OF_MEMORY.search(output):
        return (
            "the compiler ran out of memory (limit "
            f"{settings.compile_memory_limit_bytes} bytes of address space)"
        )
    if outcome.signal is not None:
        return f"the compiler was killed by signal {outcome.signal}"
    if outcome.exit_code != 0:
        return ""  # the diagnostics say why
    return None


def _missing(skipped: str | None, settings: Settings) -> str:
    """Why there is no program to take: none was made, or it was not fit to take."""
    if skipped == "too-large":
        return _too_large(settings)
    if skipped is not None:
        return f"the compiler's output was not taken ({skipped})"
    return "the compiler produced no program"


def _too_large(settings: Settings) -> str:
    return f"the program would be larger than {settings.max_artifact_bytes} bytes"


def _join(output: str, note: str) -> str:
    if not note:
        return output
    return f"{output.rstrip()}\n[dcodex] {note}\n".lstrip()
