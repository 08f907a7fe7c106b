"""The runner's NATS endpoints: `dcodex.run` and `dcodex.languages`.

A thin adapter: validate the request with the contract, get a compiled artifact from
the compiler when the language needs one, run the program in a sandbox slot, reply.
"""

from __future__ import annotations

import time
from typing import Any

import nats.errors
import structlog
from nats.aio.client import Client as NATS
from nats.js.object_store import ObjectStore
from pydantic import BaseModel

from dcodex.services.runner.artifact_cache import ArtifactCache
from dcodex.services.runner.execution import Program, execute, execute_warm
from dcodex.services.runner.interactive import input_feed
from dcodex.services.runner.judge import Judge
from dcodex.services.runner.metrics import RunnerMetrics
from dcodex.services.runner.warm_pool import WarmPools, open_warm_pools
from dcodex.services.runner.zygote import open_python_zygote
from dcodex.shared import bus
from dcodex.shared.bus.retry import retry_unreceived
from dcodex.shared.bus.watch import RunLost, watched_request
from dcodex.shared.codec import MSGPACK
from dcodex.shared.contract import (
    CompileRequest,
    CompileResult,
    EffectiveLimits,
    ExecuteRequest,
    ExecutionResult,
    JudgeFile,
    LanguagesReply,
    LimitsInfo,
    RunStatusRequest,
)
from dcodex.shared.errors import INTERNAL, UNAVAILABLE, DcodexError
from dcodex.shared.languages.probe import available_languages
from dcodex.shared.languages.registry import Language, Registry
from dcodex.shared.logging import note
from dcodex.shared.sandbox.handover import deferred_handover
from dcodex.shared.sandbox.run import LiveInput
from dcodex.shared.sandbox.slot_cgroups import cgroup_version
from dcodex.shared.sandbox.slots import Overloaded, SlotPool, open_slot_pool
from dcodex.shared.sandbox.warm import WarmSandbox, handover
from dcodex.shared.sandbox.zygote import ZygoteKeeper
from dcodex.shared.service import micro
from dcodex.shared.service.artifacts import (
    ARTIFACT_BUCKET,
    compile_digest,
    open_artifact_store,
)
from dcodex.shared.service.config import Settings, check_sizes
from dcodex.shared.service.events import EventPublisher
from dcodex.shared.service.executions import Executions, owned_key
from dcodex.shared.service.health import object_store_check
from dcodex.shared.service.lifecycle import Service
from dcodex.shared.service.live_runs import LiveRuns
from dcodex.shared.subjects import (
    COMPILE,
    COMPILE_STATUS,
    JUDGE_RUN,
    LANGUAGES,
    RUN,
    RUN_STATUS,
    RUNNER,
)
from dcodex.shared.version import version

NAME = RUNNER.micro_name

log = structlog.get_logger("dcodex.runner")


