"""Judge mode end to end (docs/judge.md): cache → runner → compiler on a real NATS."""

from __future__ import annotations

import re
import uuid
from typing import Any

import pytest

from dcodex.shared.client import CaseResult, DcodexClient
from dcodex.shared.errors import DcodexError

pytestmark = pytest.mark.bus

SUM_CPP = r"""
#include <iostream>
int main() { long long a, b; std::cin >> a >> b; std::cout << a + b << "\n"; }
"""
# Wrong on purpose when the sum is 7, slow when it is 100.
SUM_PY = """
a, b = map(int, input().split())
if a + b == 100:
    while True:
        pass
print(a + b + (1 if a + b == 7 else 0))
"""


def marked(code: str) -> str:
    """The code made new for this test run (a fresh cache key)."""
    marker = uuid.uuid4().hex
    return f"{code}\n// {marker}\n" if "#include" in code else f"{code}\n# {marker}\n"


def cases(*pairs: tuple[str, str]) -> list[dict[str, Any]]:
    return [{"stdin": stdin, "expected_output": out} for stdin, out in pairs]


async def test_compiled_once_every_case_judged_in_order(client: DcodexClient) -> None:
    tests = cases(*((f"{i} {i}\n", f"{2 * i}\n") for i in range(12)))
    tests[5]["expected_output"] = "11\n"  # a wrong expectation: the program says 10
    result = await client.judge({"language": "cpp", "code": marked(SUM_CPP), "tests": tests})
    assert result.status == "ok"
    assert result.compile_time_ms is not None and result.compile_time_ms > 0
    assert [case.index for case in result.cases] == list(range(12))
    assert [case.name for case in result.cases[:2]] == ["1", "2"]
    verdicts = [case.verdict for case in result.cases]
    assert verdicts == ["accepted"] * 5 + ["wrong_answer"] + ["accepted"] * 6
    assert "expected '11', found '10'" in result.cases[5].checker_message
    assert result.verdict == "wrong_answer"
    summary = result.summary
    assert (summary.total, summary.passed, summary.failed, summary.skipped) == (12, 11, 1, 0)
    assert summary.first_failure == 5
    assert summary.cpu_time_ms > 0 and summary.peak_memory_bytes > 0
    assert summary.slowest_case is not None
    assert summary.slowest_wall_time_ms == max(case.wall_time_ms for case in result.cases)


async def test_run_verdicts_limits_and_stop_on_first_failure(client: DcodexClient) -> None:
    tests = cases(("1 2\n", "3\n"), ("3 4\n", "7\n"), ("50 50\n", "100\n"), ("2 2\n", "4\n"))
    tests[2]["limits"] = {"cpu_time_s": 0.3}
    code = marked(SUM_PY)
    full = await client.judge({"language": "python", "code": code, "tests": tests})
    assert [c.verdict for c in full.cases] == [
        "accepted",
        "wrong_answer",
        "cpu_time_limit",
        "accepted",
    ]
    assert full.cases[2].status == "cpu_time_limit"
    assert full.summary.failed == 2 and full.summary.first_failure == 1
    stopped = await client.judge(
        {"language": "python", "code": code, "tests": tests, "stop_on_first_failure": True}
    )
    assert [c.verdict for c in stopped.cases] == [
        "accepted",
        "wrong_answer",
        "skipped",
        "skipped",
    ]
    assert stopped.cases[2].status is None
    assert stopped.summary.skipped == 2


async def test_rejudging_reruns_only_changed_cases(client: DcodexClient) -> None:
    code = marked(SUM_CPP)
    tests = cases(("1 1\n", "2\n"), ("2 2\n", "4\n"), ("3 3\n", "6\n"))
    first = await client.judge({"language": "cpp", "code": code, "tests": tests})
    assert [c.cache_hit for c in first.cases] == [False, False, False]
    tests[1] = {"stdin": "5 5\n", "expected_output": "10\n"}
    again = await client.judge({"language": "cpp", "code": code, "tests": tests})
    assert [c.cache_hit for c in again.cases] == [True, False, True]
    assert [c.verdict for c in again.cases] == ["accepted"] * 3
    assert again.summary.cache_hits == 2
    everything = await client.judge({"language": "cpp", "code": code, "tests": tests})
    assert everything.summary.cache_hits == 3 and everything.verdict == "accepted"


