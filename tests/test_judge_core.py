"""Judge mode's pure core, without a bus: checkers, request checks, limits, keys, summary."""

from __future__ import annotations

from typing import Any

import pytest

from dcodex.shared.contract import (
    CaseResult,
    Checker,
    EffectiveLimits,
    ExecutionResult,
    JudgeFile,
    JudgeRequest,
)
from dcodex.shared.errors import DcodexError
from dcodex.shared.judge.checkers import check, close, from_exit_code
from dcodex.shared.judge.plan import (
    JudgeCaps,
    Toolchains,
    case_keys,
    case_limits,
    check_request,
    check_reserved,
)
from dcodex.shared.judge.verdicts import (
    case_result,
    overall_verdict,
    stop_after_first_failure,
    summarize,
)

CAPS = JudgeCaps(
    max_cases=10,
    max_tests_bytes=100,
    max_files=2,
    max_files_bytes=10,
    max_code_bytes=1000,
    max_stdin_bytes=50,
)
LIMITS = EffectiveLimits(
    cpu_time_s=1, wall_time_s=2, memory_bytes=2**30, output_bytes=1024, processes=8,
    file_size_bytes=0,
)  # fmt: skip
CEILINGS = LIMITS.model_copy(update={"cpu_time_s": 5, "wall_time_s": 10})
TOOLS = Toolchains("python", "python 3.11", None, None)


def request(**fields: Any) -> JudgeRequest:
    return JudgeRequest.model_validate(
        {"language": "python", "code": "print(1)", "tests": [{"stdin": "1"}], **fields}
    )


@pytest.mark.parametrize(
    ("kind", "output", "expected", "verdict"),
    [
        ("exact", "1 2\n", "1 2\n", "accepted"),
        ("exact", "1 2", "1 2\n", "presentation_error"),
        ("exact", "1 3\n", "1 2\n", "wrong_answer"),
        ("lines", "1 2  \n\n\n", "1 2\n", "accepted"),
        ("lines", "1 2\r\n3\r\n", "1 2\n3", "accepted"),
        ("lines", "1  2\n", "1 2\n", "presentation_error"),
        ("lines", "\n1 2\n", "1 2\n", "presentation_error"),
        ("lines", "1 2\n", "1 2\n4\n", "wrong_answer"),
        ("tokens", "1\n2", "1 2", "accepted"),
        ("tokens", "1 2 3", "1 2", "wrong_answer"),
        ("tokens", "", "", "accepted"),
        ("float", "3.1415926", "3.14159265", "accepted"),
        ("float", "3.14", "3.14159265", "wrong_answer"),
        ("float", "1e9 yes", "1000000000.0005 yes", "accepted"),
        ("float", "1 no", "1 yes", "wrong_answer"),
        ("float", "nan", "nan", "accepted"),
        ("float", "1", "1 2", "wrong_answer"),
    ],
)
def test_builtin_checkers(kind: str, output: str, expected: str, verdict: str) -> None:
    assert check(Checker(type=kind), output, expected).verdict == verdict  # type: ignore[arg-type]


def test_checker_messages_say_where() -> None:
    lines = check(Checker(type="lines"), "a\nb\n", "a\nc\n")
    assert lines.message == "line 2 differs: expected 'c', found 'b'"
    tokens = check(Checker(type="tokens"), "1 2", "1 2 3")
    assert tokens.message == "expected 3 tokens, found 2"


def test_float_epsilons_absolute_or_relative() -> None:
    assert close(1.0005, 1.0, 1e-3, 0)
    assert not close(1.002, 1.0, 1e-3, 0)
    assert close(1_000_100.0, 1_000_000.0, 0, 1e-4)
    assert not close(1_000_200.0, 1_000_000.0, 1e-3, 1e-4)
    eps = Checker(type="float", abs_epsilon=0.1, rel_epsilon=0)
    assert check(eps, "2.05", "2").verdict == "accepted"
    assert check(eps, "2.2", "2").verdict == "wrong_answer"


def test_testlib_exit_codes() -> None:
    assert [from_exit_code(code) for code in (0, 1, 2, 3, 7, None)] == [
        "accepted", "wrong_answer", "presentation_error",
        "checker_error", "checker_error", "checker_error",
    ]  # fmt: skip