class Runner:
    def __init__(
        self,
        settings: Settings,
        nc: NATS,
        registry: Registry,
        artifacts: ObjectStore,
        slots: SlotPool,
        warm: WarmPools | None = None,
        zygote: ZygoteKeeper | None = None,
    ) -> None:
        self.settings = settings
        self.warm = warm or WarmPools()
        self.zygote = zygote
        self.nc = nc
        self.registry = registry
        self.artifacts = artifacts
        self.local_artifacts = ArtifactCache(settings.runner_artifact_cache_bytes)
        self.slots = slots
        self.executions = Executions()
        self.live_runs = LiveRuns()
        self.metrics = RunnerMetrics(settings, slots, version())
        self.metrics.toolchains({lang.id: lang.version for lang in registry.languages})
        self.metrics.expect_downstream([settings.subject(COMPILE)])

    def endpoints(self) -> list[micro.Endpoint]:
        subject = self.settings.subject
        return [
            *micro.endpoints_of(RUN, subject(RUN), self.run),
            *micro.endpoints_of(LANGUAGES, subject(LANGUAGES), self.languages),
            *micro.endpoints_of(RUN_STATUS, subject(RUN_STATUS), self.status),
            *micro.endpoints_of(JUDGE_RUN, subject(JUDGE_RUN), self.judge),
        ]

    async def status(self, call: micro.Call) -> BaseModel:
        """What became of a run this runner has; silence when it has none by that id.

        On `dcodex.status.run.<tenant>` (only that tenant may ask there) the tenant is the
        subject's; on `dcodex.status.run` (only the services may ask there) the cache
        names the tenant of the run it watches.
        """
        asked = RunStatusRequest.model_validate(call.payload)
        if call.tenant is not None and asked.tenant not in (None, call.tenant):
            raise micro.NoReply  # a tenant asking for another's: never looked up
        tenant = call.tenant if call.tenant is not None else asked.tenant
        status = self.executions.status(owned_key(asked.execution_id, tenant))
        if status is None:
            raise micro.NoReply
        return status.model_copy(update={"execution_id": asked.execution_id})

    async def judge(self, call: micro.Call) -> BaseModel:
        return await Judge(self).judge(call)

    async def languages(self, call: micro.Call) -> BaseModel:
        return LanguagesReply(
            languages=[lang.info() for lang in self.registry.languages],
            limits=LimitsInfo(
                defaults=self.settings.default_limits(), ceilings=self.settings.ceiling_limits()
            ),
            isolation=self.slots.isolation.layers,
            max_code_bytes=self.settings.max_code_bytes,
            max_stdin_bytes=self.settings.max_stdin_bytes,
        )

    async def run(self, call: micro.Call) -> BaseModel:
        request = ExecuteRequest.model_validate(call.payload)
        check_sizes(request.code, request.stdin, self.settings)
        language = self.registry.resolve(request.language)
        language.options(request.std, request.optimization)  # 400 on a choice it lacks
        limits = self.settings.default_limits().apply(
            request.limits, self.settings.ceiling_limits()
        )
        execution_id = request.execution_id or bus.new_id()
        fingerprint = request.model_dump_json(exclude={"execution_id"})

        async def work() -> ExecutionResult:
            with self.live_runs.claim(call.tenant, execution_id):
                self.refuse_when_overloaded()
                return await self._run(request, call, language, limits, execution_id)

        # A tenant's runs are its own: kept under the tenant's key.
        result = await self.executions.once(owned_key(execution_id, call.tenant), fingerprint, work)
        # Through the cache the reply gets the cache's key (a joined run's too).
        return result.model_copy(update={"cache_key": call.cache_key})

    async def _run(
        self,
        request: ExecuteRequest,
        call: micro.Call,
        language: Language,
        limits: EffectiveLimits,
        execution_id: str,
    ) -> ExecutionResult:
        """Run under an id no other run under way has: its live subjects are its own."""
        live = LiveInput() if request.interactive else None
        if live is not None and request.stdin:
            live.write(request.stdin.encode())  # what the request brings comes first
        with structlog.contextvars.bound_contextvars(
            execution_id=execution_id, language=language.id, tenant=call.tenant
        ):
            events = EventPublisher(
                self.nc,
                self.settings.output_subject(execution_id, call.tenant),
                call.encoding,
                request.stream or request.interactive,  # an interactive run is seen live
            )
            input_subject = self.settings.input_subject(execution_id, call.tenant)
            try:
                async with input_feed(self.nc, input_subject, live):
                    result = await self._compile_and_run(
                        request, language, limits, execution_id, call, events, live
                    )
            except DcodexError:
                raise
            except Exception as exc:
                # The request was fine; the machinery failed. Say so in a result
                # (never cached) rather than an error reply.
                log.exception("execution_failed")
                result = ExecutionResult(
                    execution_id=execution_id,
                    status="internal_error",
                    stderr=f"[dcodex] internal error: {type(exc).__name__}: {exc}\n",
                    language=language.id,
                    language_version=language.version,
                )
            # Through the cache the reply gets the cache's key: so does the result event.
            result = result.model_copy(update={"cache_key": call.cache_key})
            await events.result(result)
            self.metrics.observe(result)
            log.debug("executed", status=result.status, wall_time_ms=result.wall_time_ms)
            return result

    async def _compile_and_run(
        self,
        request: ExecuteRequest,
        language: Language,
        limits: EffectiveLimits,
        execution_id: str,
        call: micro.Call,
        events: EventPublisher,
        live: LiveInput | None,
    ) -> ExecutionResult:
        program = Program(language, language.version, request.code)
        compiled: CompileResult | None = None
        if language.compiled:
            compiled, binary = await self._program(language, request, call.request_id, execution_id)
            events.publish("compile", compiled.compile_output)
            if compiled.status == "compile_error":
                return ExecutionResult(
                    execution_id=execution_id,
                    status="compile_error",
                    compile_output=compiled.compile_output,
                    compile_time_ms=compiled.compile_time_ms,
                    language=language.id,
                    language_version=compiled.language_version,
                    # The compilers of a deployment run under the runners' isolation mode.
                    isolation=self.slots.isolation.layers,
                )
            assert binary is not None
            program = Program(language, compiled.language_version, request.code, binary)
        queued_at = time.monotonic()
        try:
            # A warm run holds a slot too, unused but for the count: at most
            # max_concurrent_sandboxes programs run at once, warm or cold.
            async with self.slots.acquire() as slot:
                self.metrics.queue_wait_seconds.observe(time.monotonic() - queued_at)
                events.publish("started")
                warm = self._warm_sandbox(program, request, limits, live)
                if warm is not None:
                    note(sandbox="warm")
                    result = await execute_warm(
                        warm,
                        program,
                        execution_id=execution_id,
                        stdin=request.stdin,
                        args=request.args,
                        limits=limits,
                        on_output=events.output if events.enabled else None,
                        on_finished=self.metrics.sandbox_finished,
                    )
                else:
                    result = await execute(
                        program,
                        execution_id=execution_id,
                        stdin=live or request.stdin,
                        args=request.args,
                        limits=limits,
                        slot=slot,
                        on_output=events.output if events.enabled else None,
                        on_finished=self.metrics.sandbox_finished,
                        zygote=self.zygote,
                    )
        except Overloaded as exc:
            raise DcodexError(UNAVAILABLE, f"overloaded: {exc}") from exc
        if compiled is None:
            return result
        return result.model_copy(
            update={
                "compile_output": compiled.compile_output,
                "compile_time_ms": compiled.compile_time_ms,
            }
        )

    def _warm_sandbox(
        self,
        program: Program,
        request: ExecuteRequest,
        limits: EffectiveLimits,
        live: LiveInput | None,
    ) -> WarmSandbox | None:
        """A warm sandbox started for exactly this run's language and limits, if one is
        ready; None sends the run the cold way (interactive runs always go that way).
        A compiled program gets a deferred (native) one, an interpreted one an interpreter."""
        native = program.binary is not None
        warm = self.warm.native if native else self.warm.interpreter
        if warm is None or live is not None or limits != warm.spec.limits:
            return None
        if not warm.serves(program.language.id):
            return None
        if native:
            # Arguments that cannot be handed over (a NUL byte, too many): the cold way
            # says what becomes of them.
            argv = program.language.run_argv(limits.memory_bytes, request.args)
            if deferred_handover([], argv) is None:
                return None
        elif handover(warm.spec.source_name, request.code, request.args) is None:
            return None
        return warm.take()

    async def _program(
        self, language: Language, request: ExecuteRequest, request_id: str, execution_id: str
    ) -> tuple[CompileResult, bytes | None]:
        """The compile's outcome and, unless it failed, the program.

        The runner names the artifact itself (the digest the compiler computes, of the
        toolchain version, the flags and the source): one it holds in memory needs no
        compile request at all, and gets the answer the compiler gives for a stored
        artifact. A compiler with another toolchain names its binaries otherwise, so
        they are never found under this runner's name.
        """
        options = language.options(request.std, request.optimization)
        digest = compile_digest(language, request.code, options)
        binary = self.local_artifacts.get(digest)
        if binary is not None:
            self.metrics.artifact_lookups.labels("hit").inc()
            known = CompileResult(
                status="ok",
                language=language.id,
                language_version=language.version,
                digest=digest,
                compile_output=self.local_artifacts.warnings(digest),
                cached=True,
            )
            return known, binary
        compiled = await self.compile(
            language,
            request.code,
            request.std,
            request.optimization,
            [],
            request_id,
            compile_id=execution_id,
        )
        if compiled.status == "compile_error":
            return compiled, None
        return compiled, await self.artifact(compiled)

    def refuse_when_overloaded(self) -> None:
        """Say 503 before compiling when the run could not even queue for a sandbox."""
        if self.slots.full:
            raise DcodexError(
                UNAVAILABLE,
                f"overloaded: all {self.slots.size} sandboxes are busy "
                f"and {self.slots.waiting} runs wait; try again later",
            )

    async def compile(
        self,
        language: Language,
        code: str,
        std: str | None,
        optimization: str | None,
        files: list[JudgeFile],
        request_id: str,
        compile_id: str | None = None,
    ) -> CompileResult:
        """The compiler's result. Watched (a dead compiler costs seconds) and asked
        again once if lost: compiling runs no user program, so it is safe to repeat."""
        compile_id = compile_id or bus.new_id()
        compile_request = CompileRequest(
            language=language.id,
            code=code,
            std=std,
            optimization=optimization,
            files=files,
            compile_id=compile_id,
        )
        # Below the cache's wait for us, above the compile's own limit.
        deadline = time.monotonic() + self.settings.compile_timeout_seconds + 15

        async def attempt(left: float) -> dict[str, Any]:
            return await watched_request(
                self.nc,
                self.settings.subject(COMPILE),
                self.settings.subject(COMPILE_STATUS),
                compile_request,
                execution_id=compile_id,
                request_id=request_id,
                timeout=left,
                encoding=MSGPACK,
                observe=self.metrics.downstream_answered,
            )

        try:
            reply = await attempt(deadline - time.monotonic())
        except RunLost:
            log.warning("compile_lost", compile_id=compile_id)
            # Once more, waiting for a compiler while none is there (one restarting).
            reply = await retry_unreceived(attempt, min(deadline, time.monotonic() + 30))
        return CompileResult.model_validate(reply)

    async def artifact(self, compiled: CompileResult) -> bytes:
        if compiled.artifact is None:
            raise DcodexError(INTERNAL, "the compiler reported success but no artifact")
        if compiled.binary is not None:  # just compiled: it came in the reply
            self.local_artifacts.put(compiled.digest, compiled.binary, compiled.compile_output)
            return compiled.binary
        data = self.local_artifacts.get(compiled.digest)
        self.metrics.artifact_lookups.labels("miss" if data is None else "hit").inc()
        if data is None:
            try:
                data = (await self.artifacts.get(compiled.artifact.name)).data or b""
            except (nats.errors.TimeoutError, nats.errors.ConnectionClosedError) as exc:
                # NATS is away (restarting): a 503 to try again, not an internal error.
                raise DcodexError(
                    UNAVAILABLE, "the artifact store did not answer; try again"
                ) from exc
            self.local_artifacts.put(compiled.digest, data, compiled.compile_output)
        return data


