"""Checking a judge request and planning its cases: limits, files, cache keys.

Everything here is decided before anything runs, so bad input is a clear contract error
(400 or 413 naming the field) and never a half-judged submission.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import json
from collections.abc import Iterable, Sequence
from dataclasses import dataclass

from dcodex.shared.contract import EffectiveLimits, JudgeFile, JudgeRequest, Limits
from dcodex.shared.errors import BAD_REQUEST, TOO_LARGE, DcodexError

# The files a program checker is given, in the order of its arguments (testlib's).
CHECKER_FILES = ("input.txt", "output.txt", "answer.txt")
MAX_NAME_BYTES = 255


@dataclass(frozen=True)
class JudgeCaps:
    """The server's bounds on a judge request (docs/judge.md, limits)."""

    max_cases: int
    max_tests_bytes: int
    max_files: int
    max_files_bytes: int
    max_code_bytes: int
    max_stdin_bytes: int


def check_request(request: JudgeRequest, caps: JudgeCaps) -> None:
    """400/413 naming the field for everything a judge request may get wrong."""
    _check_code(request, caps)
    _check_tests(request, caps)
    _check_checker(request)
    decoded_files(request.files, caps.max_files, caps.max_files_bytes)  # names, sizes
    if request.only is not None:
        for position, index in enumerate(request.only):
            if index >= len(request.tests):
                raise DcodexError(
                    BAD_REQUEST,
                    f"only.{position}: there is no case {index} (the test set has "
                    f"{len(request.tests)})",
                    f"only.{position}",
                )


def _check_code(request: JudgeRequest, caps: JudgeCaps) -> None:
    for field, code in (("code", request.code), ("checker.code", request.checker.code or "")):
        if len(code.encode()) > caps.max_code_bytes:
            raise DcodexError(
                TOO_LARGE, f"{field} is larger than {caps.max_code_bytes} bytes", field
            )


def _check_tests(request: JudgeRequest, caps: JudgeCaps) -> None:
    if not request.tests:
        raise DcodexError(BAD_REQUEST, "tests: the test set is empty", "tests")
    if len(request.tests) > caps.max_cases:
        raise DcodexError(
            TOO_LARGE,
            f"tests: {len(request.tests)} cases, more than the server's {caps.max_cases}",
            "tests",
        )
    total = 0
    for index, case in enumerate(request.tests):
        for field, text in (("stdin", case.stdin), ("expected_output", case.expected_output)):
            size = len((text or "").encode())
            if size > caps.max_stdin_bytes:
                raise DcodexError(
                    TOO_LARGE,
                    f"tests.{index}.{field} is larger than {caps.max_stdin_bytes} bytes",
                    f"tests.{index}.{field}",
                )
            total += size
    if total > caps.max_tests_bytes:
        raise DcodexError(
            TOO_LARGE,
            f"tests: the test set holds {total} bytes, more than the server's "
            f"{caps.max_tests_bytes}",
            "tests",
        )


def _check_checker(request: JudgeRequest) -> None:
    checker = request.checker
    if checker.type == "program":
        for field in ("language", "code"):
            if not getattr(checker, field):
                raise DcodexError(
                    BAD_REQUEST, f"checker.{field}: a program checker needs one", f"checker.{field}"
                )
        return
    for field in ("language", "code"):
        if getattr(checker, field) is not None:
            raise DcodexError(
                BAD_REQUEST,
                f"checker.{field}: only a `program` checker has one (this is `{checker.type}`)",
                f"checker.{field}",
            )
    if checker.type != "float":
        for field in ("abs_epsilon", "rel_epsilon"):
            if getattr(checker, field) is not None:
                raise DcodexError(
                    BAD_REQUEST,
                    f"checker.{field}: only the `float` checker has one (this is `{checker.type}`)",
                    f"checker.{field}",
                )


def decoded_files(
    files: Sequence[JudgeFile], max_files: int, max_bytes: int
) -> list[tuple[str, bytes]]:
    """A request's files as (name, bytes), checked: plain unique names, count and size."""
    if len(files) > max_files:
        raise DcodexError(
            TOO_LARGE, f"files: {len(files)} files, more than the server's {max_files}", "files"
        )
    seen: set[str] = set()
    decoded: list[tuple[str, bytes]] = []
    total = 0
    for index, entry in enumerate(files):
        field = f"files.{index}"
        _check_name(entry.name, f"{field}.name")
        if entry.name in seen:
            raise DcodexError(
                BAD_REQUEST, f"{field}.name: {entry.name!r} is given twice", f"{field}.name"
            )
        seen.add(entry.name)
        data = _decode(entry.content, entry.encoding, f"{field}.content")
        total += len(data)
        if total > max_bytes:
            raise DcodexError(
                TOO_LARGE, f"files: more than the server's {max_bytes} bytes in all", "files"
            )
        decoded.append((entry.name, data))
    return decoded