@pytest.mark.parametrize(
    ("fields", "code", "field"),
    [
        ({"tests": []}, 400, "tests"),
        ({"tests": [{}] * 11}, 413, "tests"),
        ({"tests": [{"stdin": "x" * 51}]}, 413, "tests.0.stdin"),
        ({"tests": [{"expected_output": "x" * 51}]}, 413, "tests.0.expected_output"),
        ({"tests": [{"stdin": "x" * 40}] * 3}, 413, "tests"),
        ({"code": "x" * 1001}, 413, "code"),
        ({"files": [{"name": "", "content": ""}]}, 400, "files.0.name"),
        ({"files": [{"name": "a\\b", "content": ""}]}, 400, "files.0.name"),
        ({"files": [{"name": ".", "content": ""}]}, 400, "files.0.name"),
        ({"files": [{"name": "x" * 256, "content": ""}]}, 400, "files.0.name"),
        (
            {"files": [{"name": "a", "content": ""}, {"name": "a", "content": ""}]},
            400,
            "files.1.name",
        ),
        ({"files": [{"name": "a", "content": "x" * 11}]}, 413, "files"),
        ({"files": [{"name": f"f{i}", "content": ""} for i in range(3)]}, 413, "files"),
        ({"checker": {"type": "program", "code": "x"}}, 400, "checker.language"),
        ({"checker": {"type": "tokens", "code": "x"}}, 400, "checker.code"),
        ({"checker": {"type": "exact", "rel_epsilon": 1}}, 400, "checker.rel_epsilon"),
        ({"only": [0, 1]}, 400, "only.1"),
    ],
)
def test_bad_requests(fields: dict[str, Any], code: int, field: str) -> None:
    with pytest.raises(DcodexError) as raised:
        check_request(request(**fields), CAPS)
    assert (raised.value.code, raised.value.field) == (code, field)


def test_base64_files_and_reserved_names() -> None:
    check_request(request(files=[{"name": "b", "content": "AAEC", "encoding": "base64"}]), CAPS)
    with pytest.raises(DcodexError) as raised:
        check_reserved(request(files=[{"name": "main.py", "content": ""}]).files, ("main.py", None))
    assert raised.value.field == "files.0.name"


def test_case_limits_layer_request_then_case_under_ceilings() -> None:
    judged = request(
        limits={"cpu_time_s": 2},
        tests=[{"stdin": ""}, {"stdin": "", "limits": {"cpu_time_s": 4, "wall_time_s": 9}}],
    )
    first, second = case_limits(judged, LIMITS, CEILINGS)
    assert (first.cpu_time_s, first.wall_time_s) == (2, 2)
    assert (second.cpu_time_s, second.wall_time_s) == (4, 9)
    with pytest.raises(DcodexError) as raised:
        case_limits(request(tests=[{}, {"limits": {"cpu_time_s": 6}}]), LIMITS, CEILINGS)
    assert raised.value.field == "tests.1.limits.cpu_time_s"
    assert "ceiling of 5" in raised.value.message


def test_case_keys_change_only_with_what_decides_the_case() -> None:
    base = request(tests=[{"stdin": "1"}, {"stdin": "2", "expected_output": "2"}])
    limits = case_limits(base, LIMITS, CEILINGS)
    keys = case_keys(base, limits, TOOLS)
    assert len(set(keys)) == 2
    changed = base.model_copy(
        update={"tests": [base.tests[0], base.tests[1].model_copy(update={"expected_output": "3"})]}
    )
    new = case_keys(changed, limits, TOOLS)
    assert new[0] == keys[0] and new[1] != keys[1]
    for other in (
        base.model_copy(update={"code": "print(2)"}),
        base.model_copy(update={"checker": Checker(type="tokens")}),
        base.model_copy(update={"files": [JudgeFile(name="a", content="")]}),
    ):
        assert set(case_keys(other, limits, TOOLS)).isdisjoint(keys)
    newer = Toolchains("python", "python 3.12", None, None)
    assert set(case_keys(base, limits, newer)).isdisjoint(keys)


def ran(index: int, status: str = "ok", wall: float = 10, memory: int = 100) -> ExecutionResult:
    return ExecutionResult(
        execution_id="x", status=status, language="python", wall_time_ms=wall,
        cpu_time_ms=wall / 2, peak_memory_bytes=memory,
    )  # fmt: skip


def test_verdicts_summary_and_stop() -> None:
    from dcodex.shared.judge.checkers import Checked

    cases: list[CaseResult] = [
        case_result(0, "a", ran(0), Checked("accepted")),
        case_result(1, "b", ran(1, wall=50, memory=900), Checked("wrong_answer", "no")),
        case_result(2, "c", ran(2, "cpu_time_limit", wall=30), None),
        case_result(3, "d", ran(3), None),
    ]
    assert [case.verdict for case in cases] == ["accepted", "wrong_answer", "cpu_time_limit", "ok"]
    assert overall_verdict(cases) == "wrong_answer"
    summary = summarize(cases)
    assert (summary.passed, summary.failed, summary.first_failure) == (2, 2, 1)
    assert (summary.slowest_case, summary.peak_memory_bytes) == (1, 900)
    assert summary.wall_time_ms == 100 and summary.cpu_time_ms == 50
    stopped = stop_after_first_failure(cases)
    assert [case.verdict for case in stopped] == ["accepted", "wrong_answer", "skipped", "skipped"]
    assert summarize(stopped).skipped == 2
    assert overall_verdict(cases[:1]) == "accepted" and overall_verdict(cases[3:]) == "ok"