async def start(settings: Settings) -> Service:
    nc = await bus.open_connection(settings.connect_options(), NAME, log_events=True)
    slots = await open_slot_pool(
        settings.isolation,
        size=settings.max_concurrent_sandboxes,
        uid_base=settings.sandbox_uid_base,
        disk_bytes=settings.sandbox_disk_bytes,
        cpu_cores=settings.sandbox_cpu_cores or None,
        max_queued=settings.max_queued_executions,
        service=RUNNER.name,
    )
    layers = slots.isolation.layers
    # Said at every start: which layers this host gave (docs/production.md).
    report = log.info if settings.isolation == "strict" else log.warning
    report(
        "sandbox_isolation",
        mode=settings.isolation,
        layers=layers,
        cgroups=cgroup_version() if slots.isolation.cgroups else None,
    )
    registry = await available_languages(settings.languages_file, slots.probe_slot())
    artifacts = await open_artifact_store(nc.jetstream())
    # Warm sandboxes are not forked from the zygote: measured, that saved them little CPU
    # and cost their runs latency (docs/performance.md, "Zygote").
    warm = open_warm_pools(settings, registry, slots)
    zygote = open_python_zygote(settings, registry, slots.isolation)
    runner = Runner(settings, nc, registry, artifacts, slots, warm, zygote)
    running = await micro.start_micro_service(
        nc,
        name=NAME,
        version=version(),
        description="Runs programs in sandboxes",
        endpoints=runner.endpoints(),
        metadata={
            "isolation": ",".join(layers),
            "max_concurrent_sandboxes": str(settings.max_concurrent_sandboxes),
            "languages": ",".join(lang.id for lang in registry.languages),
        },
        observer=runner.metrics.request_answered,
        subject_prefix=settings.subject_prefix,
    )
    runner.metrics.watch_connection(nc)
    return Service(
        NAME,
        nc,
        running,
        runner.metrics.registry,
        details={"isolation": " ".join(layers)},
        on_stopped=[
            warm.close,
            *([zygote.close] if zygote is not None else []),
            slots.close,
        ],
        ready_checks=[object_store_check(artifacts, ARTIFACT_BUCKET)],
    )
