"""The runs a runner has, by execution id: under way, or finished a short while ago.

Two things rest on it. A request whose execution id this runner already has joins that
run instead of running the program again (an execution id runs at most once per
runner). And `dcodex.run.status` answers from it: a cache whose reply was lost (NATS
restarted while the run finished) fetches the result, and a cache that hears nothing
from any runner knows the run is gone (its runner died) within seconds.
"""

from __future__ import annotations

import asyncio
import collections
import time
from dataclasses import dataclass

from dcodex.shared.contract import ExecutionResult

KEEP_S = 120.0  # a finished run's result stays this long for whoever asks again
MOST_KEPT = 4096  # and no more than this many of them


@dataclass
class _Finished:
    result: ExecutionResult
    at: float
    fingerprint: str


class ReusedId(Exception):
    """An execution id this runner has, asked for with a different request."""


class Executions:
    def __init__(self, keep_s: float = KEEP_S, most: int = MOST_KEPT) -> None:
        self.keep_s = keep_s
        self.most = most
        self._running: dict[str, tuple[asyncio.Future[ExecutionResult], str]] = {}
        self._finished: collections.OrderedDict[str, _Finished] = collections.OrderedDict()

    def is_running(self, execution_id: str) -> bool:
        return execution_id in self._running

    def finished(self, execution_id: str) -> ExecutionResult | None:
        self._forget_old()
        kept = self._finished.get(execution_id)
        return kept.result if kept is not None else None

    def known(self, execution_id: str, fingerprint: str) -> asyncio.Future[ExecutionResult] | None:
        """The run this id names (under way or finished), for a request asking it again.

        Raises ReusedId when the id names a different request: never its result.
        """
        running = self._running.get(execution_id)
        if running is not None:
            future, first = running
            if first != fingerprint:
                raise ReusedId(execution_id)
            return future
        self._forget_old()
        kept = self._finished.get(execution_id)
        if kept is None:
            return None
        if kept.fingerprint != fingerprint:
            raise ReusedId(execution_id)
        done: asyncio.Future[ExecutionResult] = asyncio.get_running_loop().create_future()
        done.set_result(kept.result)
        return done

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
            self._finished[execution_id] = _Finished(outcome, time.monotonic(), fingerprint)
            self._finished.move_to_end(execution_id)
            self._forget_old()
        if future.done():
            return
        if isinstance(outcome, ExecutionResult):
            future.set_result(outcome)
        else:
            future.set_exception(outcome)
            future.exception()  # retrieved: nobody may have joined

    def _forget_old(self) -> None:
        horizon = time.monotonic() - self.keep_s
        while self._finished:
            oldest = next(iter(self._finished.values()))
            if oldest.at >= horizon and len(self._finished) <= self.most:
                break
            self._finished.popitem(last=False)
