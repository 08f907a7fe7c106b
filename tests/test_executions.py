"""A service's executions by id without a bus: what `keep` holds, and its byte count."""

from __future__ import annotations

from dcodex.shared.contract import ExecutionResult
from dcodex.shared.service.executions import Executions


def result(stdout: str) -> ExecutionResult:
    return ExecutionResult(execution_id="e", status="ok", language="python", stdout=stdout)


def test_an_id_kept_again_holds_the_newer_result_counted_once() -> None:
    size = 512 + 1000  # a result's count: its output and 512 bytes for the rest
    executions = Executions(most_bytes=6 * size)
    executions.keep("e", "request", result("a" * 1000))
    executions.keep("e", "request", result("b" * 1000))
    assert executions.finished("e") == result("b" * 1000)
    # Counted once, five more of that size fit the byte bound with it.
    for n in range(5):
        executions.keep(f"other{n}", "request", result("c" * 1000))
    assert executions.finished("e") is not None
