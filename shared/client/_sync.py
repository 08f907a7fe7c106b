"""`SyncDcodexClient`: the async client for code without an event loop.

with SyncDcodexClient.connect("nats://127.0.0.1:4222") as client:
    print(client.execute({"language": "python", "code": "print(1)"}).stdout)

    for event in client.stream({"language": "python", "code": "print(1)"}):
        print(event)                     # started, stdout chunks..., result

    with client.interactive({"language": "python", "code": "print(input())"}) as run:
        run.send("hello\n")
        result = run.wait()

The async client runs on an event loop in a background thread of its own, so the
connection keeps answering the server's pings (and reconnecting) between calls, and
the wrapper also works from a thread whose own loop is running. Live runs keep
receiving events on that loop while the caller is busy; iterators hand them over in
order, one at a time.
"""

from __future__ import annotations

import asyncio
import threading
from collections.abc import AsyncIterator, Callable, Coroutine, Iterator
from types import TracebackType
from typing import Any, TypeVar

from dcodex.shared.bus.connect import ConnectOptions
from dcodex.shared.bus.discovery import ServiceInstance
from dcodex.shared.client._client import DEFAULT_TIMEOUT_S, DcodexClient
from dcodex.shared.client._stream import Event, LiveRun, SignalName
from dcodex.shared.codec import JSON, Encoding
from dcodex.shared.contract import (
    CacheStats,
    CaseResult,
    CompileResult,
    ExecuteRequest,
    ExecutionResult,
    JudgeRequest,
    JudgeResult,
    LanguagesReply,
    PurgeReply,
)

T = TypeVar("T")


