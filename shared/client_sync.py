"""`SyncDcodexClient`: the async client for code without an event loop.

with SyncDcodexClient.connect("nats://127.0.0.1:4222") as client:
    print(client.execute({"language": "python", "code": "print(1)"}).stdout)

The async client runs on an event loop in a background thread of its own, so the
connection keeps answering the server's pings (and reconnecting) between calls, and
the wrapper also works from a thread whose own loop is running.
"""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Coroutine
from types import TracebackType
from typing import Any, TypeVar

from dcodex.shared.client import DEFAULT_TIMEOUT_S, DcodexClient
from dcodex.shared.client_connect import ConnectOptions
from dcodex.shared.client_discovery import ServiceInstance
from dcodex.shared.codec import JSON, Encoding
from dcodex.shared.contract import (
    CacheStats,
    CompileResult,
    ExecuteRequest,
    ExecutionResult,
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

    def run(
        self,
        request: ExecuteRequest | dict[str, Any],
        *,
        encoding: Encoding = JSON,
        request_id: str | None = None,
    ) -> ExecutionResult:
        return self._call(self.client.run(request, encoding=encoding, request_id=request_id))

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

    def _call(self, work: Coroutine[Any, Any, T]) -> T:
        return asyncio.run_coroutine_threadsafe(work, self._loop).result()

    def _stop_loop(self) -> None:
        if self._loop.is_closed():
            return
        self._loop.call_soon_threadsafe(self._loop.stop)
        self._thread.join()
        self._loop.close()
