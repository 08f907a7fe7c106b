"""The runner's `dcodex.judge.run`: compile once, run every case in a fresh sandbox.

A thin adapter over `dcodex.shared.judge` (checking, planning, checkers, verdicts):
cases run in parallel up to the runner's sandboxes, each in its own; a program checker
runs in a sandbox of its own too, with the input, the output and the answer as files.
"""

from __future__ import annotations

import asyncio
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Protocol

import structlog
from nats.aio.client import Client as NATS

from dcodex.services.runner.execution import Program, execute
from dcodex.services.runner.metrics import RunnerMetrics
from dcodex.shared import bus
from dcodex.shared.contract import (
    CaseEvent,
    CaseResult,
    CompileResult,
    EffectiveLimits,
    ExecutionResult,
    JudgedEvent,
    JudgeFile,
    JudgeRequest,
    JudgeResult,
)
from dcodex.shared.errors import NOT_FOUND, UNAVAILABLE, DcodexError
from dcodex.shared.judge.checkers import Checked, check, from_exit_code
from dcodex.shared.judge.plan import (
    CHECKER_FILES,
    case_limits,
    case_name,
    check_request,
    check_reserved,
    decoded_files,
)
from dcodex.shared.judge.verdicts import (
    case_result,
    empty_result,
    failed,
    overall_verdict,
    skipped,
    stop_after_first_failure,
    summarize,
)
from dcodex.shared.languages.registry import Language, Registry
from dcodex.shared.sandbox.slots import Overloaded, SlotPool
from dcodex.shared.sandbox.zygote import ZygoteKeeper
from dcodex.shared.service import micro
from dcodex.shared.service.config import Settings
from dcodex.shared.service.events import EventPublisher

MESSAGE_CHARS = 2000  # of a checker's message kept in a result

log = structlog.get_logger("dcodex.runner.judge")


class RunnerParts(Protocol):
    """What judging needs of the runner (service.Runner)."""

    settings: Settings
    nc: NATS
    registry: Registry
    slots: SlotPool
    metrics: RunnerMetrics
    zygote: ZygoteKeeper | None

    def refuse_when_overloaded(self) -> None: ...

    async def compile(
        self,
        language: Language,
        code: str,
        std: str | None,
        optimization: str | None,
        files: list[JudgeFile],
        request_id: str,
    ) -> CompileResult: ...

    async def artifact(self, compiled: CompileResult) -> bytes: ...


@dataclass
class Plan:
    """A checked request, ready to run."""

    request: JudgeRequest
    execution_id: str
    language: Language
    checker_language: Language | None
    files: list[tuple[str, bytes]]
    limits: list[EffectiveLimits]


