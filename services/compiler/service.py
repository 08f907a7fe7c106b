"""The compiler's NATS endpoint: `dcodex.compile`.

Looks the compile digest up in the artifact Object Store first; compiles only on a
miss, and identical compiles under way at once share one compiler run.
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
import os
from pathlib import Path

import nats.errors
import nats.js.errors
import structlog
from nats.aio.client import Client as NATS
from nats.js.api import ObjectMeta
from nats.js.object_store import ObjectStore
from pydantic import BaseModel

from dcodex.services.compiler.compile import compile_source
from dcodex.services.compiler.headers import PrecompiledHeaders
from dcodex.services.compiler.metrics import CompilerMetrics
from dcodex.services.compiler.pch import HeaderStore
from dcodex.services.compiler.warm_compiles import AFTER_REPLY_DELAY_S, open_warm_compiles
from dcodex.shared import bus
from dcodex.shared.codec import MSGPACK
from dcodex.shared.contract import (
    ArtifactRef,
    CompileRequest,
    CompileResult,
    RunStatus,
    RunStatusRequest,
)
from dcodex.shared.errors import BAD_REQUEST, UNAVAILABLE, DcodexError
from dcodex.shared.judge.plan import check_reserved, decoded_files
from dcodex.shared.languages.probe import available_languages
from dcodex.shared.languages.registry import CompileOptions, Language, Registry
from dcodex.shared.logging import note
from dcodex.shared.sandbox.slot_cgroups import cgroup_version
from dcodex.shared.sandbox.slots import SlotPool, open_slot_pool
from dcodex.shared.sandbox.warm import WarmPool, WarmSandbox
from dcodex.shared.service import micro
from dcodex.shared.service.artifacts import ARTIFACT_BUCKET, compile_digest, open_artifact_store
from dcodex.shared.service.config import Settings, check_sizes
from dcodex.shared.service.health import object_store_check
from dcodex.shared.service.lifecycle import Service
from dcodex.shared.service.single_flight import SingleFlight
from dcodex.shared.subjects import COMPILE, COMPILE_STATUS, COMPILER
from dcodex.shared.version import version

NAME = COMPILER.micro_name
# Compiler slots use uids above the runner's, so the two never share a process count.
UID_OFFSET = 1000
# What the artifact store raises when it does not answer (no leader, no connection).
# A binary up to this size travels to the runner in the compile's reply (a C or C++
# program is tens of KiB); larger ones only through the Object Store.
INLINE_BINARY_BYTES = 256 * 1024
STORE_AWAY = (
    nats.errors.TimeoutError,
    nats.errors.NoRespondersError,
    nats.errors.ConnectionClosedError,
    nats.js.errors.ServiceUnavailableError,
    nats.js.errors.NoStreamResponseError,
)
STORE_AWAY_MESSAGE = "the artifact store did not answer; try again"

log = structlog.get_logger("dcodex.compiler")


class Compiler:
    def __init__(
        self,
        settings: Settings,
        registry: Registry,
        artifacts: ObjectStore,
        slots: SlotPool,
        warm: WarmPool | None = None,
        header_store: HeaderStore | None = None,
    ) -> None:
        self.settings = settings
        self.warm = warm
        self.registry = registry
        self.artifacts = artifacts
        self.slots = slots
        self._in_flight: SingleFlight[str, CompileResult] = SingleFlight()
        # Compiles under way by compile_id (dcodex.status.compile).
        self._compiling: collections.Counter[str] = collections.Counter()
        self.headers = PrecompiledHeaders(settings, self.slots, header_store)
        self.metrics = CompilerMetrics(settings, slots, version())
        self.metrics.toolchains({lang.id: lang.version for lang in registry.languages})

    def endpoints(self) -> list[micro.Endpoint]:
        subject = self.settings.subject
        return [
            *micro.endpoints_of(COMPILE, subject(COMPILE), self.compile),
            *micro.endpoints_of(COMPILE_STATUS, subject(COMPILE_STATUS), self.status),
        ]

    async def status(self, call: micro.Call) -> BaseModel:
        """ "running" while the compile named in the request is under way here; else
        silence (a compile is never fetched again: asking again is safe and cheap)."""
        compile_id = RunStatusRequest.model_validate(call.payload).execution_id
        if compile_id not in self._compiling:
            raise micro.NoReply
        return RunStatus(execution_id=compile_id, state="running")

    async def compile(self, call: micro.Call) -> BaseModel:
        request = CompileRequest.model_validate(call.payload)
        if request.compile_id is None:
            return await self._compile(request, call)
        self._compiling[request.compile_id] += 1
        try:
            return await self._compile(request, call)
        finally:
            self._compiling[request.compile_id] -= 1
            if not self._compiling[request.compile_id]:
                del self._compiling[request.compile_id]

    async def _compile(self, request: CompileRequest, call: micro.Call) -> CompileResult:
        check_sizes(request.code, "", self.settings)
        language = self.registry.resolve(request.language)
        if not language.compiled:
            raise DcodexError(
                BAD_REQUEST,
                f"{language.id} is interpreted; there is nothing to compile",
                "language",
            )
        options = language.options(request.std, request.optimization)
        files = decoded_files(
            request.files, self.settings.judge_max_files, self.settings.judge_max_files_bytes
        )
        check_reserved(request.files, (language.source, language.binary))
        digest = compile_digest(language, request.code, options, files)
        with structlog.contextvars.bound_contextvars(language=language.id, digest=digest[:16]):
            try:
                result, shared = await self._in_flight.run(
                    digest,
                    lambda: self._lookup_or_compile(
                        digest, language, request.code, options, files, call
                    ),
                )
            except STORE_AWAY as exc:
                # NATS is away, or the store's stream is electing a leader (a node of the
                # cluster was lost): a 503 to try again, as the runner says, not a 500.
                raise DcodexError(UNAVAILABLE, STORE_AWAY_MESSAGE) from exc
            if shared:
                result = result.model_copy(update={"cached": True})
            outcome = "cached" if result.cached else result.status
            self.metrics.compiles.labels(language.id, outcome).inc()
            note(outcome=outcome)
            log.debug("compiled", outcome=outcome, compile_time_ms=result.compile_time_ms)
            if call.encoding != MSGPACK:
                return result.model_copy(update={"binary": None})  # JSON carries no bytes
            return result

    async def _lookup_or_compile(
        self,
        digest: str,
        language: Language,
        code: str,
        options: CompileOptions,
        files: list[tuple[str, bytes]],
        call: micro.Call,
    ) -> CompileResult:
        # The compile starts alongside the lookup, not after it: a new program (the
        # usual case: a runner asks only for what it does not hold) waits for no
        # lookup; a stored one ends the compile unfinished.
        compiling = asyncio.ensure_future(
            self._compiled(digest, language, code, options, files, call)
        )
        try:
            found = await self._stored(digest)
        except BaseException:
            await _cancelled(compiling)
            raise
        self.metrics.artifact_lookups.labels("miss" if found is None else "hit").inc()
        if found is None:
            return await compiling
        await _cancelled(compiling)
        artifact, warnings = found
        return CompileResult(
            status="ok",
            language=language.id,
            language_version=language.version,
            digest=digest,
            compile_output=warnings,
            artifact=artifact,
            cached=True,
        )

    async def _compiled(
        self,
        digest: str,
        language: Language,
        code: str,
        options: CompileOptions,
        files: list[tuple[str, bytes]],
        call: micro.Call,
    ) -> CompileResult:
        precompiled = self.headers.for_source(language, options, code)
        async with self.slots.acquire() as slot:
            # A warm compile holds a slot too, unused but for the count.
            warm = self._warm_sandbox(language, bool(files), precompiled)
            if warm is not None:
                note(sandbox="warm")
            compilation = await compile_source(
                language, code, self.settings, slot, options, precompiled, files, warm
            )
        self.metrics.compile_seconds.labels(language.id).observe(compilation.time_ms / 1000)
        result = CompileResult(
            status="ok" if compilation.ok else "compile_error",
            language=language.id,
            language_version=language.version,
            digest=digest,
            compile_output=compilation.output,
            compile_time_ms=round(compilation.time_ms, 3),
        )
        binary = compilation.binary
        if binary is None:
            return result
        artifact = ArtifactRef(bucket=ARTIFACT_BUCKET, name=digest, size=len(binary))
        if call.encoding == MSGPACK and len(binary) <= INLINE_BINARY_BYTES:
            # The binary goes to the runner in the reply; the store (for other runners
            # and later compiles) gets it once the reply has gone.
            call.after_reply.append(lambda: self._store_quietly(digest, binary, compilation.output))
            return result.model_copy(update={"artifact": artifact, "binary": binary})
        try:
            await self._store(digest, binary, compilation.output)
        except (nats.errors.Error, TimeoutError) as exc:
            # The Object Store is how a large binary reaches the runner: without it the
            # program cannot run. A full JetStream store answers no write (it times out).
            raise DcodexError(
                UNAVAILABLE,
                f"the compiled program could not be stored in {ARTIFACT_BUCKET} "
                f"(JetStream store full or unavailable: {exc!r}); try again later",
            ) from exc
        return result.model_copy(update={"artifact": artifact})

    def _warm_sandbox(
        self, language: Language, files: bool, precompiled: Path | None
    ) -> WarmSandbox | None:
        """A compile sandbox set up ahead for `language`, if one is ready and the compile
        has no extra `files`, and its `precompiled` header (if any) is in the store the
        warm sandboxes show (`start`); else the cold way."""
        if self.warm is None or files or not self.warm.serves(language.id):
            return None
        if precompiled is not None and str(precompiled.parent) not in self.warm.spec.read_only:
            return None
        return self.warm.take()

    async def _store(self, digest: str, binary: bytes, warnings: str) -> None:
        # The diagnostics (warnings) travel with the artifact, for the next lookup.
        meta = ObjectMeta(name=digest, description=warnings)
        try:
            await self.artifacts.put(digest, binary, meta=meta)
        except (nats.errors.Error, TimeoutError) as exc:
            log.warning("artifact_not_stored", bucket=ARTIFACT_BUCKET, error=repr(exc))
            raise

    async def _store_quietly(self, digest: str, binary: bytes, warnings: str) -> None:
        """After the reply, once the runner has had the cores for the program's run: a
        failure is logged (`artifact_not_stored`) and the next compile of the same
        source compiles again."""
        await asyncio.sleep(AFTER_REPLY_DELAY_S)
        with contextlib.suppress(nats.errors.Error, TimeoutError):
            await self._store(digest, binary, warnings)

    async def _stored(self, digest: str) -> tuple[ArtifactRef, str] | None:
        """The stored artifact and the diagnostics of its compile, if there is one."""
        try:
            info = await self.artifacts.get_info(digest)
        except nats.js.errors.NotFoundError:
            return None
        artifact = ArtifactRef(bucket=ARTIFACT_BUCKET, name=digest, size=info.size or 0)
        return artifact, info.description or ""


async def start(settings: Settings) -> Service:
    nc: NATS = await bus.open_connection(settings.connect_options(), NAME, log_events=True)
    slots = await open_slot_pool(
        settings.isolation,
        size=os.cpu_count() or 2,
        uid_base=settings.sandbox_uid_base + UID_OFFSET,
        disk_bytes=settings.sandbox_disk_bytes,
        cpu_cores=settings.sandbox_cpu_cores or None,
        max_queued=None,  # compiles come from runners, which bound their own work
        service=COMPILER.name,
    )
    report = log.info if settings.isolation == "strict" else log.warning
    report(
        "sandbox_isolation",
        mode=settings.isolation,
        layers=slots.isolation.layers,
        cgroups=cgroup_version() if slots.isolation.cgroups else None,
    )
    registry = await available_languages(settings.languages_file, slots.probe_slot())
    artifacts = await open_artifact_store(nc.jetstream(), max_bytes=None)
    headers = HeaderStore(settings.precompiled_headers)
    warm = open_warm_compiles(settings, registry, slots, headers.root if headers.usable() else None)
    compiler = Compiler(settings, registry, artifacts, slots, warm, headers)
    running = await micro.start_micro_service(
        nc,
        name=NAME,
        version=version(),
        description="Compiles programs into artifacts in the Object Store",
        endpoints=compiler.endpoints(),
        metadata={
            "toolchains": ",".join(f"{lang.id}={lang.version}" for lang in registry.languages),
        },
        observer=compiler.metrics.request_answered,
        subject_prefix=settings.subject_prefix,
    )
    compiler.metrics.watch_connection(nc)
    return Service(
        NAME,
        nc,
        running,
        compiler.metrics.registry,
        on_stopped=[warm.close, slots.close] if warm is not None else [slots.close],
        ready_checks=[object_store_check(artifacts, ARTIFACT_BUCKET)],
    )


async def _cancelled(task: asyncio.Future[CompileResult]) -> None:
    """End `task` and wait until it has (a compile's sandbox is killed and reaped)."""
    task.cancel()
    with contextlib.suppress(asyncio.CancelledError, Exception):
        await task
