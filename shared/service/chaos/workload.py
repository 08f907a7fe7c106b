"""The requests a chaos scenario sends, and what a correct answer to each is.

A mix of what users send: interpreted and compiled programs, stdin, verdicts other
than ok (a non-zero exit, a wall-clock timeout), cache misses (a fresh nonce) and hits
(a program sent before), streamed and interactive runs. Every program carries the
scenario's marker as an argument, so a program left running is found by it.
"""

from __future__ import annotations

import random
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from dcodex.shared.client import DcodexClient
from dcodex.shared.contract import ExecutionResult
from dcodex.shared.errors import TIMEOUT, DcodexError

Check = Callable[[ExecutionResult], bool]


@dataclass(frozen=True)
class Job:
    kind: str
    request: dict[str, Any]
    check: Check
    mode: str = "execute"  # execute | stream | interactive
    stdin_live: str = ""


@dataclass
class Outcome:
    kind: str
    seconds: float
    correct: bool = False
    error_code: int | None = None  # a contract error reply (or our own deadline: 504)
    lost: bool = False  # no answer at all within the deadline
    detail: str = ""


def _ok(stdout: str) -> Check:
    return lambda r: r.status == "ok" and r.stdout == stdout


class Workload:
    """Makes jobs; remembers programs already sent, to send them again (cache hits)."""

    def __init__(self, marker: str, seed: int = 1) -> None:
        self.marker = marker
        self.random = random.Random(seed)
        self.sent: list[Job] = []

    def job(self) -> Job:
        kinds = [
            (self.python, 30),
            (self.c, 12),
            (self.stdin, 12),
            (self.exit_code, 8),
            (self.wall_timeout, 4),
            (self.hit, 20),
            (self.stream, 8),
            (self.interactive, 6),
        ]
        make = self.random.choices([k for k, _ in kinds], [w for _, w in kinds])[0]
        job = make()
        if job.mode == "execute" and job.kind != "hit":
            self.sent.append(job)
        return job

    def _request(self, language: str, code: str, **extra: Any) -> dict[str, Any]:
        return {"language": language, "code": code, "args": [self.marker], **extra}

    def python(self) -> Job:
        a, b = self.random.randrange(1000), self.random.randrange(1000)
        code = f"print({a} * {b})  # {uuid.uuid4().hex}"
        return Job("python", self._request("python", code), _ok(f"{a * b}\n"))

    def c(self) -> Job:
        n = self.random.randrange(10**6)
        code = f'#include <stdio.h>\nint main(void) {{ printf("%d\\n", {n} + 1); return 0; }}\n'
        code += f"/* {uuid.uuid4().hex} */\n"
        return Job("c", self._request("c", code), _ok(f"{n + 1}\n"))

    def stdin(self) -> Job:
        text = uuid.uuid4().hex
        code = "import sys\nprint(sys.stdin.read().upper())"
        return Job("stdin", self._request("python", code, stdin=text), _ok(text.upper() + "\n"))

    def exit_code(self) -> Job:
        code = f"import sys\nsys.exit(3)  # {uuid.uuid4().hex}"
        return Job(
            "exit_code",
            self._request("python", code),
            lambda r: r.status == "runtime_error" and r.exit_code == 3,
        )

    def wall_timeout(self) -> Job:
        code = "import time\ntime.sleep(30)"
        request = self._request("python", code, limits={"wall_time_s": 0.5}, cache=False)
        return Job("wall_timeout", request, lambda r: r.status == "wall_time_limit")

    def hit(self) -> Job:
        if not self.sent:
            return self.python()
        before = self.random.choice(self.sent)
        return Job("hit", before.request, before.check)

    def stream(self) -> Job:
        code = f"for i in range(3): print(i, flush=True)  # {uuid.uuid4().hex}"
        return Job("stream", self._request("python", code), _ok("0\n1\n2\n"), mode="stream")

    def interactive(self) -> Job:
        text = uuid.uuid4().hex
        code = "print(input()[::-1])"
        return Job(
            "interactive",
            self._request("python", code),
            _ok(text[::-1] + "\n"),
            mode="interactive",
            stdin_live=text + "\n",
        )


async def perform(client: DcodexClient, job: Job) -> Outcome:
    """Send one job; its outcome (never raises: every way it can end is recorded)."""
    started = time.monotonic()
    outcome = Outcome(job.kind, 0.0)
    try:
        result = await _send(client, job)
        outcome.correct = job.check(result)
        if not outcome.correct:
            outcome.detail = f"{result.status}: {result.stdout[:60]!r} {result.stderr[:120]!r}"
            if result.compile_output:
                outcome.detail += f" compile: {result.compile_output[:160]!r}"
    except DcodexError as exc:
        outcome.error_code = exc.code
        outcome.detail = exc.message[:200]
        # Our own deadline passed without an answer: that request was lost.
        outcome.lost = exc.code == TIMEOUT and "did not answer within" in exc.message
    except Exception as exc:  # anything else is a failure of ours: counted as lost
        outcome.lost = True
        outcome.detail = f"{type(exc).__name__}: {exc}"[:200]
    outcome.seconds = time.monotonic() - started
    return outcome


async def _send(client: DcodexClient, job: Job) -> ExecutionResult:
    if job.mode == "stream":
        async with client.live(job.request) as run:
            return await run.wait()
    if job.mode == "interactive":
        async with client.interactive(job.request) as run:
            await run.send(job.stdin_live)
            await run.close_stdin()
            return await run.wait()
    return await client.execute(job.request)


@dataclass
class Tally:
    outcomes: list[Outcome] = field(default_factory=list)

    def add(self, outcome: Outcome) -> None:
        self.outcomes.append(outcome)
