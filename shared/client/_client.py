"""The Python client: one object with a method per DCodeX subject.

async with await DcodexClient.connect("nats://127.0.0.1:4222") as client:
    result = await client.execute({"language": "python", "code": "print(1)"})
    print(result.status, result.stdout)

    async for event in client.stream({"language": "python", "code": "print(1)"}):
        print(event)                     # started, stdout chunks..., result

    async with client.interactive({"language": "python", "code": "print(input())"}) as run:
        await run.send("hello\n")
        result = await run.wait()

`connect` takes a URL or `ConnectOptions` (credentials, TLS, tenant); `SyncDcodexClient`
(_sync.py) is the same client for code without an event loop. With a tenant
(docs/tenancy.md) runs are asked for on the tenant's subjects and their live events and
replies arrive where only that tenant may read.
"""

from __future__ import annotations

import time
from collections.abc import AsyncIterator, Callable
from types import TracebackType
from typing import Any

from nats.aio.client import Client as NATS
from nats.aio.msg import Msg
from pydantic import BaseModel, ValidationError

from dcodex.shared import bus
from dcodex.shared.bus.connect import ConnectOptions, open_connection
from dcodex.shared.bus.discovery import ServiceInstance, discover, gather
from dcodex.shared.bus.flush import flushed
from dcodex.shared.bus.retry import retry_unreceived
from dcodex.shared.bus.watch import watched_request
from dcodex.shared.client._direct_hits import DirectHits
from dcodex.shared.client._stream import Event, LiveRun
from dcodex.shared.codec import JSON, Encoding, decode
from dcodex.shared.contract import (
    CacheStats,
    CaseEvent,
    CaseResult,
    CompileRequest,
    CompileResult,
    ExecuteRequest,
    ExecutionResult,
    JudgeRequest,
    JudgeResult,
    LanguagesReply,
    PurgeReply,
)
from dcodex.shared.errors import UNAVAILABLE, DcodexError, from_validation_error
from dcodex.shared.subjects import (
    CACHE_PURGE,
    CACHE_STATS,
    COMPILE,
    LANGUAGES,
    execution_subjects,
    output_subject,
)

DEFAULT_TIMEOUT_S = 120.0


def with_execution_id(
    request: ExecuteRequest | dict[str, Any],
) -> tuple[ExecuteRequest | dict[str, Any], str]:
    """`request` with an execution id (a new one unless it has one), and that id.

    A dict stays a dict: a malformed request still reaches the service, whose 400
    names the field.
    """
    if isinstance(request, ExecuteRequest):
        if request.execution_id is None:
            request = request.model_copy(update={"execution_id": bus.new_id()})
        assert request.execution_id is not None
        return request, request.execution_id
    given = request.get("execution_id")
    if isinstance(given, str) and given:
        return request, given
    execution_id = bus.new_id()
    return {**request, "execution_id": execution_id}, execution_id