class SyncDcodexClient:
    """Blocking methods with the names and arguments of `DcodexClient`."""

    def __init__(self, loop: asyncio.AbstractEventLoop, thread: threading.Thread) -> None:
        self._loop = loop
        self._thread = thread
        self._client: DcodexClient | None = None

    @classmethod
    def connect(
        cls,
        url: str | ConnectOptions | None = None,
        *,
        prefix: str = "dcodex",
        timeout: float = DEFAULT_TIMEOUT_S,
        **options: Any,
    ) -> SyncDcodexClient:
        """As `DcodexClient.connect`; raises `DcodexError` when nothing is reachable."""
        loop = asyncio.new_event_loop()
        thread = threading.Thread(target=loop.run_forever, name="dcodex-client", daemon=True)
        thread.start()
        sync = cls(loop, thread)
        try:
            connecting = DcodexClient.connect(url, prefix=prefix, timeout=timeout, **options)
            sync._client = sync._call(connecting)
        except BaseException:
            sync._stop_loop()
            raise
        return sync

    @property
    def client(self) -> DcodexClient:
        """The async client underneath (its coroutines must run on this wrapper's loop)."""
        if self._client is None:
            raise RuntimeError("the client is closed")
        return self._client

    def execute(
        self,
        request: ExecuteRequest | dict[str, Any],
        *,
        encoding: Encoding = JSON,
        request_id: str | None = None,
    ) -> ExecutionResult:
        return self._call(self.client.execute(request, encoding=encoding, request_id=request_id))

    def judge(
        self,
        request: JudgeRequest | dict[str, Any],
        *,
        on_case: Callable[[CaseResult], object] | None = None,
        via: str = "judge",
        encoding: Encoding = JSON,
        request_id: str | None = None,
    ) -> JudgeResult:
        """As `DcodexClient.judge`; `on_case` is called on the client's own thread."""
        judging = self.client.judge(
            request, on_case=on_case, via=via, encoding=encoding, request_id=request_id
        )
        return self._call(judging)

    def run(
        self,
        request: ExecuteRequest | dict[str, Any],
        *,
        encoding: Encoding = JSON,
        request_id: str | None = None,
    ) -> ExecutionResult:
        return self._call(self.client.run(request, encoding=encoding, request_id=request_id))

    def stream(
        self, request: ExecuteRequest | dict[str, Any], *, via: str = "execute"
    ) -> Iterator[Event]:
        """The run's events as they happen, the `result` event last (`DcodexClient.stream`).

        Leaving the loop early stops listening; the run itself goes on to its end.
        """
        return self._iterate(self.client.stream(request, via=via))

    def live(
        self, request: ExecuteRequest | dict[str, Any], *, via: str = "execute"
    ) -> SyncLiveRun:
        """A streaming run, already started (`DcodexClient.live`): `events()`, `wait()`,
        `result`, `execution_id`; use it in a `with` block (or `close()` it)."""
        return self._started(self.client.live(request, via=via))

    def interactive(
        self, request: ExecuteRequest | dict[str, Any], *, via: str = "execute"
    ) -> SyncLiveRun:
        """An interactive run, already started: `send()`, `close_stdin()`, `signal()`,
        `events()`, `wait()`; use it in a `with` block (or `close()` it). `via="run"`
        goes to a runner directly instead of through the cache."""
        return self._started(self.client.interactive(request, via=via))

    def compile(self, language: str, code: str) -> CompileResult:
        return self._call(self.client.compile(language, code))

    def languages(self) -> LanguagesReply:
        return self._call(self.client.languages())

    def cache_stats(self) -> CacheStats:
        return self._call(self.client.cache_stats())

    def purge(self, key: str | None = None) -> PurgeReply:
        return self._call(self.client.purge(key))

    def ping(self, wait_s: float = 0.5) -> list[dict[str, Any]]:
        return self._call(self.client.ping(wait_s))

    def services(self, wait_s: float = 0.5, name: str | None = None) -> list[ServiceInstance]:
        return self._call(self.client.services(wait_s, name))

    def close(self) -> None:
        if self._client is not None:
            self._call(self._client.close())
            self._client = None
        self._stop_loop()

    def __enter__(self) -> SyncDcodexClient:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()

    def _started(self, run: LiveRun) -> SyncLiveRun:
        self._call(run.start())
        return SyncLiveRun(self, run)

    def _call(self, work: Coroutine[Any, Any, T]) -> T:
        return asyncio.run_coroutine_threadsafe(work, self._loop).result()

    def _iterate(self, events: AsyncIterator[T]) -> Iterator[T]:
        """An async iterator of this wrapper's loop, as a plain one."""

        async def step() -> list[T]:  # the next item, or none at the end
            try:
                return [await anext(events)]
            except StopAsyncIteration:
                return []

        try:
            while item := self._call(step()):
                yield item[0]
        finally:
            close = getattr(events, "aclose", None)
            if close is not None and self._loop.is_running():
                self._call(close())

    def _stop_loop(self) -> None:
        if self._loop.is_closed():
            return
        self._loop.call_soon_threadsafe(self._loop.stop)
        self._thread.join()
        self._loop.close()


class SyncLiveRun:
    """A started `LiveRun` (_stream.py) driven from code without an event loop.

    Input waits until the program has started, as in the async client; `events()`
    may be read in the same thread between inputs, or in another one.
    """

    def __init__(self, client: SyncDcodexClient, run: LiveRun) -> None:
        self._client = client
        self._run = run

    @property
    def execution_id(self) -> str:
        return self._run.execution_id

    @property
    def result(self) -> ExecutionResult | None:
        """The result, once the `result` event has been read (by `events()` or `wait()`)."""
        return self._run.result

    def send(self, text: str) -> None:
        """Text for the program's standard input."""
        self._client._call(self._run.send(text))

    def close_stdin(self) -> None:
        self._client._call(self._run.close_stdin())

    def signal(self, name: SignalName) -> None:
        """`SIGINT`, `SIGTERM` or `SIGKILL` to the program."""
        self._client._call(self._run.signal(name))

    def events(self) -> Iterator[Event]:
        """The run's events not read yet, the `result` event last; error replies raise."""
        return self._client._iterate(self._run.events())

    def wait(self) -> ExecutionResult:
        """The result, once the run has ended (events not yet read are skipped)."""
        return self._client._call(self._run.wait())

    def close(self) -> None:
        """Stop listening (a run still going goes on to its end)."""
        if self._client._loop.is_running():
            self._client._call(self._run.close())

    def __enter__(self) -> SyncLiveRun:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()
