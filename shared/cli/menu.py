"""`dcodex bus run -i`: a menu to pick programs, type their stdin and toggle the cache.

It reads commands line by line from stdin, so it can be driven by a pipe as well as by
a person. An error reply for one run is shown and the menu goes on.
"""

from __future__ import annotations

import asyncio
import dataclasses
import sys
from dataclasses import dataclass

from rich.markup import escape

from dcodex.shared.cli.common import console, timed
from dcodex.shared.cli.jobs import Job, request_for, unescape
from dcodex.shared.cli.show import check_expectations, show
from dcodex.shared.client import DcodexClient
from dcodex.shared.contract import Limits
from dcodex.shared.errors import DcodexError

HELP = "a number runs that program · c toggles the cache · l lists again · q quits"


@dataclass
class Menu:
    jobs: list[Job]
    limits: Limits
    cache: bool = True

    async def loop(self, client: DcodexClient) -> None:
        self.list()
        while True:
            choice = await _ask("dcodex> ")
            if choice is None or choice.strip().lower() in ("q", "quit", "exit"):
                return
            await self.handle(client, choice.strip().lower())

    async def handle(self, client: DcodexClient, choice: str) -> None:
        if choice == "":
            return
        if choice == "c":
            self.cache = not self.cache
            console.print(f"cache {self._cache_word()}")
        elif choice in ("l", "?", "h", "help"):
            self.list()
        elif choice.isdigit() and 1 <= int(choice) <= len(self.jobs):
            await self.run(client, self.jobs[int(choice) - 1])
        else:
            console.print(
                f"[yellow]unknown choice {escape(choice)!r}:[/yellow] "
                f"type a number from 1 to {len(self.jobs)}, c, l or q"
            )

    async def run(self, client: DcodexClient, job: Job) -> None:
        default = job.stdin.encode("unicode_escape").decode() if job.stdin else "none"
        typed = await _ask(f"stdin for {job.path} (\\n is a newline; Enter: {default}): ")
        stdin = unescape(typed) if typed else job.stdin
        job = dataclasses.replace(job, stdin=stdin)
        try:
            result, elapsed = await timed(client, request_for(job, self.limits, self.cache))
        except DcodexError as exc:
            console.print(f"[red]error {exc.code}:[/red] {escape(exc.message)}")
            return
        problems = check_expectations(result, job.expect) if job.expect else []
        show(job, result, elapsed, problems)

    def list(self) -> None:
        console.print(f"[bold]{len(self.jobs)} programs[/bold], cache {self._cache_word()}")
        width = len(str(len(self.jobs)))
        for number, job in enumerate(self.jobs, 1):
            console.print(f"  {number:>{width}}  {escape(str(job.path))} ({job.language})")
        console.print(f"[dim]{HELP}[/dim]")

    def _cache_word(self) -> str:
        return "on" if self.cache else "off"


async def _ask(prompt: str) -> str | None:
    """One line typed by the user (None at end of input), read off the event loop."""
    console.print(prompt, end="")
    try:
        line = await asyncio.to_thread(input)
    except EOFError:
        console.print()
        return None
    if not sys.stdin.isatty():
        console.print(escape(line), highlight=False)  # a piped answer is not echoed otherwise
    return line
