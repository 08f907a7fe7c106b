"""From runs to verdicts: a case's verdict, stop-on-first-failure, the summary."""

from __future__ import annotations

from collections.abc import Sequence

from dcodex.shared.contract import (
    PASSING_VERDICTS,
    CaseResult,
    ExecutionResult,
    JudgeResult,
    JudgeSummary,
    Verdict,
)
from dcodex.shared.judge.checkers import Checked


def case_verdict(result: ExecutionResult, checked: Checked | None) -> Verdict:
    """A run that did not end ok keeps its status; one that did gets the checker's word."""
    if result.status != "ok":
        return result.status
    if checked is None:
        return "ok"
    return checked.verdict


def case_result(
    index: int, name: str, result: ExecutionResult, checked: Checked | None
) -> CaseResult:
    fields = result.model_dump(
        include={
            "status", "exit_code", "signal", "stdout", "stderr", "output_truncated",
            "wall_clock_timeout", "cpu_time_ms", "wall_time_ms", "peak_memory_bytes",
        }
    )  # fmt: skip
    return CaseResult(
        index=index,
        name=name,
        verdict=case_verdict(result, checked),
        checker_message=checked.message if checked is not None else "",
        **fields,
    )


def skipped(index: int, name: str) -> CaseResult:
    return CaseResult(index=index, name=name, verdict="skipped")


def failed(case: CaseResult) -> bool:
    return case.verdict not in PASSING_VERDICTS and case.verdict != "skipped"


def first_failure(cases: Sequence[CaseResult]) -> int | None:
    return next((case.index for case in cases if failed(case)), None)


def stop_after_first_failure(cases: Sequence[CaseResult]) -> list[CaseResult]:
    """Every case after the first failure as `skipped`, even one that happened to run in
    parallel already: the reply is the same however the cases were scheduled."""
    first = first_failure(cases)
    if first is None:
        return list(cases)
    return [case if case.index <= first else skipped(case.index, case.name) for case in cases]


def overall_verdict(cases: Sequence[CaseResult]) -> Verdict:
    """The first failure's verdict; else `accepted` if any case was compared, else `ok`."""
    first = first_failure(cases)
    if first is not None:
        return cases[first].verdict
    if any(case.verdict == "accepted" for case in cases):
        return "accepted"
    if cases and all(case.verdict == "skipped" for case in cases):
        return "skipped"
    return "ok"


def summarize(cases: Sequence[CaseResult]) -> JudgeSummary:
    ran = [case for case in cases if case.verdict != "skipped"]
    slowest = max(ran, key=lambda case: case.wall_time_ms, default=None)
    return JudgeSummary(
        total=len(cases),
        passed=sum(case.verdict in PASSING_VERDICTS for case in cases),
        failed=sum(failed(case) for case in cases),
        skipped=len(cases) - len(ran),
        checker_errors=sum(case.verdict == "checker_error" for case in cases),
        first_failure=first_failure(cases),
        cpu_time_ms=round(sum(case.cpu_time_ms for case in ran), 3),
        wall_time_ms=round(sum(case.wall_time_ms for case in ran), 3),
        slowest_case=slowest.index if slowest is not None else None,
        slowest_wall_time_ms=slowest.wall_time_ms if slowest is not None else 0.0,
        peak_memory_bytes=max((case.peak_memory_bytes for case in ran), default=0),
        cache_hits=sum(case.cache_hit for case in cases),
    )


def empty_result(
    execution_id: str | None, language: str, language_version: str, isolation: list[str]
) -> JudgeResult:
    """A judgement before any case is in: `ok`, no cases, an empty summary."""
    return JudgeResult(
        execution_id=execution_id,
        status="ok",
        verdict="ok",
        language=language,
        language_version=language_version,
        cases=[],
        summary=summarize([]),
        isolation=isolation,
    )
