"""`dcodex bus judge`: judge solutions against a directory of test cases (docs/judge.md).

The directory holds `NAME.in` / `NAME.out` (or `NAME.ans`) pairs, taken in natural order
(`2.in` before `10.in`); a `.in` without an answer is run but not compared.
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import click
from rich.markup import escape
from rich.table import Table

from dcodex.shared.cli.common import EXIT_NOT_OK, Target, console, errors, with_client
from dcodex.shared.cli.jobs import limit_options, limits_from, read_source, registry
from dcodex.shared.cli.show import human_bytes
from dcodex.shared.cli.terminal import visible
from dcodex.shared.client import DcodexClient
from dcodex.shared.contract import (
    PASSING_VERDICTS,
    Checker,
    CheckerType,
    JudgeFile,
    JudgeRequest,
    JudgeResult,
    TestCase,
)

ANSWER_SUFFIXES = (".out", ".ans")
COLOURS = {"accepted": "green", "ok": "green", "skipped": "dim", "checker_error": "magenta"}


def natural_key(path: Path) -> list[Any]:
    return [int(part) if part.isdigit() else part for part in re.split(r"(\d+)", path.stem)]


def read_tests(directory: Path) -> list[TestCase]:
    """The cases of a test directory: every `.in`, with its `.out` or `.ans` if any."""
    if not directory.is_dir():
        raise click.BadParameter(f"no such directory: {directory}", param_hint="--tests")
    inputs = sorted(directory.glob("*.in"), key=natural_key)
    if not inputs:
        raise click.BadParameter(f"no NAME.in files in {directory}", param_hint="--tests")
    cases = []
    for path in inputs:
        answer = next(
            (path.with_suffix(s) for s in ANSWER_SUFFIXES if path.with_suffix(s).is_file()), None
        )
        cases.append(
            TestCase(
                name=path.stem,
                stdin=path.read_text(),
                expected_output=answer.read_text() if answer is not None else None,
            )
        )
    return cases


def language_of(path: Path, given: str | None, hint: str) -> str:
    if given:
        return given
    detected = registry().for_file(path)
    if detected is None:
        raise click.BadParameter(
            f"cannot tell the language of {path} from its extension", param_hint=hint
        )
    return detected.id


def extra_file(path: Path) -> JudgeFile:
    if not path.is_file():
        raise click.BadParameter(f"no such file: {path}", param_hint="--file")
    data = path.read_bytes()
    try:
        return JudgeFile(name=path.name, content=data.decode())
    except UnicodeDecodeError:
        import base64

        return JudgeFile(name=path.name, content=base64.b64encode(data).decode(), encoding="base64")


@click.command()
@click.option(
    "--solution",
    "-f",
    "solutions",
    multiple=True,
    required=True,
    type=click.Path(path_type=Path, dir_okay=False, exists=True),
    help="a solution to judge (repeat for several)",
)
@click.option(
    "--tests",
    "tests_dir",
    required=True,
    type=click.Path(path_type=Path, file_okay=False),
    help="directory of NAME.in and NAME.out (or NAME.ans) files",
)
@click.option(
    "--checker",
    "checker_file",
    type=click.Path(path_type=Path, dir_okay=False, exists=True),
    default=None,
    help="a checker program (testlib convention: checker input output answer; exit 0/1/2)",
)
@click.option(
    "--checker-type",
    type=click.Choice(["exact", "lines", "tokens", "float"]),
    default=None,
    help="a built-in checker [default: lines]",
)
@click.option("--abs-epsilon", type=float, default=None, help="float checker: absolute epsilon")
@click.option("--rel-epsilon", type=float, default=None, help="float checker: relative epsilon")
@click.option(
    "--file",
    "extra_files",
    multiple=True,
    type=click.Path(path_type=Path, dir_okay=False),
    help="an extra file for the working directory (a header, a module, data)",
)
@click.option("--language", "-l", default=None, help="language of the solutions")
@click.option("--stop-on-first-failure", "-x", is_flag=True, help="skip the cases after one fails")
@click.option("--no-cache", is_flag=True, help="neither read nor write cached case results")
@click.option("--json", "as_json", is_flag=True, help="print each judge result as one JSON line")
@limit_options
@click.pass_obj
def judge(
    target: Target,
    /,
    solutions: tuple[Path, ...],
    tests_dir: Path,
    checker_file: Path | None,
    checker_type: CheckerType | None,
    abs_epsilon: float | None,
    rel_epsilon: float | None,
    extra_files: tuple[Path, ...],
    language: str | None,
    stop_on_first_failure: bool,
    no_cache: bool,
    as_json: bool,
    **limit_values: Any,
) -> None:
    """Judge solutions against a test directory: a verdict, time and memory per case.

    Exits 0 when every solution is accepted (or ends ok where nothing is compared), 1
    when one is not, 2 on bad usage or input, an error reply, or DCodeX unreachable.
    """
    if checker_file is not None and checker_type is not None:
        raise click.UsageError("give --checker or --checker-type, not both")
    checker = Checker(
        type=checker_type or ("program" if checker_file else "lines"),
        abs_epsilon=abs_epsilon,
        rel_epsilon=rel_epsilon,
    )
    if checker_file is not None:
        checker = checker.model_copy(
            update={
                "language": language_of(checker_file, None, "--checker"),
                "code": read_source(checker_file),
            }
        )
    tests = read_tests(tests_dir)
    files = [extra_file(path) for path in extra_files]
    requests = [
        (
            path,
            JudgeRequest(
                language=language_of(path, language, "--solution"),
                code=read_source(path),
                tests=tests,
                limits=limits_from(limit_values),
                checker=checker,
                files=files,
                stop_on_first_failure=stop_on_first_failure,
                cache=not no_cache,
            ),
        )
        for path in solutions
    ]

    async def judge_all(client: DcodexClient) -> int:
        failures = 0
        for path, request in requests:
            result = await client.judge(request)
            failures += result.verdict not in PASSING_VERDICTS
            if as_json:
                print(result.model_dump_json())
            else:
                show_result(path, result)
        return failures

    failures = with_client(target, judge_all)
    if failures:
        if not as_json:
            errors.print(f"[red]{failures} of {len(requests)} solutions were not accepted[/red]")
        raise SystemExit(EXIT_NOT_OK)


def show_result(path: Path, result: JudgeResult) -> None:
    console.print(f"[bold]{escape(str(path))}[/bold] ({result.language_version})")
    if result.status == "compile_error":
        console.print(visible(result.compile_output.rstrip()), markup=False)
    if result.status == "checker_error" and result.checker_compile_output:
        console.print("the checker did not compile:")
        console.print(visible(result.checker_compile_output.rstrip()), markup=False)
    table = Table("#", "case", "verdict", "time", "memory", "message", box=None)
    for case in result.cases:
        colour = COLOURS.get(case.verdict, "red")
        ran = case.verdict != "skipped"
        table.add_row(
            str(case.index + 1),
            escape(visible(case.name)),
            f"[{colour}]{case.verdict}[/{colour}]" + (" (cached)" if case.cache_hit else ""),
            f"{case.wall_time_ms:.0f} ms" if ran else "",
            human_bytes(case.peak_memory_bytes) if ran else "",
            escape(visible(case.checker_message.splitlines()[0] if case.checker_message else "")),
        )
    console.print(table)
    summary = result.summary
    colour = COLOURS.get(result.verdict, "red")
    console.print(
        f"[{colour}]{result.verdict}[/{colour}]: {summary.passed}/{summary.total} passed"
        + (f", {summary.skipped} skipped" if summary.skipped else "")
        + (
            f", first failure #{summary.first_failure + 1}"
            if summary.first_failure is not None
            else ""
        )
        + f"; cpu {summary.cpu_time_ms:.0f} ms, wall {summary.wall_time_ms:.0f} ms"
        + (
            f", slowest #{summary.slowest_case + 1} ({summary.slowest_wall_time_ms:.0f} ms)"
            if summary.slowest_case is not None
            else ""
        )
        + f", peak memory {human_bytes(summary.peak_memory_bytes)}"
        + (f", {summary.cache_hits} cached" if summary.cache_hits else "")
    )
