"""Running a miss ahead of its lookup: when a miss's run may go to the runners at once.

A request that is not in memory costs the cache one JetStream round trip (the lookup
in `dcodex-results` and the lease claim in `dcodex-inflight`, sent together) before it
can run. When a replica's lookups keep missing, the run is sent out with that round
trip instead of after it: the miss is answered about one round trip sooner.

The price is a run nobody uses when the round trip says the request was not this
replica's to run: its result was in the bucket (a hit from the bucket), or another
replica holds its lease. The requester still gets the stored result, or the leading
replica's, exactly as without the run ahead; the run ahead goes on to its end on a
runner and its result is dropped. So that this stays rare, a replica runs ahead only
after its last `LED_MISSES_TO_OPEN` lookups in the bucket were all misses it ran itself
(that many more for each run ahead whose fate is still open), and stops at the first
that was not (docs/cache.md, run ahead).
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable

import structlog

from dcodex.shared.contract import ExecutionResult

log = structlog.get_logger("dcodex.cache")

# Misses in a row this replica ran itself before it runs one ahead: at most one run ahead
# goes unused for every this many misses it ran, whatever the pattern of requests.
LED_MISSES_TO_OPEN = 8


class RunAheadGate:
    """Counts this replica's lookups in the bucket that were misses it ran itself, in a
    row, and its runs ahead not yet taken or dropped."""

    def __init__(self, enabled: bool = True, needed: int = LED_MISSES_TO_OPEN) -> None:
        self.enabled = enabled
        self.needed = needed
        self._in_a_row = 0
        self._open_runs = 0

    @property
    def open(self) -> bool:
        """Whether the next miss may be run ahead of its lookup. Misses arriving
        together all find it as the last lookup left it: each run ahead still open asks
        for `needed` more misses in a row, so a burst of them cannot all go unused."""
        return self.enabled and self._in_a_row >= self.needed * (self._open_runs + 1)

    def sent(self) -> None:
        """A run went ahead; its fate is open until `settled`."""
        self._open_runs += 1

    def settled(self, used: bool) -> None:
        """A run ahead was taken (`used`) or dropped; a dropped one was not this
        replica's to run, so the gate closes."""
        self._open_runs -= 1
        if not used:
            self.record(led=False)

    def record(self, led: bool) -> None:
        """A lookup's outcome: `led` when it missed and this replica ran it (closed
        again, from the start, by a hit from the bucket or a run shared with another)."""
        self._in_a_row = self._in_a_row + 1 if led else 0


class RunAhead:
    """A miss's run sent to the runners with its lookup: taken by the request when the
    run is this replica's to lead, else dropped, to end on its runner unused."""

    def __init__(
        self,
        task: asyncio.Task[ExecutionResult] | None = None,
        counted: Callable[[str], None] = lambda _outcome: None,
    ) -> None:
        self._task = task
        self._counted = counted
        self.sent = task is not None

    async def result(self, run: Callable[[], Awaitable[ExecutionResult]]) -> ExecutionResult:
        """The run ahead's result when there is one to take, else `run()`'s."""
        task, self._task = self._task, None
        if task is None:
            return await run()
        self._counted("used")
        return await task

    def drop(self) -> None:
        """Leave the run ahead, if not taken, to end on its own; its result is dropped."""
        task, self._task = self._task, None
        if task is None:
            return
        self._counted("unused")
        _dropped.add(task)
        task.add_done_callback(_forget)


# Dropped runs, held until they end (the event loop keeps only weak references).
_dropped: set[asyncio.Task[ExecutionResult]] = set()


def _forget(task: asyncio.Task[ExecutionResult]) -> None:
    _dropped.discard(task)
    if not task.cancelled() and task.exception() is not None:
        # Nobody waits for it: what it failed with is no requester's answer.
        log.debug("run_ahead_failed", error=repr(task.exception()))
