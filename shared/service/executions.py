"""The executions a service instance has, by execution id: under way, or finished a
short while ago (the runner's runs; the cache's requests).

Two things rest on it. A request whose execution id this instance already has joins
that execution instead of running the program again (an execution id runs at most once
per instance). And the status subjects (`dcodex.status.run`, `dcodex.status.execute`)
answer from it: a requester whose reply was lost (NATS restarted while the run
finished) fetches the result, and one that hears nothing from any instance knows the
execution is gone (its instance died) within seconds (`dcodex.shared.bus.watch`).
"""

from __future__ import annotations

import asyncio
import collections
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass

from dcodex.shared.contract import ExecutionResult, RunStatus
from dcodex.shared.errors import CONFLICT, INTERNAL, DcodexError

KEEP_S = 120.0  # a finished run's result stays this long for whoever asks again
MOST_KEPT = 4096  # and no more than this many of them
MOST_BYTES = 64 * 2**20  # nor more than about this much of their output


@dataclass
class _Finished:
    result: ExecutionResult
    at: float
    fingerprint: str

    @property
    def size(self) -> int:
        result = self.result
        return 512 + len(result.stdout) + len(result.stderr) + len(result.compile_output or "")


def owned_key(execution_id: str, tenant: str | None) -> str:
    """Where an execution is kept: ids are unique per tenant (docs/tenancy.md).

    A tenant's key can never be an id of no tenant, nor another tenant's: ids and
    tenants are single tokens without `/`.
    """
    return execution_id if tenant is None else f"{tenant}/{execution_id}"


def reused_id(execution_id: str) -> DcodexError:
    """An execution id this instance has, asked for with a different request (409).

    The message names no id: error messages show in `$SRV.STATS` (last_error).
    """
    return DcodexError(
        CONFLICT,
        "this execution_id names another request (under way or just finished); "
        "leave it out to get a fresh one",
        "execution_id",
    )


class Executions:
    def __init__(
        self, keep_s: float = KEEP_S, most: int = MOST_KEPT, most_bytes: int = MOST_BYTES
    ) -> None:
        self.keep_s = keep_s
        self.most = most
        self.most_bytes = most_bytes
        self._bytes = 0
        self._running: dict[str, tuple[asyncio.Future[ExecutionResult], str]] = {}
        self._finished: collections.OrderedDict[str, _Finished] = collections.OrderedDict()

    def finished(self, execution_id: str) -> ExecutionResult | None:
        self._forget_old()
        kept = self._finished.get(execution_id)
        return kept.result if kept is not None else None

    def known(self, execution_id: str, fingerprint: str) -> asyncio.Future[ExecutionResult] | None:
        """The run this id names (under way or finished), for a request asking it again.

        A 409 when the id names a different request: never its result.
        """
        running = self._running.get(execution_id)
        if running is not None:
            future, first = running
            if first != fingerprint:
                raise reused_id(execution_id)
            return future
        self._forget_old()
        kept = self._finished.get(execution_id)
        if kept is None:
            return None
        if kept.fingerprint != fingerprint:
            raise reused_id(execution_id)
        done: asyncio.Future[ExecutionResult] = asyncio.get_running_loop().create_future()
        done.set_result(kept.result)
        return done

    async def once(
        self, execution_id: str, fingerprint: str, work: Callable[[], Awaitable[ExecutionResult]]
    ) -> ExecutionResult:
        """`work()`'s result, or that of the execution this id already names."""
        known = self.known(execution_id, fingerprint)
        if known is not None:  # asked again (a retry): the one it has, never a second one
            return await asyncio.shield(known)
        self.begin(execution_id, fingerprint)
        outcome: ExecutionResult | BaseException = DcodexError(INTERNAL, "cancelled")
        try:
            outcome = await work()
            return outcome
        except BaseException as exc:
            outcome = exc
            raise
        finally:
            self.end(execution_id, outcome)

    def status(self, execution_id: str) -> RunStatus | None:
        """What a status subject says of `execution_id`; None: not ours, stay silent."""
        if execution_id in self._running:
            return RunStatus(execution_id=execution_id, state="running")
        result = self.finished(execution_id)
        if result is None:
            return None
        return RunStatus(execution_id=execution_id, state="finished", result=result)

    def begin(self, execution_id: str, fingerprint: str) -> None:
        """Note a run as under way; its future gets the result (for those who join it)."""
        future: asyncio.Future[ExecutionResult] = asyncio.get_running_loop().create_future()
        self._running[execution_id] = (future, fingerprint)

    def end(self, execution_id: str, outcome: ExecutionResult | BaseException) -> None:
        """The run is over: keep its result; an error goes to those who joined it only."""
        running = self._running.pop(execution_id, None)
        if running is None:
            return
        future, fingerprint = running
        if isinstance(outcome, ExecutionResult):
            self.keep(execution_id, fingerprint, outcome)
        if future.done():
            return
        if isinstance(outcome, ExecutionResult):
            future.set_result(outcome)
        else:
            future.set_exception(outcome)
            future.exception()  # retrieved: nobody may have joined

    def keep(self, execution_id: str, fingerprint: str, result: ExecutionResult) -> None:
        """Keep the result of an execution just finished (for whoever asks again)."""
        kept = _Finished(result, time.monotonic(), fingerprint)
        replaced = self._finished.pop(execution_id, None)  # the newest last, counted once
        if replaced is not None:
            self._bytes -= replaced.size
        self._finished[execution_id] = kept
        self._bytes += kept.size
        self._forget_old()

    def _forget_old(self) -> None:
        horizon = time.monotonic() - self.keep_s
        while self._finished:
            oldest = next(iter(self._finished.values()))
            full = len(self._finished) > self.most or self._bytes > self.most_bytes
            if oldest.at >= horizon and not full:
                break
            self._bytes -= self._finished.popitem(last=False)[1].size