async def test_live_case_events(client: DcodexClient) -> None:
    seen: list[CaseResult] = []
    tests = cases(*((f"{i} 1\n", f"{i + 1}\n") for i in range(5)))
    result = await client.judge(
        {"language": "python", "code": marked(SUM_PY), "tests": tests}, on_case=seen.append
    )
    assert sorted(case.index for case in seen) == list(range(5))
    assert {case.index: case.verdict for case in seen} == {
        case.index: case.verdict for case in result.cases
    }


async def test_builtin_checkers(client: DcodexClient) -> None:
    code = marked('print("3.14159 x")\nprint()\n')
    expected = "3.1416 x\n"

    async def verdict(checker: dict[str, Any]) -> str:
        result = await client.judge(
            {
                "language": "python",
                "code": code,
                "tests": [{"expected_output": expected}],
                "checker": checker,
            }
        )
        return result.cases[0].verdict

    assert await verdict({"type": "float", "abs_epsilon": 1e-3}) == "accepted"
    assert await verdict({"type": "float"}) == "wrong_answer"
    assert await verdict({"type": "tokens"}) == "wrong_answer"
    assert await verdict({"type": "exact"}) == "wrong_answer"


async def test_program_checker_testlib_convention(client: DcodexClient) -> None:
    # Accepts any two numbers that sum to the input's number; 2 when not two tokens.
    checker = marked(
        """
import sys
want = int(open(sys.argv[1]).read())
got = open(sys.argv[2]).read().split()
answer = open(sys.argv[3]).read()
if len(got) != 2:
    print("need two numbers", file=sys.stderr)
    sys.exit(2)
if int(got[0]) + int(got[1]) != want:
    print(f"{got} does not sum to {want}", file=sys.stderr)
    sys.exit(1)
if answer == "crash":
    sys.exit(3)
print("ok", file=sys.stderr)
"""
    )
    solution = marked("n = int(input())\nprint(*([n - 1, 1] if n != 5 else [n] if n == 5 else []))")
    tests = [
        {"stdin": "10\n"},
        {"stdin": "5\n"},
        {"stdin": "7\n", "expected_output": "crash"},
    ]
    result = await client.judge(
        {
            "language": "python",
            "code": solution,
            "tests": tests,
            "checker": {"type": "program", "language": "python", "code": checker},
        }
    )
    assert [c.verdict for c in result.cases] == [
        "accepted",
        "presentation_error",
        "checker_error",
    ]
    assert result.cases[1].checker_message == "need two numbers"
    assert "code 3" in result.cases[2].checker_message
    assert result.summary.checker_errors == 1


async def test_compiled_checker_that_loops_is_a_checker_error(client: DcodexClient) -> None:
    checker = marked("#include <cstdio>\nint main() { for (;;) {} }")
    result = await client.judge(
        {
            "language": "python",
            "code": marked("print(1)"),
            "tests": [{"expected_output": "1\n"}],
            "checker": {"type": "program", "language": "c++", "code": checker},
        }
    )
    assert result.cases[0].verdict == "checker_error", result.checker_compile_output
    # Its CPU limit, or its wall clock on a machine too busy to give it the CPU.
    assert re.search(r"(cpu|wall)_time_limit", result.cases[0].checker_message)
    assert result.cases[0].status == "ok"  # the submission itself is not blamed
    broken = await client.judge(
        {
            "language": "python",
            "code": marked("print(1)"),
            "tests": [{"expected_output": "1\n"}],
            "checker": {"type": "program", "language": "cpp", "code": "int main( {"},
        }
    )
    assert broken.status == "checker_error" and broken.verdict == "checker_error"
    assert "error" in broken.checker_compile_output
    assert broken.cases[0].verdict == "skipped"


