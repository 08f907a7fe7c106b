"""The cache's `dcodex.judge`: per-case results from the result bucket, the rest from a runner.

Each case has its own key (the submission, its files, the checker, the case's input,
expected output and limits), so re-judging a changed test set runs only the cases
that changed. The cases the bucket does not hold go to one runner's `dcodex.judge.run`
in one request (compiled once there); the cache merges, stores and summarises.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable, Sequence

import msgpack
import structlog
from nats.aio.client import Client as NATS

from dcodex.services.cache.results import BucketUnavailable, ResultStore
from dcodex.shared import bus
from dcodex.shared.contract import (
    UNCACHEABLE_STATUSES,
    CaseEvent,
    CaseResult,
    EffectiveLimits,
    JudgedEvent,
    JudgeRequest,
    JudgeResult,
    LanguageInfo,
    LanguagesReply,
)
from dcodex.shared.errors import NOT_FOUND, DcodexError
from dcodex.shared.judge.plan import Toolchains, case_keys, case_limits, case_name, check_request
from dcodex.shared.judge.verdicts import (
    empty_result,
    first_failure,
    overall_verdict,
    skipped,
    stop_after_first_failure,
    summarize,
)
from dcodex.shared.service import micro
from dcodex.shared.service.config import Settings
from dcodex.shared.service.events import EventPublisher
from dcodex.shared.subjects import JUDGE_RUN

log = structlog.get_logger("dcodex.cache.judge")
# Verdicts that say more about the moment (or the judge) than the submission: never kept.
UNKEPT_VERDICTS = frozenset({"skipped", "checker_error", *UNCACHEABLE_STATUSES})


class CacheJudge:
    def __init__(
        self,
        settings: Settings,
        nc: NATS,
        store: ResultStore,
        runner_info: Callable[[str], Awaitable[LanguagesReply]],
        count: Callable[[str], None],
    ) -> None:
        self.settings = settings
        self.nc = nc
        self.store = store
        self.runner_info = runner_info
        self.count = count

    async def judge(self, call: micro.Call) -> JudgeResult:
        request = JudgeRequest.model_validate(call.payload)
        check_request(request, self.settings.judge_caps())
        info = await self.runner_info(call.request_id)
        language = info.language(request.language)
        checker_language = None
        if request.checker.type == "program" and request.checker.language is not None:
            checker_language = _checker_language(info, request.checker.language)
        limits = case_limits(request, info.limits.defaults, info.limits.ceilings)
        request = request.model_copy(
            update={"execution_id": request.execution_id or bus.new_id(), "language": language.id}
        )
        assert request.execution_id is not None
        events = EventPublisher(
            self.nc,
            self.settings.output_subject(request.execution_id),
            call.encoding,
            request.stream,
        )
        tools = Toolchains(
            language.id,
            language.version,
            request.std or language.default_std,
            request.optimization or language.default_optimization,
            checker_language.id if checker_language else None,
            checker_language.version if checker_language else None,
        )
        keys = case_keys(request, limits, tools)
        held = await self._held(request, keys) if request.cache else {}
        for case in held.values():
            events.event(CaseEvent(seq=case.index, case=case))
        to_run = self._to_run(request, held)
        base = empty_result(request.execution_id, language.id, language.version, [])
        ran: dict[int, CaseResult] = {}
        if to_run:
            base = await self._run(request, to_run, limits, call)
            ran = {case.index: case for case in base.cases if case.verdict != "skipped"}
            # Cases run under `rlimits` isolation may have been shaped by an earlier run.
            if request.cache and base.separated_from_other_runs():
                await self._keep(ran, keys)
        cases: Sequence[CaseResult] = [
            held.get(index) or ran.get(index) or skipped(index, case_name(request, index))
            for index in range(len(request.tests))
        ]
        if request.stop_on_first_failure:
            cases = stop_after_first_failure(cases)
        verdict = overall_verdict(cases) if base.status == "ok" else base.status
        result = base.model_copy(
            update={
                "execution_id": request.execution_id,
                "verdict": verdict,
                "cases": list(cases),
                "summary": summarize(cases),
            }
        )
        events.event(JudgedEvent(seq=len(request.tests), result=result))
        await events.drain()
        return result

    @staticmethod
    def _to_run(request: JudgeRequest, held: dict[int, CaseResult]) -> list[int]:
        """The cases the bucket does not hold; with stop_on_first_failure, only those
        before the first failure it holds (the rest would be skipped anyway)."""
        missing = [index for index in range(len(request.tests)) if index not in held]
        if request.stop_on_first_failure:
            first = first_failure(sorted(held.values(), key=lambda case: case.index))
            if first is not None:
                missing = [index for index in missing if index < first]
        return missing

    async def _held(self, request: JudgeRequest, keys: list[str]) -> dict[int, CaseResult]:
        async def get(key: str) -> bytes | None:
            try:
                return await self.store.get(key)
            except BucketUnavailable:
                return None

        stored = await asyncio.gather(*(get(key) for key in keys))
        held = {}
        for index, data in enumerate(stored):
            self.count("miss" if data is None else "hit")
            if data is not None:
                held[index] = unpack_case(data, index, case_name(request, index))
        return held

    async def _keep(self, ran: dict[int, CaseResult], keys: list[str]) -> None:
        for index, case in ran.items():
            if case.verdict in UNKEPT_VERDICTS:
                continue
            try:
                await self.store.put(keys[index], pack_case(case))
            except BucketUnavailable:
                log.debug("case_not_stored", index=index)
                return

    async def _run(
        self,
        request: JudgeRequest,
        to_run: list[int],
        limits: list[EffectiveLimits],
        call: micro.Call,
    ) -> JudgeResult:
        # A runner takes the cases in parallel: its wait is bounded by all of them in a row.
        budget = sum(limits[index].wall_time_s for index in to_run)
        if request.checker.type == "program":
            budget += len(to_run) * self.settings.checker_limits().wall_time_s
        reply = await bus.request(
            self.nc,
            self.settings.subject(JUDGE_RUN),
            request.model_copy(update={"only": to_run}),
            request_id=call.request_id,
            timeout=self.settings.request_timeout_seconds + budget,
            encoding=call.encoding,
        )
        return JudgeResult.model_validate(reply)


def _checker_language(info: LanguagesReply, name: str) -> LanguageInfo:
    try:
        return info.language(name)
    except DcodexError as exc:
        if exc.code != NOT_FOUND:
            raise
        raise DcodexError(NOT_FOUND, f"checker.{exc.message}", "checker.language") from exc


def pack_case(case: CaseResult) -> bytes:
    data = case.model_dump(mode="json", exclude={"index", "name", "cache_hit"})
    packed: bytes = msgpack.packb({"judge_case": data}, use_bin_type=True)
    return packed


def unpack_case(data: bytes, index: int, name: str) -> CaseResult:
    stored = msgpack.unpackb(data, raw=False)["judge_case"]
    return CaseResult.model_validate({**stored, "index": index, "name": name, "cache_hit": True})
