"""The built-in checkers: compare a program's output with the expected output.

Each returns a `Checked`: the verdict and a short message saying where they differ.
`exact` and `lines` answer `presentation_error` when only whitespace differs (the
tokens match), as ICPC judges do; `tokens` and `float` ignore whitespace altogether.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass
from typing import Literal

from dcodex.shared.contract import Checker

DEFAULT_EPSILON = 1e-6  # testlib's rcmp6: 6 digits after the point, absolute or relative
SHOWN = 40  # characters of a differing token or line quoted in a message

CheckVerdict = Literal["accepted", "wrong_answer", "presentation_error", "checker_error"]


@dataclass(frozen=True)
class Checked:
    verdict: CheckVerdict
    message: str = ""


def check(checker: Checker, output: str, expected: str) -> Checked:
    """The verdict of a built-in checker (`program` checkers run in a sandbox instead)."""
    builtin: dict[str, Callable[[str, str], Checked]] = {
        "exact": _exact,
        "lines": _lines,
        "tokens": _tokens,
        "float": lambda out, exp: _floats(out, exp, checker),
    }
    return builtin[checker.type](output, expected)


def _exact(output: str, expected: str) -> Checked:
    if output == expected:
        return Checked("accepted")
    return _whitespace_only(output, expected) or _first_line_difference(
        output.split("\n"), expected.split("\n")
    )


def _lines(output: str, expected: str) -> Checked:
    got, want = _significant_lines(output), _significant_lines(expected)
    if got == want:
        return Checked("accepted")
    return _whitespace_only(output, expected) or _first_line_difference(got, want)


def _significant_lines(text: str) -> list[str]:
    """Lines without trailing whitespace, without the blank lines at the end."""
    lines = [line.rstrip() for line in text.split("\n")]
    while lines and not lines[-1]:
        lines.pop()
    return lines


def _whitespace_only(output: str, expected: str) -> Checked | None:
    if output.split() == expected.split():
        return Checked("presentation_error", "the tokens match but the whitespace differs")
    return None


def _first_line_difference(got: list[str], want: list[str]) -> Checked:
    for number, (line, wanted) in enumerate(zip(got, want, strict=False), start=1):
        if line != wanted:
            return Checked(
                "wrong_answer",
                f"line {number} differs: expected {_quote(wanted)}, found {_quote(line)}",
            )
    return Checked("wrong_answer", f"expected {len(want)} lines, found {len(got)}")


def _tokens(output: str, expected: str) -> Checked:
    return _compare_tokens(output.split(), expected.split(), lambda a, b: a == b)


def _floats(output: str, expected: str, checker: Checker) -> Checked:
    absolute = DEFAULT_EPSILON if checker.abs_epsilon is None else checker.abs_epsilon
    relative = DEFAULT_EPSILON if checker.rel_epsilon is None else checker.rel_epsilon

    def same(found: str, wanted: str) -> bool:
        a, b = _number(found), _number(wanted)
        if a is None or b is None:
            return found == wanted  # words among the numbers compare exactly
        return close(a, b, absolute, relative)

    return _compare_tokens(output.split(), expected.split(), same)


def close(found: float, wanted: float, absolute: float, relative: float) -> bool:
    """Equal within `absolute`, or within `relative` of the expected value (testlib's)."""
    if math.isnan(wanted) or math.isnan(found):
        return math.isnan(wanted) and math.isnan(found)
    if math.isinf(wanted) or math.isinf(found):
        return found == wanted
    difference = abs(found - wanted)
    return difference <= absolute or difference <= relative * abs(wanted)


def _number(token: str) -> float | None:
    try:
        return float(token)
    except ValueError:
        return None


def _compare_tokens(got: list[str], want: list[str], same: Callable[[str, str], bool]) -> Checked:
    for number, (found, wanted) in enumerate(zip(got, want, strict=False), start=1):
        if not same(found, wanted):
            return Checked(
                "wrong_answer",
                f"token {number} differs: expected {_quote(wanted)}, found {_quote(found)}",
            )
    if len(got) != len(want):
        return Checked("wrong_answer", f"expected {len(want)} tokens, found {len(got)}")
    return Checked("accepted", f"{len(want)} tokens")


def _quote(text: str) -> str:
    return repr(text if len(text) <= SHOWN else text[:SHOWN] + "…")


# The testlib convention for checker programs: what their exit code means.
TESTLIB_EXIT_CODES: dict[int, CheckVerdict] = {
    0: "accepted",
    1: "wrong_answer",
    2: "presentation_error",
}


def from_exit_code(exit_code: int | None) -> CheckVerdict:
    """A checker program's verdict: testlib's 0/1/2, anything else (or a kill) its failure."""
    if exit_code is None:
        return "checker_error"
    return TESTLIB_EXIT_CODES.get(exit_code, "checker_error")