def _check_name(name: str, field: str) -> None:
    """A name that can only mean a new file right in the working directory."""
    problem = None
    if not name:
        problem = "is empty"
    elif "\0" in name:
        problem = "holds a NUL"
    elif "/" in name or "\\" in name:
        problem = "holds a path separator: files go in the working directory itself"
    elif name in (".", ".."):
        problem = "names a directory"
    elif len(name.encode()) > MAX_NAME_BYTES:
        problem = f"is longer than {MAX_NAME_BYTES} bytes"
    if problem is not None:
        raise DcodexError(BAD_REQUEST, f"{field}: {name!r} {problem}", field)


def check_reserved(files: Sequence[JudgeFile], reserved: Iterable[str | None]) -> None:
    """400 when a file would take the place of the program's own (its source or binary)."""
    taken = set(reserved)
    for index, entry in enumerate(files):
        if entry.name in taken:
            raise DcodexError(
                BAD_REQUEST,
                f"files.{index}.name: {entry.name!r} is the name of the program's own file",
                f"files.{index}.name",
            )


def _decode(content: str, encoding: str, field: str) -> bytes:
    if encoding == "utf-8":
        return content.encode()
    try:
        return base64.b64decode(content, validate=True)
    except (binascii.Error, ValueError) as exc:
        raise DcodexError(BAD_REQUEST, f"{field}: not valid base64 ({exc})", field) from exc


def case_limits(
    request: JudgeRequest, defaults: EffectiveLimits, ceilings: EffectiveLimits
) -> list[EffectiveLimits]:
    """Each case's limits: the defaults, then the request's, then the case's; all under
    the ceilings (400 naming the field, e.g. `tests.3.limits.cpu_time_s`)."""
    common = defaults.apply(request.limits, ceilings)
    planned = []
    for index, case in enumerate(request.tests):
        try:
            planned.append(common.apply(case.limits, ceilings))
        except DcodexError as exc:
            field = f"tests.{index}.{exc.field}" if exc.field else f"tests.{index}.limits"
            raise DcodexError(exc.code, f"tests.{index}.{exc.message}", field) from exc
    return planned


def merged_limits(request: Limits, case: Limits) -> Limits:
    """The request's limits with the case's laid over them."""
    return request.model_copy(update=case.model_dump(exclude_none=True))


def case_name(request: JudgeRequest, index: int) -> str:
    return request.tests[index].name or str(index + 1)


@dataclass(frozen=True)
class Toolchains:
    """What besides the request decides a case's result: versions and effective options."""

    language_id: str
    language_version: str
    std: str | None
    optimization: str | None
    checker_language: str | None = None
    checker_version: str | None = None


def case_keys(request: JudgeRequest, limits: list[EffectiveLimits], tools: Toolchains) -> list[str]:
    """The result-cache key of every case: SHA-256 over all that decides its verdict.

    The submission, its files and the checker are hashed once and shared; a case's own
    input, arguments, expected output and limits make its key differ from the others'.
    """
    checker = request.checker.model_dump(mode="json")
    checker.update(language=tools.checker_language, version=tools.checker_version)
    common = _digest(
        {
            "kind": "judge-case",
            "language": tools.language_id,
            "version": tools.language_version,
            "std": tools.std,
            "optimization": tools.optimization,
            "code": request.code,
            "files": [entry.model_dump(mode="json") for entry in request.files],
            "checker": checker,
        }
    )
    return [
        _digest(
            {
                "common": common,
                "stdin": case.stdin,
                "args": case.args,
                "expected_output": case.expected_output,
                "limits": case_limit.model_dump(mode="json"),
            }
        )
        for case, case_limit in zip(request.tests, limits, strict=True)
    ]


def _digest(value: object) -> str:
    canonical = json.dumps(value, sort_keys=True, separators=(",", ":"), ensure_ascii=False)
    return hashlib.sha256(canonical.encode()).hexdigest()


def files_digest(files: Sequence[tuple[str, bytes]]) -> list[tuple[str, str]]:
    """What a compile digest holds of the files: names and SHA-256 of their bytes."""
    return [(name, hashlib.sha256(data).hexdigest()) for name, data in files]