async def test_files_beside_the_program_and_the_compile(client: DcodexClient) -> None:
    header = {"name": "sum.h", "content": "inline int add(int a, int b) { return a + b; }\n"}
    data = {"name": "data.txt", "content": "41\n"}
    code = marked(
        '#include "sum.h"\n#include <fstream>\n#include <iostream>\n'
        'int main() { std::ifstream f("data.txt"); int x; f >> x; std::cout << add(x, 1); }'
    )
    result = await client.judge(
        {"language": "cpp", "code": code, "tests": cases(("", "42")), "files": [header, data]}
    )
    assert result.verdict == "accepted", result
    module = {"name": "helper.py", "content": "def twice(x):\n    return 2 * x\n"}
    attempt = marked(
        "import helper\nprint(helper.twice(21))\n"
        "try:\n    open('helper.py', 'a').write('x')\nexcept OSError:\n    print('read-only')\n"
    )
    python = await client.judge(
        {"language": "python", "code": attempt, "tests": cases(("", "42\nread-only\n")),
         "files": [module]}
    )  # fmt: skip
    assert python.verdict == "accepted", python.cases[0]


async def test_compile_error(client: DcodexClient) -> None:
    result = await client.judge(
        {"language": "cpp", "code": marked("int main( {"), "tests": cases(("", ""))}
    )
    assert result.status == "compile_error" and result.verdict == "compile_error"
    assert "error" in result.compile_output
    assert result.cases[0].verdict == "skipped"


@pytest.mark.parametrize(
    ("change", "code", "field"),
    [
        ({"tests": []}, 400, "tests"),
        ({"tests": [{"stdin": ""}] * 501}, 413, "tests"),
        ({"files": [{"name": "../x", "content": ""}]}, 400, "files.0.name"),
        ({"files": [{"name": "a/b", "content": ""}]}, 400, "files.0.name"),
        ({"files": [{"name": "..", "content": ""}]}, 400, "files.0.name"),
        ({"files": [{"name": "a\u0000b", "content": ""}]}, 400, "files.0.name"),
        ({"files": [{"name": "main.py", "content": ""}]}, 400, "files.0.name"),
        ({"files": [{"name": f"f{i}", "content": ""} for i in range(33)]}, 413, "files"),
        ({"files": [{"name": "big", "content": "x" * (512 * 1024 + 1)}]}, 413, "files"),
        ({"files": [{"name": "b", "content": "!!", "encoding": "base64"}]}, 400, "files.0.content"),
        (
            {"checker": {"type": "program", "language": "cobol", "code": "x"}},
            404,
            "checker.language",
        ),
        ({"checker": {"type": "program", "language": "python"}}, 400, "checker.code"),
        ({"checker": {"type": "lines", "abs_epsilon": 0.1}}, 400, "checker.abs_epsilon"),
        ({"checker": {"type": "regex"}}, 400, "checker.type"),
        (
            {"tests": [{"stdin": "", "limits": {"cpu_time_s": 999}}]},
            400,
            "tests.0.limits.cpu_time_s",
        ),
        ({"limits": {"cpu_time_s": 999}}, 400, "limits.cpu_time_s"),
        ({"only": [3]}, 400, "only.0"),
    ],
)
async def test_bad_input_is_a_clear_error(
    client: DcodexClient, change: dict[str, Any], code: int, field: str
) -> None:
    request = {"language": "python", "code": "print(1)", "tests": [{"stdin": ""}], **change}
    for via in ("judge", "judge.run"):
        with pytest.raises(DcodexError) as raised:
            await client.judge(request, via=via)
        assert (raised.value.code, raised.value.field) == (code, field), raised.value
    still = await client.judge({"language": "python", "code": "print(1)", "tests": [{}]})
    assert still.verdict == "ok"
