"""The cache's memory tier without a bus: expiry, the byte bound, forgetting."""

from __future__ import annotations

from dcodex.services.cache.hot import HotResults
from dcodex.shared.contract import ExecutionResult


def result(stdout: str) -> ExecutionResult:
    return ExecutionResult(execution_id="x", status="ok", language="python", stdout=stdout)


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def test_an_entry_lasts_until_its_stored_copy_expires() -> None:
    clock = Clock()
    hot = HotResults(1024, clock)
    hot.put("k", result("a"), 10, expires_at=1060.0)
    clock.now = 1059.9
    assert hot.get("k") == result("a")
    clock.now = 1060.0
    assert hot.get("k") is None


def test_the_least_recently_used_go_first_when_the_bytes_run_out() -> None:
    hot = HotResults(100, Clock())
    hot.put("a", result("a"), 40, 2000)
    hot.put("b", result("b"), 40, 2000)
    assert hot.get("a") is not None  # a is now the more recently used
    hot.put("c", result("c"), 40, 2000)
    assert (hot.get("a"), hot.get("b"), hot.get("c")) == (result("a"), None, result("c"))
    assert hot.size == 80


def test_a_result_over_the_whole_budget_or_a_budget_of_zero_keeps_nothing() -> None:
    hot = HotResults(100, Clock())
    hot.put("big", result("big"), 101, 2000)
    assert hot.get("big") is None and len(hot) == 0
    off = HotResults(0, Clock())
    off.put("k", result("k"), 1, 2000)
    assert off.get("k") is None


def test_forget_drops_one_key_or_everything() -> None:
    hot = HotResults(1000, Clock())
    for key in "abc":
        hot.put(key, result(key), 10, 2000)
    assert hot.forget("b") == 1 and hot.forget("b") == 0
    assert hot.get("b") is None and hot.get("a") is not None
    assert hot.forget(None) == 2
    assert len(hot) == 0 and hot.get("a") is None
