"""`dcodex bus judge` as a user runs it: a subprocess against the running stack."""

from __future__ import annotations

import json
import shutil
import uuid
from pathlib import Path

import pytest

from tests.conftest import ServiceProcesses
from tests.test_cli import ROOT, bus
from tests.test_cli import flat as squashed

pytestmark = pytest.mark.bus

EXAMPLES = ROOT / "examples" / "judge"


def test_every_example_solution_is_accepted(stack: ServiceProcesses) -> None:
    for problem in sorted(path for path in EXAMPLES.iterdir() if path.is_dir()):
        args = (
            (problem / "judge.args").read_text().split()
            if (problem / "judge.args").exists()
            else []
        )
        solutions = [
            arg for path in sorted((problem / "solutions").iterdir()) for arg in ("-f", str(path))
        ]
        done = bus(stack.url, "judge", "--tests", "tests", *args, *solutions, "--json", cwd=problem)
        assert done.returncode == 0, done.stdout + done.stderr
        results = [json.loads(line) for line in done.stdout.splitlines()]
        assert len(results) == len(solutions) // 2
        assert {result["verdict"] for result in results} == {"accepted"}


def test_table_natural_order_wrong_answer_and_exit_code(
    stack: ServiceProcesses, tmp_path: Path
) -> None:
    tests = tmp_path / "tests"
    shutil.copytree(EXAMPLES / "sum" / "tests", tests)
    (tests / "2.ans").write_text("1\n")  # wrong on purpose: -5 + 5 is 0
    (tests / "20.in").write_text("2 2\n")  # no answer: run, not compared
    solution = tmp_path / "sum.py"
    solution.write_text(f"# {uuid.uuid4().hex}\na, b = map(int, input().split())\nprint(a + b)\n")
    done = bus(stack.url, "judge", "-f", str(solution), "--tests", str(tests))
    assert done.returncode == 1, done.stdout + done.stderr
    out = squashed(done.stdout)
    assert out.index(" 3 accepted") < out.index(" 10 accepted") < out.index(" 20 ok")
    assert "2 wrong_answer" in out and "line 1 differs: expected '1', found '0'" in out
    assert "wrong_answer: 4/5 passed" in out and "first failure #2" in out
    assert "1 of 1 solutions were not accepted" in squashed(done.stderr)
    again = bus(stack.url, "judge", "-f", str(solution), "--tests", str(tests), "-x", "--json")
    result = json.loads(again.stdout)
    assert [case["verdict"] for case in result["cases"]] == [
        "accepted", "wrong_answer", "skipped", "skipped", "skipped",
    ]  # fmt: skip
    assert result["cases"][0]["cache_hit"] is True


def test_bad_usage_is_exit_2(stack: ServiceProcesses, tmp_path: Path) -> None:
    solution = tmp_path / "x.py"
    solution.write_text("print(1)\n")
    empty = tmp_path / "empty"
    empty.mkdir()
    done = bus(stack.url, "judge", "-f", str(solution), "--tests", str(empty))
    assert done.returncode == 2 and "no NAME.in files" in squashed(done.stderr)
    (empty / "1.in").write_text("")
    bad = bus(
        stack.url,
        "judge",
        "-f",
        str(solution),
        "--tests",
        str(empty),
        "--file",
        "/etc/hostname",
        "--file",
        "/etc/hostname",
    )
    assert bad.returncode == 2 and "files.1.name" in squashed(bad.stderr)
