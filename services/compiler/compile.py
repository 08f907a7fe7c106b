"""Compile one source file in a sandbox: pure core, no NATS."""

from __future__ import annotations

from dataclasses import dataclass
from signal import SIGXFSZ

from dcodex.shared.config import Settings
from dcodex.shared.languages import Language
from dcodex.shared.sandbox import SandboxLimits, run_sandboxed
from dcodex.shared.slots import Slot
from dcodex.shared.workspace import hand_over, read_output_file, workspace, write_file


@dataclass(frozen=True)
class Compilation:
    ok: bool
    output: str
    time_ms: float
    binary: bytes | None


def compile_limits(settings: Settings) -> SandboxLimits:
    return SandboxLimits(
        cpu_time_s=settings.compile_timeout_seconds,
        wall_time_s=settings.compile_timeout_seconds,
        memory_bytes=settings.compile_memory_limit_bytes,
        output_bytes=settings.max_compile_output_bytes,
        processes=64,  # gcc runs cc1, as, collect2 and ld
        file_size_bytes=settings.max_artifact_bytes,
    )


async def compile_source(
    language: Language, code: str, settings: Settings, slot: Slot
) -> Compilation:
    assert language.compile is not None and language.binary is not None
    with workspace(prefix="dcodex-compile-") as cwd:
        write_file(cwd, language.source, code.encode(), slot, mode=0o400)
        hand_over(cwd, slot)
        outcome = await run_sandboxed(
            language.compile,
            cwd=cwd,
            limits=compile_limits(settings),
            slot=slot,
            collect=True,  # the binary, from the sandbox's own working directory
        )
        output = (outcome.stdout + outcome.stderr).decode("utf-8", errors="replace")
        failure = _failure(outcome.killed_for, outcome.exit_code, outcome.signal, settings)
        binary = read_output_file(cwd, language.binary) if failure is None else None
        if failure is None and binary is None:
            failure = "the compiler produced no program"
        if failure is not None:
            return Compilation(False, _join(output, failure), outcome.wall_time_ms, None)
        return Compilation(True, output, outcome.wall_time_ms, binary)


def _failure(
    killed_for: str | None, exit_code: int | None, signal: int | None, settings: Settings
) -> str | None:
    """Why a compile failed in a way the compiler's own diagnostics may not say."""
    if killed_for == "wall_time":
        return f"compilation timed out after {settings.compile_timeout_seconds:g} s"
    if killed_for == "output":
        return f"compiler output exceeded {settings.max_compile_output_bytes} bytes"
    if signal == SIGXFSZ:
        return f"the program would be larger than {settings.max_artifact_bytes} bytes"
    if signal is not None:
        return f"the compiler was killed by signal {signal}"
    if exit_code != 0:
        return ""  # the diagnostics say why
    return None


def _join(output: str, note: str) -> str:
    if not note:
        return output
    return f"{output.rstrip()}\n[dcodex] {note}\n".lstrip()
