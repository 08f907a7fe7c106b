"""decide_status: each rule, and which one wins when several fire."""

from __future__ import annotations

import dataclasses
import signal
from typing import Any

import pytest

from dcodex.services.runner.verdict import MEMORY_FAILURE_MARKERS, decide_status
from dcodex.shared.contract import EffectiveLimits, Status
from dcodex.shared.sandbox.run import SandboxResult

MiB = 2**20
LIMITS = EffectiveLimits(
    cpu_time_s=1.0,
    wall_time_s=2.0,
    memory_bytes=100 * MiB,
    output_bytes=1024,
    processes=5,
    file_size_bytes=MiB,
)
# A clean, successful run; each case below changes only what it is about.
OK = SandboxResult(
    exit_code=0,
    signal=None,
    stdout=b"hello\n",
    stderr=b"",
    output_truncated=False,
    wall_clock_timeout=False,
    killed_for=None,
    cpu_time_ms=20.0,
    wall_time_ms=30.0,
    peak_memory_bytes=10 * MiB,
)
KILLED: dict[str, Any] = {"exit_code": None, "signal": signal.SIGKILL}
OUTPUT_KILL: dict[str, Any] = {**KILLED, "killed_for": "output", "output_truncated": True}
WALL_KILL: dict[str, Any] = {**KILLED, "killed_for": "wall_time", "wall_clock_timeout": True}
NEAR_MEMORY_LIMIT = int(0.9 * LIMITS.memory_bytes)

CASES: list[tuple[str, dict[str, Any], Status]] = [
    ("clean run", {}, "ok"),
    ("non-zero exit", {"exit_code": 3}, "runtime_error"),
    ("segfault", {"exit_code": None, "signal": signal.SIGSEGV}, "signaled"),
    ("output cap", OUTPUT_KILL, "output_limit"),
    ("SIGXCPU", {"exit_code": None, "signal": signal.SIGXCPU}, "cpu_time_limit"),
    ("SIGKILL at the hard CPU limit", {**KILLED, "cpu_time_ms": 2000.0}, "cpu_time_limit"),
    ("CPU time over the limit, exit 0", {"cpu_time_ms": 1000.5}, "cpu_time_limit"),
    ("CPU time exactly at the limit", {"cpu_time_ms": 1000.0}, "ok"),
    ("killed at a fractional CPU limit", {**KILLED, "killed_for": "cpu_time"}, "cpu_time_limit"),
    ("wall clock", WALL_KILL, "wall_time_limit"),
    (
        "failed near the memory limit",
        {"exit_code": 1, "peak_memory_bytes": NEAR_MEMORY_LIMIT},
        "memory_limit",
    ),
    ("signaled near the memory limit", {**KILLED, "peak_memory_bytes": 99 * MiB}, "memory_limit"),
    (
        "failed just below 90 %",
        {"exit_code": 1, "peak_memory_bytes": NEAR_MEMORY_LIMIT - 1},
        "runtime_error",
    ),
    ("succeeded near the memory limit", {"peak_memory_bytes": 99 * MiB}, "ok"),
    ("succeeded with a marker", {"stderr": b"caught MemoryError, retried"}, "ok"),
    # Precedence: the first limit that fired wins.
    ("output beats CPU", {**OUTPUT_KILL, "cpu_time_ms": 5000.0}, "output_limit"),
    ("output beats wall", {**OUTPUT_KILL, "wall_clock_timeout": True}, "output_limit"),
    ("CPU beats wall", {**WALL_KILL, "cpu_time_ms": 1500.0}, "cpu_time_limit"),
    ("wall beats memory", {**WALL_KILL, "peak_memory_bytes": 99 * MiB}, "wall_time_limit"),
    ("wall before a late truncation", {**WALL_KILL, "output_truncated": True}, "wall_time_limit"),
    ("memory beats signaled", {**KILLED, "stderr": b"std::bad_alloc"}, "memory_limit"),
]


@pytest.mark.parametrize(
    ("changes", "expected"),
    [pytest.param(changes, expected, id=name) for name, changes, expected in CASES],
)
def test_decide_status(changes: dict[str, Any], expected: Status) -> None:
    assert decide_status(dataclasses.replace(OK, **changes), LIMITS) == expected


@pytest.mark.parametrize("marker", MEMORY_FAILURE_MARKERS)
@pytest.mark.parametrize(
    "ending",
    [{"exit_code": 1}, {"exit_code": None, "signal": signal.SIGABRT}],
    ids=["exit", "abort"],
)
def test_memory_markers_on_stderr(marker: bytes, ending: dict[str, Any]) -> None:
    result = dataclasses.replace(OK, stderr=b"Traceback...\n" + marker + b"\n", **ending)
    assert decide_status(result, LIMITS) == "memory_limit"
