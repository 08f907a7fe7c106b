"""What every `dcodex bus` command shares: where DCodeX is, the consoles, clear failures.

Exit codes: 0 success; 1 a run's verdict was not `ok` (or, with `--manifest`, a run did
not match it); 2 bad usage, bad input files, an error reply, or nothing reachable.
"""

from __future__ import annotations

import asyncio
import re
import sys
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import NoReturn, TypeVar

from rich.console import Console
from rich.markup import escape

from dcodex.shared.bus.connect import ConnectOptions
from dcodex.shared.cli.terminal import visible
from dcodex.shared.client import DcodexClient
from dcodex.shared.contract import ExecuteRequest, ExecutionResult
from dcodex.shared.errors import UNAVAILABLE, DcodexError
from dcodex.shared.subjects import serving

T = TypeVar("T")
EXIT_NOT_OK = 1
EXIT_ERROR = 2

# Rich colours only when the stream is a terminal (and honours NO_COLOR / FORCE_COLOR).
console = Console(soft_wrap=True)  # never re-wrap a program's output
errors = Console(stderr=True, soft_wrap=True)

# Which service answers a subject (after the prefix), for "no ... is reachable" lines.
NO_RESPONDERS = re.compile(r"^no service answers on (?:[^.\s]+)\.(\w+)")


@dataclass(frozen=True)
class Target:
    """A DCodeX deployment as the `bus` group's options name it."""

    options: ConnectOptions
    prefix: str
    timeout_s: float

    @property
    def url(self) -> str:
        return self.options.url


def fail(message: str, code: int = EXIT_ERROR, label: str = "error") -> NoReturn:
    errors.print(f"[red]{label}:[/red] {escape(visible(message))}")
    sys.exit(code)


def with_client(
    target: Target, action: Callable[[DcodexClient], Awaitable[T]], needs: str | None = "cache"
) -> T:
    """Run `action` with a connected client; failures become one clear line, exit 2.

    `needs` is the service the command asks first, named when nothing answers.
    """

    async def main() -> T:
        client = await DcodexClient.connect(
            target.options, prefix=target.prefix, timeout=target.timeout_s
        )
        async with client:
            return await action(client)

    try:
        return asyncio.run(main())
    except DcodexError as exc:
        if exc.code == UNAVAILABLE:
            fail(_unavailable(exc, target.url, needs))
        fail(exc.message, label=f"error {exc.code}")
    except KeyboardInterrupt:
        fail("interrupted", 130)


def _unavailable(exc: DcodexError, url: str, needs: str | None) -> str:
    service = needs
    if match := NO_RESPONDERS.match(exc.message):
        served_by = serving(match.group(1))
        service = served_by.name if served_by else match.group(1)
    elif not exc.message.startswith("no NATS server"):
        return exc.message  # refused credentials, TLS, a missing key file
    named = f"{service} service" if service else "service"
    return f"no DCodeX {named} is reachable at {url}: start one with `dcodex up`"


async def timed(client: DcodexClient, request: ExecuteRequest) -> tuple[ExecutionResult, float]:
    started = time.perf_counter()
    result = await client.execute(request)
    return result, time.perf_counter() - started