class DcodexClient:
    def __init__(
        self,
        nc: NATS,
        prefix: str = "dcodex",
        timeout: float = DEFAULT_TIMEOUT_S,
        tenant: str | None = None,
        direct_hits: bool = True,
    ) -> None:
        self.nc = nc
        self.prefix = prefix
        self.timeout = timeout
        self.tenant = tenant
        # Hits read from the results bucket without the cache (docs/cache.md#direct-hits);
        # never for a tenant, whose login may not touch JetStream (docs/tenancy.md).
        self.direct_hits = DirectHits(nc, prefix) if direct_hits and tenant is None else None

    @classmethod
    async def connect(
        cls,
        url: str | ConnectOptions | None = None,
        *,
        prefix: str = "dcodex",
        timeout: float = DEFAULT_TIMEOUT_S,
        direct_hits: bool = True,
        **options: Any,
    ) -> DcodexClient:
        """Connect to `url` (default: `DCODEX_NATS_URL`, else the local default).

        `options` are `ConnectOptions` fields: `user`, `password`, `token`, `nkey`,
        `creds`, `tls_ca`, `tls_cert`, `tls_key`, `tenant`, `connect_timeout_s`; any not given
        come from their `DCODEX_NATS_*` variables. `direct_hits=False` sends every
        `execute` to the cache, even the hits it could read itself (docs/cache.md); a
        tenant's client always does.
        """
        if isinstance(url, ConnectOptions):
            settings = url
        else:
            settings = ConnectOptions.from_env(url=url, **options)
        try:
            nc = await open_connection(settings)
        except DcodexError as exc:
            message = exc.message
            if message.startswith("no NATS server"):
                message += ": start one with `dcodex up`"
            raise DcodexError(UNAVAILABLE, message) from exc
        return cls(nc, prefix, timeout, settings.tenant, direct_hits)

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
        """Run a program through the result cache (`dcodex.execute`).

        Safe against lost services and lost replies (docs/reliability.md): the request
        carries an execution id (ours if it has none); while it is out we ask who has
        it, so a reply lost in a NATS restart is fetched again and a dead cache replica
        is a 503 within seconds. A request nobody received (no responders, as while the
        services restart) is sent again until `timeout`; one that was received is never
        sent twice, so a program never runs twice on the client's account.
        A hit is read from the results bucket directly when it can be (docs/cache.md).
        """
        request, execution_id = with_execution_id(request)
        direct = self.direct_hits
        hit = await direct.lookup(request, execution_id) if direct is not None else None
        if hit is not None:
            return hit
        reply = await self._ask_execution("execute", request, encoding, request_id)
        result = ExecutionResult.model_validate(reply)
        if direct is not None:
            direct.saw(result)
        return result

    async def run(
        self,
        request: ExecuteRequest | dict[str, Any],
        *,
        encoding: Encoding = JSON,
        request_id: str | None = None,
    ) -> ExecutionResult:
        """Run a program on a runner directly, bypassing the cache (`dcodex.run`); as
        safe as `execute` against lost runners and replies."""
        reply = await self._ask_execution("run", request, encoding, request_id)
        return ExecutionResult.model_validate(reply)

    async def stream(
        self, request: ExecuteRequest | dict[str, Any], *, via: str = "execute"
    ) -> AsyncIterator[Event]:
        """The run's events as they happen (docs/protocol.md, live events), the `result` event last.

        `via="run"` goes to a runner directly instead of through the cache.
        """
        async with self.live(request, via=via) as run:
            async for event in run.events():
                yield event

    def live(self, request: ExecuteRequest | dict[str, Any], *, via: str = "execute") -> LiveRun:
        """A streaming run to use as `async with client.live(request) as run:`."""
        parsed = ExecuteRequest.model_validate(request)
        return LiveRun(
            self.nc, self.prefix, parsed, subject=via, timeout=self.timeout, tenant=self.tenant
        )

    def interactive(
        self, request: ExecuteRequest | dict[str, Any], *, via: str = "execute"
    ) -> LiveRun:
        """An interactive run: `send()`, `close_stdin()`, `signal()`, `events()`, `wait()`.

        `via="run"` goes to a runner directly instead of through the cache."""
        parsed = ExecuteRequest.model_validate(request).model_copy(update={"interactive": True})
        return LiveRun(
            self.nc, self.prefix, parsed, subject=via, timeout=self.timeout, tenant=self.tenant
        )

    async def judge(
        self,
        request: JudgeRequest | dict[str, Any],
        *,
        on_case: Callable[[CaseResult], object] | None = None,
        via: str = "judge",
        encoding: Encoding = JSON,
        request_id: str | None = None,
    ) -> JudgeResult:
        """Judge a submission against its test cases (`dcodex.judge`, docs/judge.md).

        `on_case` is called with each case's result as it ends (in the order they end;
        each has its `index`); `via="judge.run"` goes to a runner, bypassing the cache.
        """
        try:  # the service's 400 without the round trip
            parsed = JudgeRequest.model_validate(request)
        except ValidationError as exc:
            raise from_validation_error(exc) from exc
        if on_case is None:
            reply = await self._ask(via, parsed, encoding, request_id)
            return JudgeResult.model_validate(reply)
        execution_id = parsed.execution_id or bus.new_id()
        parsed = parsed.model_copy(update={"stream": True, "execution_id": execution_id})

        async def on_event(msg: Msg) -> None:
            payload = decode(msg.data, encoding)
            if payload.get("type") == "case":
                on_case(CaseEvent.model_validate(payload).case)

        subscription = await self.nc.subscribe(
            output_subject(self.prefix, execution_id), cb=on_event
        )
        try:
            # Subscribed before the first case can end (and again after a reconnection).
            await flushed(self.nc, self.timeout, "the subscription to the judge's case events")
            reply = await self._ask(via, parsed, encoding, request_id)
        finally:
            await subscription.unsubscribe()
        return JudgeResult.model_validate(reply)

    async def compile(self, language: str, code: str) -> CompileResult:
        reply = await self._ask(COMPILE.suffix, CompileRequest(language=language, code=code))
        return CompileResult.model_validate(reply)

    async def languages(self) -> LanguagesReply:
        return LanguagesReply.model_validate(await self._ask(LANGUAGES.suffix, {}))

    async def cache_stats(self) -> CacheStats:
        return CacheStats.model_validate(await self._ask(CACHE_STATS.suffix, {}))

    async def purge(self, key: str | None = None) -> PurgeReply:
        payload = {} if key is None else {"key": key}
        return PurgeReply.model_validate(await self._ask(CACHE_PURGE.suffix, payload))

    async def ping(self, wait_s: float = 0.5) -> list[dict[str, Any]]:
        """Every service instance that answers `$SRV.PING` within `wait_s` (raw answers)."""
        answers = await gather(self.nc, "$SRV.PING", wait_s)
        return sorted(answers, key=lambda answer: (answer["name"], answer["id"]))

    async def services(self, wait_s: float = 0.5, name: str | None = None) -> list[ServiceInstance]:
        """Every micro service instance (or those named `name`): version, uptime, endpoint stats.

        Other micro services on the same NATS server answer too; DCodeX's are `dcodex-*`.
        """
        return await discover(self.nc, wait_s, name)

    async def _ask_execution(
        self,
        name: str,
        request: ExecuteRequest | dict[str, Any],
        encoding: Encoding,
        request_id: str | None,
    ) -> dict[str, Any]:
        payload, execution_id = with_execution_id(request)
        deadline = time.monotonic() + self.timeout
        entry, status = execution_subjects(self.prefix, name, self.tenant)

        async def attempt(left: float) -> dict[str, Any]:
            return await watched_request(
                self.nc,
                entry,
                status,
                payload,
                execution_id=execution_id,
                request_id=request_id or bus.new_id(),
                timeout=left,
                encoding=encoding,
            )

        return await retry_unreceived(attempt, deadline)

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
