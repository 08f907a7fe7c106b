"""Which limits a run counts under, from the sandbox's facts and the verdict (no bus)."""

from __future__ import annotations

import signal

import pytest

from dcodex.services.runner.metrics import limits_hit
from dcodex.shared.sandbox.run import KillReason, SandboxResult


def outcome(
    *,
    killed_for: KillReason | None = None,
    signum: int | None = None,
    memory: bool | None = None,
    processes: bool | None = None,
) -> SandboxResult:
    return SandboxResult(
        exit_code=None if signum else 0,
        signal=signum,
        stdout=b"",
        stderr=b"",
        output_truncated=killed_for == "output",
        wall_clock_timeout=killed_for == "wall_time",
        killed_for=killed_for,
        cpu_time_ms=1.0,
        wall_time_ms=1.0,
        peak_memory_bytes=0,
        memory_limit_hit=memory,
        process_limit_hit=processes,
    )


@pytest.mark.parametrize(
    ("facts", "status", "expected"),
    [
        (outcome(), "ok", set()),
        (outcome(killed_for="output", signum=9), "output_limit", {"output"}),
        (outcome(signum=signal.SIGXCPU), "cpu_time_limit", {"cpu_time"}),
        # Killed on the wall clock, judged on its CPU time: both limits were reached.
        (outcome(killed_for="wall_time", signum=9), "cpu_time_limit", {"cpu_time", "wall_time"}),
        (outcome(signum=9, memory=True), "memory_limit", {"memory"}),
        # Refused forks it survived: an ok run that still ran into the process limit.
        (outcome(processes=True), "ok", {"processes"}),
        (outcome(signum=signal.SIGXFSZ), "signaled", {"file_size"}),
        (outcome(signum=signal.SIGSEGV), "signaled", set()),
    ],
)
def test_limits_hit(facts: SandboxResult, status: str, expected: set[str]) -> None:
    assert limits_hit(facts, status) == expected
