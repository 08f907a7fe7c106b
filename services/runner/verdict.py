"""Turn how a sandboxed run ended into the status a client sees.

When several limits fire, the first one that fired wins: the output cap and the CPU
limit stop the program the moment they are hit, the wall clock only after the fact,
and a memory failure is the kernel's word when the run's memory cgroup OOM-killed
it, else (an allocation refused at the address-space limit leaves no kernel record)
an inference from how the program died.
"""

from __future__ import annotations

import signal

from dcodex.shared.contract import EffectiveLimits, Status
from dcodex.shared.sandbox.run import SandboxResult

# What common runtimes print when an allocation fails (Python, C++, glibc's perror, Go/JS).
MEMORY_FAILURE_MARKERS: tuple[bytes, ...] = (
    b"MemoryError",
    b"std::bad_alloc",
    b"Cannot allocate memory",
    b"out of memory",
)

# A program that failed after using this share of its memory limit is taken to have hit it.
_NEAR_MEMORY_LIMIT = 0.9


def decide_status(result: SandboxResult, limits: EffectiveLimits) -> Status:
    """The status of a run; "compile_error" and "internal_error" are decided elsewhere."""
    if result.killed_for == "output":
        return "output_limit"
    if _hit_cpu_limit(result, limits):
        return "cpu_time_limit"
    if result.killed_for == "wall_time":
        return "wall_time_limit"
    if _hit_memory_limit(result, limits):
        return "memory_limit"
    if result.signal is not None:
        return "signaled"
    if result.exit_code != 0:
        return "runtime_error"
    return "ok"


def _hit_cpu_limit(result: SandboxResult, limits: EffectiveLimits) -> bool:
    # SIGXCPU comes at the soft limit; a program that catches it gets SIGKILL at the
    # hard limit, which only its CPU time tells apart from any other SIGKILL.
    return (
        result.killed_for == "cpu_time"
        or result.signal == signal.SIGXCPU
        or result.cpu_time_ms > limits.cpu_time_s * 1000
    )


def _hit_memory_limit(result: SandboxResult, limits: EffectiveLimits) -> bool:
    if result.memory_limit_hit:
        return True  # the kernel's word: the run's memory cgroup OOM-killed it
    failed = result.signal is not None or result.exit_code != 0
    return failed and _looks_out_of_memory(result, limits)


def _looks_out_of_memory(result: SandboxResult, limits: EffectiveLimits) -> bool:
    # With only an address-space rlimit the kernel does not report a failed allocation:
    # the program just gets NULL/ENOMEM and dies its own way. So this is an inference,
    # from its peak memory or from what its runtime printed.
    near_limit = result.peak_memory_bytes >= _NEAR_MEMORY_LIMIT * limits.memory_bytes
    return near_limit or any(marker in result.stderr for marker in MEMORY_FAILURE_MARKERS)
