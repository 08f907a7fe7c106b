"""Run one program in a sandbox and describe the outcome as an `ExecutionResult`.

Pure core: no NATS. The service hands in the language, the source or the compiled
binary, and the effective limits; this module writes the workspace, runs, and judges.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass

from dcodex.services.runner.verdict import decide_status
from dcodex.shared.contract import EffectiveLimits, ExecutionResult
from dcodex.shared.languages.registry import Language
from dcodex.shared.sandbox.handover import HandedFile
from dcodex.shared.sandbox.run import (
    LiveInput,
    OutputCallback,
    SandboxResult,
    run_sandboxed,
    working_directory,
)
from dcodex.shared.sandbox.slot import Slot
from dcodex.shared.sandbox.warm import WarmSandbox
from dcodex.shared.sandbox.workspace import hand_over, workspace, write_file, write_read_only
from dcodex.shared.sandbox.zygote import ZygoteKeeper

# The most a run's files may take to be staged in memory (`workspace`'s `staged`).
STAGED_AT_MOST = 1024 * 1024


@dataclass(frozen=True)
class Program:
    """What to run: a language and either its source (interpreted) or its binary."""

    language: Language
    language_version: str
    source: str
    binary: bytes | None = None


def sandbox_limits(limits: EffectiveLimits) -> EffectiveLimits:
    return limits  # the same six names


async def execute(
    program: Program,
    *,
    execution_id: str,
    stdin: str | LiveInput,
    args: list[str],
    limits: EffectiveLimits,
    slot: Slot,
    on_output: OutputCallback | None = None,
    on_finished: Callable[[SandboxResult, ExecutionResult], None] | None = None,
    files: Sequence[tuple[str, bytes]] = (),
    zygote: ZygoteKeeper | None = None,
) -> ExecutionResult:
    """`on_finished` learns the sandbox's facts beside the verdict (for metrics);
    `files` lie read-only beside the program (judge mode's extra files); a run `zygote`
    serves is forked from it (`dcodex.shared.sandbox.zygote`)."""
    language = program.language
    # With namespaces the directory only stages the files for the run's own tmpfs:
    # small ones go to memory (a container's /dev/shm may be 64 MB for all its runs).
    size = len(program.binary or program.source) + sum(len(data) for _, data in files)
    staged = slot.isolation.namespaces and size <= STAGED_AT_MOST
    with workspace(prefix="dcodex-run-", staged=staged) as cwd:
        if program.binary is not None and language.binary:
            write_file(cwd, language.binary, program.binary, slot, mode=0o500)
        else:
            write_file(cwd, language.source, program.source.encode(), slot, mode=0o400)
        for name, data in files:
            write_read_only(cwd, name, data)
        hand_over(cwd, slot)
        outcome = await run_sandboxed(
            language.run_argv(limits.memory_bytes, args),
            cwd=cwd,
            limits=sandbox_limits(limits),
            stdin=stdin.encode() if isinstance(stdin, str) else stdin,
            env=language.sandbox_env(working_directory(slot, cwd)),
            slot=slot,
            read_only=language.mounts,
            on_output=on_output,
            address_space=language.address_space(limits.memory_bytes),
            zygote=zygote,
        )
    result = to_result(outcome, limits, execution_id, language.id, program.language_version)
    result = result.model_copy(update={"isolation": slot.isolation.layers})
    if on_finished is not None:
        on_finished(outcome, result)
    return result


async def execute_warm(
    warm: WarmSandbox,
    program: Program,
    *,
    execution_id: str,
    stdin: str,
    args: list[str],
    limits: EffectiveLimits,
    on_output: OutputCallback | None = None,
    on_finished: Callable[[SandboxResult, ExecutionResult], None] | None = None,
) -> ExecutionResult:
    """`execute`, in a sandbox started ahead: an interpreter given the source, or a
    deferred sandbox given the binary (as a cold run's: mode 0500) and its argv."""
    language = program.language
    if program.binary is not None and language.binary:
        binary = HandedFile(language.binary, program.binary, 0o500)
        argv = language.run_argv(limits.memory_bytes, args)
        outcome = await warm.run_program([binary], argv, stdin.encode(), on_output)
    else:
        outcome = await warm.run(program.source, args, stdin.encode(), on_output)
    result = to_result(outcome, limits, execution_id, program.language.id, program.language_version)
    result = result.model_copy(update={"isolation": warm.layers})
    if on_finished is not None:
        on_finished(outcome, result)
    return result


def to_result(
    outcome: SandboxResult,
    limits: EffectiveLimits,
    execution_id: str,
    language_id: str,
    language_version: str,
) -> ExecutionResult:
    return ExecutionResult(
        execution_id=execution_id,
        status=decide_status(outcome, sandbox_limits(limits)),
        exit_code=outcome.exit_code,
        signal=outcome.signal,
        stdout=outcome.stdout.decode("utf-8", errors="replace"),
        stderr=outcome.stderr.decode("utf-8", errors="replace"),
        output_truncated=outcome.output_truncated,
        wall_clock_timeout=outcome.wall_clock_timeout,
        cpu_time_ms=round(outcome.cpu_time_ms, 3),
        wall_time_ms=round(outcome.wall_time_ms, 3),
        peak_memory_bytes=outcome.peak_memory_bytes,
        language=language_id,
        language_version=language_version,
    )
