"""What `dcodex bus run` is asked to run: files, their language, stdin, limits, manifest.

Everything here is checked before connecting, so a missing file or an unknown
extension is a usage error (exit 2) even with no server around.
"""

from __future__ import annotations

import functools
import re
import tomllib
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypeVar

import click

from dcodex.shared.contract import ExecuteRequest, Limits
from dcodex.shared.languages.registry import Registry

F = TypeVar("F", bound=Callable[..., Any])
UNITS = {"": 1, "k": 1024, "m": 1024**2, "g": 1024**3}
SIZE = re.compile(r"^\s*(\d+)\s*([kmg]?)(?:i?b)?\s*$", re.IGNORECASE)


@dataclass(frozen=True)
class Job:
    """One file to run, with what the manifest expects of it (if anything)."""

    path: Path
    language: str
    stdin: str
    code: str
    expect: dict[str, Any] | None = None


class ByteSize(click.ParamType):  # type: ignore[type-arg]  # generic only in click >= 8.3
    """A byte count: `65536`, `64K`, `256MiB`, `4G` (powers of 1024)."""

    name = "bytes"

    def convert(self, value: Any, param: click.Parameter | None, ctx: click.Context | None) -> int:
        if isinstance(value, int):
            return value
        match = SIZE.match(str(value))
        if not match:
            self.fail(f"{value!r} is not a size such as 65536, 64K, 256MiB or 4G", param, ctx)
        return int(match.group(1)) * UNITS[match.group(2).lower()]


def limit_flag(field: str) -> str:
    """`cpu_time_s` → `--limit-cpu-time`, `memory_bytes` → `--limit-memory`."""
    stem = field.removesuffix("_s").removesuffix("_bytes")
    return "--limit-" + stem.replace("_", "-")


def limit_options(command: F) -> F:
    """One `--limit-*` option per field of the request's `limits` (they cannot drift)."""
    for name, field in reversed(Limits.model_fields.items()):
        kind: Any
        if name.endswith("_s"):
            kind, unit = click.FloatRange(min=0, min_open=True), "seconds"
        elif name.endswith("_bytes"):
            kind, unit = ByteSize(), "bytes, K/M/G suffixes allowed"
        else:
            kind, unit = click.IntRange(min=1), "count"
        command = click.option(
            limit_flag(name),
            f"limit_{name}",
            type=kind,
            default=None,
            help=f"limits.{name}: {field.description} ({unit}; default: the server's)",
        )(command)
    return command


def limits_from(values: dict[str, Any]) -> Limits:
    """The `Limits` of the `--limit-*` options given (`limit_<field>` keyword arguments)."""
    given = {
        name: values.get(f"limit_{name}")
        for name in Limits.model_fields
        if values.get(f"limit_{name}") is not None
    }
    return Limits(**given)


@functools.cache
def registry() -> Registry:
    """The languages this client knows by extension (the server may know more)."""
    return Registry.load()


def read_stdin(text: str | None, path: Path | None) -> str | None:
    if text is not None and path is not None:
        raise click.UsageError("give --stdin or --stdin-file, not both")
    if path is not None:
        if not path.is_file():
            raise click.BadParameter(f"no such file: {path}", param_hint="--stdin-file")
        return path.read_text()
    if text is None:
        return None
    return unescape(text)


def unescape(text: str) -> str:
    r"""Turn `\n`, `\t`, `\r` and `\\` typed on a command line into the characters."""
    out, chars = [], iter(text)
    for char in chars:
        if char != "\\":
            out.append(char)
            continue
        following = next(chars, "")
        out.append({"n": "\n", "t": "\t", "\\": "\\", "r": "\r"}.get(following, "\\" + following))
    return "".join(out)


def load_manifest(path: Path) -> dict[Path, dict[str, Any]]:
    try:
        with path.open("rb") as file:
            tables = tomllib.load(file)
    except tomllib.TOMLDecodeError as exc:
        raise click.BadParameter(
            f"{path} is not valid TOML: {exc}", param_hint="--manifest"
        ) from exc
    return {(path.parent / name).resolve(): table for name, table in tables.items()}


def source_paths(files: tuple[Path, ...], directories: tuple[Path, ...]) -> list[Path]:
    """The files named, then every file with a known extension under each directory."""
    paths: list[Path] = []
    for path in files:
        if not path.is_file():
            raise click.BadParameter(f"no such file: {path}", param_hint="--file")
        paths.append(path)
    for directory in directories:
        if not directory.is_dir():
            raise click.BadParameter(f"no such directory: {directory}", param_hint="--directory")
        found = [p for p in sorted(directory.rglob("*")) if p.is_file() and registry().for_file(p)]
        if not found:
            raise click.BadParameter(
                f"no source files with a known extension in {directory}", param_hint="--directory"
            )
        paths.extend(found)
    return paths


def make_job(
    path: Path,
    language: str | None,
    stdin: str | None,
    expectations: dict[Path, dict[str, Any]],
) -> Job:
    """`path` as a job: its language (given, else by extension) and its stdin."""
    detected = registry().for_file(path)
    name = language or (detected.id if detected else None)
    if name is None:
        raise click.BadParameter(
            f"cannot tell the language of {path} from its extension; use --language",
            param_hint="--file",
        )
    expect = expectations.get(path.resolve())
    job_stdin = stdin if stdin is not None else (expect or {}).get("stdin", "")
    return Job(path, name, job_stdin, read_source(path), expect)


def read_source(path: Path) -> str:
    try:
        return path.read_text(encoding="utf-8")
    except UnicodeDecodeError as exc:
        raise click.BadParameter(f"{path} is not UTF-8 text", param_hint="--file") from exc
    except OSError as exc:
        raise click.BadParameter(
            f"cannot read {path}: {exc.strerror}", param_hint="--file"
        ) from exc


def request_for(job: Job, limits: Limits, cache: bool) -> ExecuteRequest:
    return ExecuteRequest(
        language=job.language, code=job.code, stdin=job.stdin, limits=limits, cache=cache
    )
