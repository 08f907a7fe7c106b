"""The Python client: one object with a method per DCodeX subject.

async with await DcodexClient.connect("nats://127.0.0.1:4222") as client:
    result = await client.execute({"language": "python", "code": "print(1)"})
    print(result.status, result.stdout)
"""

from __future__ import annotations

import asyncio
import json
from types import TracebackType
from typing import Any

import nats.errors
from nats.aio.client import Client as NATS
from pydantic import BaseModel

from dcodex.shared import bus
from dcodex.shared.codec import JSON, Encoding
from dcodex.shared.contract import (
    CacheStats,
    CompileRequest,
    CompileResult,
    ExecuteRequest,
    ExecutionResult,
    LanguagesReply,
    PurgeReply,
)
from dcodex.shared.errors import UNAVAILABLE, DcodexError

DEFAULT_TIMEOUT_S = 120.0


class DcodexClient:
    def __init__(
        self, nc: NATS, prefix: str = "dcodex", timeout: float = DEFAULT_TIMEOUT_S
    ) -> None:
        self.nc = nc
        self.prefix = prefix
        self.timeout = timeout

    @classmethod
    async def connect(
        cls, url: str, prefix: str = "dcodex", timeout: float = DEFAULT_TIMEOUT_S
    ) -> DcodexClient:
        try:
            nc = await bus.connect(url, name="dcodex-client", connect_timeout=2.0, log_events=False)
        except DcodexError as exc:
            raise DcodexError(
                UNAVAILABLE,
                f"no NATS server is reachable at {url}: start one with `dcodex up`",
            ) from exc
        return cls(nc, prefix, timeout)

    async def close(self) -> None:
        if not self.nc.is_closed:
            await self.nc.close()

    async def __aenter__(self) -> DcodexClient:
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.close()

    async def execute(
        self,
        request: ExecuteRequest | dict[str, Any],
        *,
        encoding: Encoding = JSON,
        request_id: str | None = None,
    ) -> ExecutionResult:
        """Run a program through the result cache (`dcodex.execute`)."""
        reply = await self._ask("execute", request, encoding, request_id)
        return ExecutionResult.model_validate(reply)

    async def run(
        self, request: ExecuteRequest | dict[str, Any], *, encoding: Encoding = JSON
    ) -> ExecutionResult:
        """Run a program on a runner directly, bypassing the cache (`dcodex.run`)."""
        reply = await self._ask("run", request, encoding)
        return ExecutionResult.model_validate(reply)

    async def compile(self, language: str, code: str) -> CompileResult:
        reply = await self._ask("compile", CompileRequest(language=language, code=code))
        return CompileResult.model_validate(reply)

    async def languages(self) -> LanguagesReply:
        return LanguagesReply.model_validate(await self._ask("languages", {}))

    async def cache_stats(self) -> CacheStats:
        return CacheStats.model_validate(await self._ask("cache.stats", {}))

    async def purge(self, key: str | None = None) -> PurgeReply:
        payload = {} if key is None else {"key": key}
        return PurgeReply.model_validate(await self._ask("cache.purge", payload))

    async def ping(self, wait_s: float = 0.5) -> list[dict[str, Any]]:
        """Every service instance that answers `$SRV.PING` within `wait_s`."""
        inbox = self.nc.new_inbox()
        answers: list[dict[str, Any]] = []
        subscription = await self.nc.subscribe(inbox)
        await self.nc.publish("$SRV.PING", b"", reply=inbox)
        loop = asyncio.get_running_loop()
        deadline = loop.time() + wait_s
        while (left := deadline - loop.time()) > 0:
            try:
                msg = await subscription.next_msg(timeout=left)
            except nats.errors.TimeoutError:
                break
            if msg.data:  # an empty message is the server's "no responders" status
                answers.append(json.loads(msg.data))
        await subscription.unsubscribe()
        return sorted(answers, key=lambda answer: (answer["name"], answer["id"]))

    async def _ask(
        self,
        name: str,
        payload: BaseModel | dict[str, Any],
        encoding: Encoding = JSON,
        request_id: str | None = None,
    ) -> dict[str, Any]:
        return await bus.request(
            self.nc,
            f"{self.prefix}.{name}",
            payload,
            request_id=request_id or bus.new_id(),
            timeout=self.timeout,
            encoding=encoding,
        )
