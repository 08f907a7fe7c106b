"""`dcodex bus`: the command-line client (run files, list languages, ping services)."""

from __future__ import annotations

import asyncio
import collections
import json
import sys
import time
import tomllib
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypeVar

import click
from rich.console import Console
from rich.markup import escape
from rich.table import Table

from dcodex.shared.client import DcodexClient
from dcodex.shared.config import Settings, env_var
from dcodex.shared.contract import ExecuteRequest, ExecutionResult
from dcodex.shared.errors import UNAVAILABLE, DcodexError
from dcodex.shared.languages import Registry
from dcodex.shared.logging import configure_logging

T = TypeVar("T")
DEFAULT_URL = Settings.model_fields["nats_url"].default
STATUS_STYLE = {"ok": "green", "compile_error": "yellow", "internal_error": "red bold"}

console = Console(soft_wrap=True)  # never re-wrap a program's output
errors = Console(stderr=True, soft_wrap=True)


@dataclass(frozen=True)
class Job:
    """One file to run, with what the manifest expects of it (if anything)."""

    path: Path
    language: str
    stdin: str
    code: str
    expect: dict[str, Any] | None = None


@click.group()
@click.option(
    "--server",
    "-s",
    default=DEFAULT_URL,
    envvar=env_var("nats_url"),
    show_default=True,
    help="NATS URL of the DCodeX deployment",
)
@click.pass_context
def bus(ctx: click.Context, server: str) -> None:
    """Talk to a running DCodeX over NATS."""
    configure_logging("warning", "console")
    ctx.obj = server


@bus.command()
@click.option("--file", "-f", "files", multiple=True, type=click.Path(path_type=Path))
@click.option("--directory", "-d", "directories", multiple=True, type=click.Path(path_type=Path))
@click.option(
    "--stdin", "stdin_text", default=None, help="stdin for the programs; \\n is a newline"
)
@click.option("--stdin-file", type=click.Path(path_type=Path, dir_okay=False), default=None)
@click.option(
    "--language", "-l", default=None, help="language of every file (default: by extension)"
)
@click.option("--cache-demo", "-c", is_flag=True, help="run each file twice: the second is a hit")
@click.option("--no-cache", is_flag=True, help="neither read nor write the result cache")
@click.option(
    "--manifest",
    type=click.Path(path_type=Path, dir_okay=False, exists=True),
    default=None,
    help="TOML of expected verdicts and output; exit 1 when a run does not match",
)
@click.option("--json", "as_json", is_flag=True, help="print one result object per line")
@click.pass_obj
def run(
    server: str,
    files: tuple[Path, ...],
    directories: tuple[Path, ...],
    stdin_text: str | None,
    stdin_file: Path | None,
    language: str | None,
    cache_demo: bool,
    no_cache: bool,
    manifest: Path | None,
    as_json: bool,
) -> None:
    """Run source files and print their output, verdict, times and memory."""
    stdin = _stdin(stdin_text, stdin_file)
    expectations = _load_manifest(manifest) if manifest else {}
    jobs = _jobs(files, directories, language, stdin, expectations)
    if not jobs:
        raise click.UsageError("name programs to run with --file or --directory")
    failures = _with_client(
        server, lambda client: _run_jobs(client, jobs, cache_demo, no_cache, as_json)
    )
    if failures:
        errors.print(
            f"[red]{failures} of {len(jobs)} runs did not match the manifest[/red]", soft_wrap=True
        )
        sys.exit(1)


def _stdin(text: str | None, path: Path | None) -> str | None:
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
    r"""Turn `\n`, `\t` and `\\` typed on a command line into the characters."""
    out, chars = [], iter(text)
    for char in chars:
        if char != "\\":
            out.append(char)
            continue
        following = next(chars, "")
        out.append({"n": "\n", "t": "\t", "\\": "\\", "r": "\r"}.get(following, "\\" + following))
    return "".join(out)


