"""`dcodex bus run`: run files or directories through `dcodex.execute` and show the results."""

from __future__ import annotations

import contextlib
from pathlib import Path
from typing import Any

import click
from rich.progress import (
    BarColumn,
    MofNCompleteColumn,
    Progress,
    SpinnerColumn,
    TextColumn,
    TimeElapsedColumn,
)

from dcodex.shared.cli.common import EXIT_NOT_OK, Target, console, errors, timed, with_client
from dcodex.shared.cli.jobs import (
    Job,
    limit_options,
    limits_from,
    load_manifest,
    make_job,
    read_stdin,
    request_for,
    source_paths,
)
from dcodex.shared.cli.live import show_live, show_verdict
from dcodex.shared.cli.menu import Menu
from dcodex.shared.cli.show import (
    Tally,
    check_expectations,
    print_json_line,
    show,
    show_cache_demo,
)
from dcodex.shared.client import DcodexClient
from dcodex.shared.contract import ExecutionResult, Limits

DEFAULT_MENU_DIRECTORY = Path("examples")


@click.command()
@click.option(
    "--file", "-f", "files", multiple=True, type=click.Path(path_type=Path), help="a file to run"
)
@click.option(
    "--directory",
    "-d",
    "directories",
    multiple=True,
    type=click.Path(path_type=Path),
    help="run every source file under it, recursively",
)
@click.option(
    "--stdin", "stdin_text", default=None, help="stdin for the programs; \\n is a newline"
)
@click.option(
    "--stdin-file",
    type=click.Path(path_type=Path, dir_okay=False),
    default=None,
    help="stdin for the programs, verbatim",
)
@click.option(
    "--language", "-l", default=None, help="language of every file (default: by extension)"
)
@click.option(
    "--cache-demo", "-c", is_flag=True, help="run each file twice: the second is a cache hit"
)
@click.option(
    "--interactive", "-i", is_flag=True, help="a menu to pick files, type stdin, toggle the cache"
)
@click.option("--no-cache", is_flag=True, help="neither read nor write the result cache")
@click.option(
    "--manifest",
    type=click.Path(path_type=Path, dir_okay=False, exists=True),
    default=None,
    help="TOML of expected verdicts and output; exit 1 when a run does not match",
)
@click.option("--json", "as_json", is_flag=True, help="print one result object per line")
@click.option(
    "--live/--no-live",
    default=True,
    show_default=True,
    help="print output as the program writes it (--no-live: when it has ended)",
)
@click.option(
    "--attach",
    "-a",
    is_flag=True,
    help="run one file interactively: this terminal is its stdin and output",
)
@limit_options
@click.pass_obj
def run(
    target: Target,
    /,
    files: tuple[Path, ...],
    directories: tuple[Path, ...],
    stdin_text: str | None,
    stdin_file: Path | None,
    language: str | None,
    cache_demo: bool,
    interactive: bool,
    no_cache: bool,
    manifest: Path | None,
    as_json: bool,
    live: bool,
    attach: bool,
    **limit_values: Any,
) -> None:
    """Run source files and print their output, verdict, times and memory.

    Exits 0 when every run's verdict is `ok` (with --manifest: when every run matches
    it), 1 when one is not, 2 on bad usage or input, an error reply, or when DCodeX
    is unreachable.
    """
    stdin = read_stdin(stdin_text, stdin_file)
    limits = limits_from(limit_values)
    expectations = load_manifest(manifest) if manifest else {}
    if interactive:
        if as_json:
            raise click.UsageError("--interactive shows a menu; it does not combine with --json")
        if not files and not directories:
            directories = (DEFAULT_MENU_DIRECTORY,)
    paths = source_paths(files, directories)
    jobs = [make_job(path, language, stdin, expectations) for path in paths]
    if not jobs:
        raise click.UsageError("name programs to run with --file or --directory")
    if attach:
        _attach(target, jobs, limits, as_json or interactive or cache_demo or bool(manifest))
        return
    if interactive:
        menu = Menu(jobs, limits, cache=not no_cache)
        with_client(target, menu.loop)
        return
    tally = with_client(
        target,
        lambda client: run_jobs(client, jobs, limits, cache_demo, no_cache, as_json, live),
    )
    _exit(tally, checked=manifest is not None)


def _attach(target: Target, jobs: list[Job], limits: Limits, conflicting: bool) -> None:
    from dcodex.shared.cli.live import attach

    if len(jobs) != 1 or conflicting:
        raise click.UsageError(
            "--attach runs one --file, without --json, --interactive, --cache-demo or --manifest"
        )
    (job,) = jobs

    async def attached(client: DcodexClient) -> ExecutionResult:
        request = request_for(job, await attach_limits(client, limits), cache=False)
        return await attach(client, request)

    result = with_client(target, attached)
    if result.status != "ok":
        raise SystemExit(EXIT_NOT_OK)


async def attach_limits(client: DcodexClient, limits: Limits) -> Limits:
    """An attached run waits for a person: unless --limit-wall-time says otherwise, its
    wall clock is the longest the server allows (its ceiling), not the default of a
    program that reads a file (docs/judge.md, first use)."""
    if limits.wall_time_s is not None:
        return limits
    ceiling = (await client.languages()).limits.ceilings.wall_time_s
    return limits.model_copy(update={"wall_time_s": ceiling})


def _exit(tally: Tally, checked: bool) -> None:
    if checked and tally.mismatches:
        errors.print(
            f"[red]{tally.mismatches} of {tally.runs} runs did not match the manifest[/red]"
        )
        raise SystemExit(EXIT_NOT_OK)
    if not checked and tally.not_ok:
        errors.print(f"[red]{tally.not_ok} of {tally.runs} runs did not end ok[/red]")
        raise SystemExit(EXIT_NOT_OK)


async def run_jobs(
    client: DcodexClient,
    jobs: list[Job],
    limits: Limits,
    cache_demo: bool,
    no_cache: bool,
    as_json: bool,
    live: bool = False,
) -> Tally:
    tally = Tally()
    with _progress(len(jobs), as_json) as progress:
        task = progress.add_task("", total=len(jobs)) if progress is not None else None
        for job in jobs:
            if progress is not None and task is not None:
                progress.update(task, description=str(job.path))
            request = request_for(job, limits, cache=not no_cache)
            if live and not as_json:
                result, elapsed = await show_live(client, job, request)
            else:
                result, elapsed = await timed(client, request)
            problems = check_expectations(result, job.expect) if job.expect else []
            tally.mismatches += bool(problems)
            tally.add(result, elapsed)
            if as_json:
                print_json_line(job, result, elapsed)
            elif live:
                show_verdict(job, result, elapsed, problems)
            else:
                show(job, result, elapsed, problems)
            if cache_demo:
                again, again_elapsed = await timed(client, request)
                tally.add(again, again_elapsed)
                if as_json:
                    print_json_line(job, again, again_elapsed)
                else:
                    show_cache_demo(again, elapsed, again_elapsed)
            if progress is not None and task is not None:
                progress.advance(task)
    if tally.runs > 1 and not as_json:
        tally.show()
    return tally


def _progress(count: int, as_json: bool) -> contextlib.AbstractContextManager[Progress | None]:
    """A progress bar under the results, only for several runs shown on a terminal."""
    if count < 2 or as_json or not console.is_terminal:
        return contextlib.nullcontext()
    return Progress(
        SpinnerColumn(),
        TextColumn("{task.description}"),
        BarColumn(),
        MofNCompleteColumn(),
        TimeElapsedColumn(),
        console=console,
        transient=True,
    )