class Judge:
    def __init__(self, runner: RunnerParts) -> None:
        self.runner = runner
        self.settings = runner.settings

    async def judge(self, call: micro.Call) -> JudgeResult:
        plan = self.plan(JudgeRequest.model_validate(call.payload))
        self.runner.refuse_when_overloaded()
        request = plan.request
        with structlog.contextvars.bound_contextvars(
            execution_id=plan.execution_id, language=plan.language.id
        ):
            events = EventPublisher(
                self.runner.nc,
                self.settings.output_subject(plan.execution_id),
                call.encoding,
                request.stream,
            )
            result = await self._judge(plan, call.request_id, events)
            # With `only`, the caller (the cache) merges and publishes the last event.
            if request.only is None:
                events.event(JudgedEvent(seq=len(request.tests), result=result))
            await events.drain()
            log.debug("judged", verdict=result.verdict, cases=len(request.tests))
            return result

    def plan(self, request: JudgeRequest) -> Plan:
        """400/404/413 for anything wrong, before anything is compiled or run."""
        check_request(request, self.settings.judge_caps())
        language = self.runner.registry.resolve(request.language)
        language.options(request.std, request.optimization)  # 400 on a choice it lacks
        check_reserved(request.files, (language.source, language.binary))
        checker_language = None
        if request.checker.type == "program" and request.checker.language is not None:
            checker_language = _checker_language(self.runner.registry, request.checker.language)
        return Plan(
            request=request,
            execution_id=request.execution_id or bus.new_id(),
            language=language,
            checker_language=checker_language,
            files=decoded_files(
                request.files, self.settings.judge_max_files, self.settings.judge_max_files_bytes
            ),
            limits=case_limits(
                request, self.settings.default_limits(), self.settings.ceiling_limits()
            ),
        )

    async def _judge(self, plan: Plan, request_id: str, events: EventPublisher) -> JudgeResult:
        request = plan.request
        language = plan.language
        reply = empty_result(
            plan.execution_id, language.id, language.version, self.runner.slots.isolation.layers
        )
        program = Program(language, language.version, request.code)
        if language.compiled:
            compiled = await self.runner.compile(
                language, request.code, request.std, request.optimization, request.files, request_id
            )
            reply = reply.model_copy(
                update={
                    "language_version": compiled.language_version,
                    "compile_output": compiled.compile_output,
                    "compile_time_ms": compiled.compile_time_ms,
                }
            )
            if compiled.status == "compile_error":
                return _finished(reply, plan, {}, status="compile_error")
            binary = await self.runner.artifact(compiled)
            program = Program(language, compiled.language_version, request.code, binary)
        checker, checker_output = await self._checker_program(plan, request_id)
        if plan.checker_language is not None and checker is None:
            reply = reply.model_copy(update={"checker_compile_output": checker_output})
            return _finished(reply, plan, {}, status="checker_error")
        cases = await self._run_cases(plan, program, checker, events)
        return _finished(reply, plan, cases)

    async def _checker_program(self, plan: Plan, request_id: str) -> tuple[Program | None, str]:
        """The checker, compiled if its language is; None and the diagnostics if it fails."""
        language = plan.checker_language
        code = plan.request.checker.code
        if language is None or code is None:
            return None, ""
        if not language.compiled:
            return Program(language, language.version, code), ""
        compiled = await self.runner.compile(language, code, None, None, [], request_id)
        if compiled.status == "compile_error":
            return None, compiled.compile_output
        binary = await self.runner.artifact(compiled)
        return Program(language, compiled.language_version, code, binary), ""

    async def _run_cases(
        self, plan: Plan, program: Program, checker: Program | None, events: EventPublisher
    ) -> dict[int, CaseResult]:
        request = plan.request
        indices = (
            sorted(set(request.only)) if request.only is not None else range(len(request.tests))
        )
        # As many cases at once as this runner has sandboxes: the rest wait here, not in
        # the pool's queue, which other requests share.
        gate = asyncio.Semaphore(self.runner.slots.size)
        first_failed: list[int] = []

        async def one(index: int) -> CaseResult:
            async with gate:
                if request.stop_on_first_failure and first_failed and index > min(first_failed):
                    return skipped(index, case_name(request, index))
                case = await self._case(plan, index, program, checker)
            if failed(case):
                first_failed.append(index)
            events.event(CaseEvent(seq=index, case=case))
            return case

        try:
            results = await asyncio.gather(*(one(index) for index in indices))
        except Overloaded as exc:
            raise DcodexError(UNAVAILABLE, f"overloaded: {exc}") from exc
        return {case.index: case for case in results}

    async def _case(
        self, plan: Plan, index: int, program: Program, checker: Program | None
    ) -> CaseResult:
        case = plan.request.tests[index]
        async with self.runner.slots.acquire() as slot:
            result = await execute(
                program,
                execution_id=f"{plan.execution_id}-{index}",
                stdin=case.stdin,
                args=case.args,
                limits=plan.limits[index],
                slot=slot,
                on_finished=self.runner.metrics.sandbox_finished,
                files=plan.files,
                zygote=self.runner.zygote,
            )
        self.runner.metrics.observe(result)  # a case is an execution like any other
        checked = await self._check(plan, index, result, checker)
        return case_result(index, case_name(plan.request, index), result, checked)

    async def _check(
        self, plan: Plan, index: int, result: ExecutionResult, checker: Program | None
    ) -> Checked | None:
        """The checker's word on an `ok` run; None when there is nothing to compare."""
        case = plan.request.tests[index]
        if result.status != "ok":
            return None
        if checker is not None:
            return await self._run_checker(plan, index, checker, result.stdout)
        if case.expected_output is None:
            return None
        return check(plan.request.checker, result.stdout, case.expected_output)

    async def _run_checker(self, plan: Plan, index: int, checker: Program, output: str) -> Checked:
        """testlib's convention: `checker input output answer`, exit 0/1/2."""
        case = plan.request.tests[index]
        contents = (case.stdin, output, case.expected_output or "")
        async with self.runner.slots.acquire() as slot:
            ran = await execute(
                checker,
                execution_id=f"{plan.execution_id}-{index}-checker",
                stdin="",
                args=list(CHECKER_FILES),
                limits=self.settings.checker_limits(),
                slot=slot,
                files=[
                    (name, text.encode())
                    for name, text in zip(CHECKER_FILES, contents, strict=True)
                ],
            )
        message = (ran.stderr.strip() or ran.stdout.strip())[:MESSAGE_CHARS]
        if ran.status not in ("ok", "runtime_error"):
            return Checked("checker_error", f"the checker ended with {ran.status}: {message}")
        verdict = from_exit_code(ran.exit_code)
        if verdict == "checker_error":
            message = f"the checker exited with code {ran.exit_code}: {message}"
        return Checked(verdict, message)


def _checker_language(registry: Registry, name: str) -> Language:
    try:
        return registry.resolve(name)
    except DcodexError as exc:
        if exc.code != NOT_FOUND:
            raise
        raise DcodexError(NOT_FOUND, f"checker.{exc.message}", "checker.language") from exc


def _finished(
    reply: JudgeResult,
    plan: Plan,
    ran: dict[int, CaseResult],
    status: str = "ok",
) -> JudgeResult:
    request = plan.request
    cases: Sequence[CaseResult] = [
        ran.get(index) or skipped(index, case_name(request, index))
        for index in range(len(request.tests))
    ]
    if request.stop_on_first_failure:
        cases = stop_after_first_failure(cases)
    verdict = overall_verdict(cases) if status == "ok" else status
    return reply.model_copy(
        update={
            "status": status,
            "verdict": verdict,
            "cases": list(cases),
            "summary": summarize(cases),
        }
    )