def _load_manifest(path: Path) -> dict[Path, dict[str, Any]]:
    try:
        with path.open("rb") as file:
            tables = tomllib.load(file)
    except tomllib.TOMLDecodeError as exc:
        raise click.BadParameter(
            f"{path} is not valid TOML: {exc}", param_hint="--manifest"
        ) from exc
    return {(path.parent / name).resolve(): table for name, table in tables.items()}


def _jobs(
    files: tuple[Path, ...],
    directories: tuple[Path, ...],
    language: str | None,
    stdin: str | None,
    expectations: dict[Path, dict[str, Any]],
) -> list[Job]:
    registry = Registry.load()
    paths: list[Path] = []
    for path in files:
        if not path.is_file():
            raise click.BadParameter(f"no such file: {path}", param_hint="--file")
        paths.append(path)
    for directory in directories:
        if not directory.is_dir():
            raise click.BadParameter(f"no such directory: {directory}", param_hint="--directory")
        found = [p for p in sorted(directory.rglob("*")) if p.is_file() and registry.for_file(p)]
        if not found:
            raise click.BadParameter(
                f"no source files with a known extension in {directory}", param_hint="--directory"
            )
        paths.extend(found)
    jobs = []
    for path in paths:
        detected = registry.for_file(path)
        name = language or (detected.id if detected else None)
        if name is None:
            raise click.BadParameter(
                f"cannot tell the language of {path} from its extension; use --language",
                param_hint="--file",
            )
        expect = expectations.get(path.resolve())
        job_stdin = stdin if stdin is not None else (expect or {}).get("stdin", "")
        jobs.append(Job(path, name, job_stdin, _source(path), expect))
    return jobs


def _source(path: Path) -> str:
    try:
        return path.read_text(encoding="utf-8")
    except UnicodeDecodeError as exc:
        raise click.BadParameter(f"{path} is not UTF-8 text", param_hint="--file") from exc


async def _run_jobs(
    client: DcodexClient, jobs: list[Job], cache_demo: bool, no_cache: bool, as_json: bool
) -> int:
    failures = 0
    verdicts: collections.Counter[str] = collections.Counter()
    for job in jobs:
        request = ExecuteRequest(
            language=job.language, code=job.code, stdin=job.stdin, cache=not no_cache
        )
        started = time.perf_counter()
        result = await client.execute(request)
        elapsed = time.perf_counter() - started
        problems = check_expectations(result, job.expect) if job.expect else []
        failures += bool(problems)
        verdicts[result.status] += 1
        _show(job, result, elapsed, problems, as_json)
        if cache_demo:
            started = time.perf_counter()
            again = await client.execute(request)
            _show_cache_demo(job, again, elapsed, time.perf_counter() - started, as_json)
    if len(jobs) > 1 and not as_json:
        counts = ", ".join(f"{count} {status}" for status, count in sorted(verdicts.items()))
        console.rule(f"{len(jobs)} runs: {counts}")
    return failures


def check_expectations(result: ExecutionResult, expect: dict[str, Any]) -> list[str]:
    """What in `result` differs from a manifest entry."""
    problems = []
    if result.status != expect.get("status", "ok"):
        problems.append(f"status {result.status}, expected {expect.get('status', 'ok')}")
    for stream in ("stdout", "stderr"):
        wanted = expect.get(stream)
        if wanted and wanted not in getattr(result, stream):
            problems.append(f"{stream} lacks {wanted!r}")
    return problems


def _show(
    job: Job, result: ExecutionResult, elapsed: float, problems: list[str], as_json: bool
) -> None:
    if as_json:
        _print_json_line(job, result)
        return
    style = STATUS_STYLE.get(result.status, "magenta")
    mark = "" if job.expect is None else (" [green]✓[/green]" if not problems else " [red]✗[/red]")
    console.rule(f"[bold]{escape(str(job.path))}[/bold] ({result.language})")
    if result.compile_output.strip():
        console.print(f"[dim]compile:[/dim]\n{escape(result.compile_output.rstrip())}")
    if result.stdout:
        shown = _clip(result.stdout)
        console.print(escape(shown), end="" if shown.endswith("\n") else "\n")
    if result.stderr:
        console.print(f"[red]{escape(_clip(result.stderr))}[/red]")
    console.print(f"[{style}]{result.status}[/{style}]{mark}  {summary(result, elapsed)}")
    for problem in problems:
        console.print(f"  [red]{escape(problem)}[/red]")


