"""`dcodex bus run` live: output printed as the program writes it, and `--attach`,
which connects this terminal to a running program's stdin and output
(docs/protocol.md, live events).
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import signal
import sys
import time
from collections.abc import Iterator

from rich.markup import escape

from dcodex.shared.cli.common import console, errors
from dcodex.shared.cli.jobs import Job
from dcodex.shared.cli.show import STATUS_STYLE, summary
from dcodex.shared.cli.terminal import visible
from dcodex.shared.client import DcodexClient, LiveRun
from dcodex.shared.contract import ExecuteRequest, ExecutionResult, OutputEvent, ResultEvent


async def show_live(
    client: DcodexClient, job: Job, request: ExecuteRequest
) -> tuple[ExecutionResult, float]:
    """Run `request`, printing its output as it comes; the result and the time taken.

    The verdict line is printed by the caller, which also knows the manifest.
    """
    started = time.perf_counter()
    console.rule(f"[bold]{escape(str(job.path))}[/bold] ({escape(job.language)})")
    result: ExecutionResult | None = None
    async with client.live(request) as run:
        async for event in run.events():
            if isinstance(event, ResultEvent):
                result = event.result
            else:
                _print_event(event)
    assert result is not None
    if (result.stdout + result.stderr) and not (result.stdout + result.stderr).endswith("\n"):
        console.print()  # the verdict line starts on a line of its own
    return result, time.perf_counter() - started


def _print_event(event: OutputEvent) -> None:
    if event.type == "compile" and event.data.strip():
        console.print(
            f"[dim]compile:[/dim]\n{escape(visible(event.data.rstrip()))}", highlight=False
        )
    elif event.type == "stdout":
        console.print(escape(visible(event.data)), end="", highlight=False)
    elif event.type == "stderr":
        console.print(f"[red]{escape(visible(event.data))}[/red]", end="", highlight=False)


def show_verdict(job: Job, result: ExecutionResult, elapsed_s: float, problems: list[str]) -> None:
    """The line after a live run's output: verdict, ✓/✗ against the manifest, figures."""
    style = STATUS_STYLE.get(result.status, "magenta")
    mark = "" if job.expect is None else (" [green]✓[/green]" if not problems else " [red]✗[/red]")
    console.print(f"[{style}]{result.status}[/{style}]{mark}  {summary(result, elapsed_s)}")
    for problem in problems:
        console.print(f"  [red]{escape(problem)}[/red]")


async def attach(client: DcodexClient, request: ExecuteRequest) -> ExecutionResult:
    """Run interactively with this process's stdin, stdout and stderr as the program's.

    Ctrl-C sends SIGINT to the program (a second one, SIGKILL); end of input (Ctrl-D)
    closes its stdin. The verdict goes to stderr at the end.
    """
    started = time.perf_counter()
    async with client.interactive(request) as run:
        with _keyboard_to(run), _stdin_to(run):
            async for event in run.events():
                if isinstance(event, OutputEvent) and event.type in ("stdout", "stderr"):
                    stream = sys.stdout if event.type == "stdout" else sys.stderr
                    stream.write(event.data)
                    stream.flush()
                elif isinstance(event, OutputEvent) and event.type == "compile":
                    sys.stderr.write(event.data)
    assert run.result is not None
    result = run.result
    style = STATUS_STYLE.get(result.status, "magenta")
    elapsed = time.perf_counter() - started
    errors.print(f"[{style}]{result.status}[/{style}]  {summary(result, elapsed)}")
    return result


@contextlib.contextmanager
def _stdin_to(run: LiveRun) -> Iterator[None]:
    """Forward what arrives on our stdin to the program, then its end."""
    loop = asyncio.get_running_loop()
    fd = sys.stdin.fileno()
    sending: set[asyncio.Task[None]] = set()
    previous: list[asyncio.Task[None]] = []

    def forward(chunk: bytes) -> None:
        async def send_after(before: list[asyncio.Task[None]]) -> None:
            for task in before:
                await task  # keep the order in which input was typed
            if chunk:
                await run.send(chunk.decode(errors="replace"))
            else:
                await run.close_stdin()

        task = asyncio.ensure_future(send_after(list(previous)))
        previous[:] = [task]
        sending.add(task)
        task.add_done_callback(sending.discard)

    def on_readable() -> None:
        chunk = os.read(fd, 65536)
        forward(chunk)
        if not chunk:
            loop.remove_reader(fd)

    loop.add_reader(fd, on_readable)
    try:
        yield
    finally:
        loop.remove_reader(fd)
        for task in sending:
            task.cancel()


@contextlib.contextmanager
def _keyboard_to(run: LiveRun) -> Iterator[None]:
    """Ctrl-C goes to the program: SIGINT, then SIGKILL if it asks again."""
    loop = asyncio.get_running_loop()
    sent: list[asyncio.Future[None]] = []

    def on_interrupt() -> None:
        name = "SIGINT" if not sent else "SIGKILL"
        sent.append(asyncio.ensure_future(run.signal(name)))

    loop.add_signal_handler(signal.SIGINT, on_interrupt)
    try:
        yield
    finally:
        loop.remove_signal_handler(signal.SIGINT)