def _ending(result: ExecutionResult) -> str:
    if result.signal is not None:
        return f"signal {result.signal}"
    return "not run" if result.exit_code is None else f"exit {result.exit_code}"


def summary(result: ExecutionResult, elapsed_s: float) -> str:
    """Exit, times, memory and cache of a result, on one line."""
    parts = [
        _ending(result),
        f"cpu {result.cpu_time_ms:.0f} ms",
        f"wall {result.wall_time_ms:.0f} ms",
        f"mem {result.peak_memory_bytes / 2**20:.1f} MiB",
    ]
    if result.compile_time_ms is not None:
        parts.append(f"compile {result.compile_time_ms:.0f} ms")
    parts.append(f"cache {'hit' if result.cache_hit else 'miss'}")
    parts.append(f"total {elapsed_s * 1000:.0f} ms")
    return "  ".join(parts)


def _show_cache_demo(
    job: Job, result: ExecutionResult, first_s: float, second_s: float, as_json: bool
) -> None:
    if as_json:
        _print_json_line(job, result)
        return
    speedup = first_s / second_s if second_s > 0 else float("inf")
    verdict = "[green]cache hit[/green]" if result.cache_hit else "[yellow]cache miss[/yellow]"
    console.print(
        f"again: {verdict}  {second_s * 1000:.1f} ms vs {first_s * 1000:.1f} ms "
        f"({speedup:.0f}x faster)"
    )


def _print_json_line(job: Job, result: ExecutionResult) -> None:
    click.echo(json.dumps({"file": str(job.path), **result.model_dump(mode="json")}))


def _clip(text: str, limit: int = 1000) -> str:
    return text if len(text) <= limit else text[:limit] + f"\n… ({len(text) - limit} more chars)"


@bus.command()
@click.pass_obj
def languages(server: str) -> None:
    """The languages the runners offer, and their limits."""

    async def show(client: DcodexClient) -> None:
        reply = await client.languages()
        table = Table("language", "aliases", "version", "compiled")
        for lang in reply.languages:
            table.add_row(
                lang.id, ", ".join(lang.aliases), lang.version, "yes" if lang.compiled else "no"
            )
        console.print(table)
        limits = Table("limit", "default", "ceiling")
        for name, default in reply.limits.defaults.model_dump().items():
            limits.add_row(name, f"{default:g}", f"{getattr(reply.limits.ceilings, name):g}")
        console.print(limits)
        console.print(f"isolation: {', '.join(reply.isolation)}")

    _with_client(server, show)


@bus.command()
@click.pass_obj
def ping(server: str) -> None:
    """Every DCodeX service instance that answers (NATS micro discovery)."""

    async def show(client: DcodexClient) -> None:
        answers = [a for a in await client.ping() if str(a.get("name", "")).startswith("dcodex-")]
        if not answers:
            raise DcodexError(UNAVAILABLE, f"no DCodeX service answers at {server}")
        table = Table("service", "id", "version")
        for answer in answers:
            table.add_row(answer["name"], answer["id"], answer["version"])
        console.print(table)

    _with_client(server, show)


def _with_client(server: str, action: Callable[[DcodexClient], Awaitable[T]]) -> T:
    """Run `action` with a connected client; bus failures become one clear line, exit 2."""

    async def main() -> T:
        async with await DcodexClient.connect(server) as client:
            return await action(client)

    try:
        return asyncio.run(main())
    except DcodexError as exc:
        message = exc.message
        if exc.code == UNAVAILABLE and "execute" in message:
            message = (
                f"no DCodeX cache service is reachable at {server}: start one with `dcodex up`"
            )
        errors.print(f"[red]error {exc.code}:[/red] {escape(message)}", soft_wrap=True)
        sys.exit(2)
