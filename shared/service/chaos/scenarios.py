"""The chaos scenarios: a load, with or without a fault injected midway, and overload.

Each is bounded in time: every request has the client's deadline, and the scenario's
sending ends after its count of requests. A fault is injected once a third of the
requests have been sent.
"""

from __future__ import annotations

import asyncio
import signal
import statistics
import tempfile
import time
import uuid
from collections import Counter
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from dcodex.shared.client import DcodexClient
from dcodex.shared.errors import UNAVAILABLE
from dcodex.shared.sandbox.leftovers import find_leftovers
from dcodex.shared.service.chaos import cluster, disk, slow_consumer
from dcodex.shared.service.chaos.stack import (
    Stack,
    duplicated_runs,
    processes_with,
    resting_fds,
    rss_bytes,
    runs_by_program,
)
from dcodex.shared.service.chaos.workload import Job, Outcome, Workload, perform

Fault = Callable[[Stack], Awaitable[str]]


@dataclass(frozen=True)
class Profile:
    requests: int
    clients: int
    deadline_s: float  # the client's timeout: past it a request counts as lost


# Past its count of requests, a scenario goes on sending (each client one request per
# this many seconds, at most) until its fault is over: a fault happens under load.
AFTER_COUNT_PACE_S = 0.25
SHORT = Profile(requests=40, clients=4, deadline_s=60)
LONG = Profile(requests=2000, clients=16, deadline_s=60)


# ------------------------------------------------------------------ faults


async def kill_one(stack: Stack, name: str, signum: int = signal.SIGKILL) -> str:
    victim = stack.alive(name)[0]
    stack.kill(victim, signum)
    if signum == signal.SIGKILL:
        await asyncio.to_thread(victim.process.wait)  # reaped, as its pod would be
    return f"{signal.Signals(signum).name} {name} pid {victim.pid}"


async def kill_and_replace(stack: Stack, name: str) -> str:
    """kill -9, then a new instance a second later, as an orchestrator would: the new
    one removes what the killed one left (work directories, cgroups)."""
    done = await kill_one(stack, name)
    await asyncio.sleep(1)
    stack.start(name)
    return done + ", a new one started 1 s later"


async def restart_nats(stack: Stack) -> str:
    stack.stop_nats()
    await asyncio.sleep(2)
    stack.start_nats()
    return "nats-server stopped for 2 s, restarted on its store"


async def sigterm_then_replace(stack: Stack) -> str:
    done = await kill_one(stack, "runner", signal.SIGTERM)
    stack.start("runner")
    return done + ", and a new runner started"


@dataclass(frozen=True)
class Scenario:
    name: str
    summary: str
    counts: dict[str, int]
    fault: Fault | None = None
    service_args: dict[str, tuple[str, ...]] = field(default_factory=dict)
    prepare: Callable[[Stack], None] | None = None  # before nats-server starts
    # What counts as a program run twice: the same cache key (identical requests share
    # one run), or only the same request (when results cannot be kept, by design).
    duplicates_by: str = "cache_key"
    stack: type[Stack] = Stack  # or a stack on a NATS cluster (chaos/cluster.py)


TWO_OF_EACH = {"compiler": 2, "runner": 2, "cache": 2}
SCENARIOS = {
    s.name: s
    for s in (
        Scenario("load", "mixed executions, no fault", {"compiler": 1, "runner": 2, "cache": 1}),
        Scenario(
            "kill-runner",
            "kill -9 of a runner under load",
            TWO_OF_EACH,
            lambda s: kill_and_replace(s, "runner"),
        ),
        Scenario(
            "kill-compiler",
            "kill -9 of a compiler under load",
            TWO_OF_EACH,
            lambda s: kill_and_replace(s, "compiler"),
        ),
        Scenario(
            "kill-cache",
            "kill -9 of a cache replica under load",
            TWO_OF_EACH,
            lambda s: kill_and_replace(s, "cache"),
        ),
        Scenario(
            "restart-nats",
            "nats-server restarted under load",
            {"compiler": 1, "runner": 2, "cache": 1},
            restart_nats,
        ),
        Scenario(
            "sigterm-runner",
            "SIGTERM of a runner with runs in flight (a new one replaces it)",
            TWO_OF_EACH,
            sigterm_then_replace,
        ),
        Scenario(
            "disk-full",
            "the JetStream store's disk full under load; freed, nats-server restarted",
            TWO_OF_EACH,
            disk.fill_the_store,
            prepare=disk.store_on_small_tmpfs,
            duplicates_by="execution_id",  # results that cannot be kept are run again
        ),
        Scenario(
            "slow-consumer",
            "a subscriber that never reads a big run's output subject, under load",
            TWO_OF_EACH,
            slow_consumer.stall_a_subscriber,
            prepare=slow_consumer.low_write_deadline,
        ),
        *(
            Scenario(n, s, cluster.COUNTS, f, stack=cluster.ClusterStack)
            for n, s, f in cluster.FAULTS
        ),
    )
}
ALL = (*SCENARIOS, "overload")


# ------------------------------------------------------------------ the report


@dataclass
class Report:
    scenario: str
    fault: str = ""
    sent: int = 0
    answered: int = 0
    correct: int = 0
    lost: int = 0
    duplicated_executions: int | None = None
    p50_s: float = 0.0
    p99_s: float = 0.0
    errors_by_code: dict[str, int] = field(default_factory=dict)
    wrong: list[str] = field(default_factory=list)
    leaked_processes: int | None = None
    leaked_temp_dirs: int | None = None
    leaked_fds: int | None = None
    rss_start_mb: dict[str, float] = field(default_factory=dict)
    rss_end_mb: dict[str, float] = field(default_factory=dict)
    seconds: float = 0.0
    notes: list[str] = field(default_factory=list)

    @property
    def passed(self) -> bool:
        leaks = (self.leaked_processes or 0) + (self.leaked_temp_dirs or 0) + (self.leaked_fds or 0)
        return self.lost == 0 and leaks == 0 and not self.wrong and not self.duplicated_executions

    def tally(self, outcomes: list[Outcome]) -> None:
        self.sent = len(outcomes)
        self.lost = sum(o.lost for o in outcomes)
        self.answered = self.sent - self.lost
        self.correct = sum(o.correct for o in outcomes)
        codes = Counter(str(o.error_code) for o in outcomes if o.error_code and not o.lost)
        self.errors_by_code = dict(sorted(codes.items()))
        # A result that is not the right one (an error reply is not "wrong": it says so).
        self.wrong = [
            f"{o.kind}: {o.detail}" for o in outcomes if not o.correct and o.error_code is None
        ][:10]
        times = sorted(o.seconds for o in outcomes if not o.lost)
        if times:
            self.p50_s = round(statistics.median(times), 3)
            self.p99_s = round(times[min(len(times) - 1, int(len(times) * 0.99))], 3)

    def as_dict(self) -> dict[str, Any]:
        fields = dict(self.__dict__)
        fields["passed"] = self.passed
        return fields


# ------------------------------------------------------------------ running one


async def run_scenario(
    name: str, profile: Profile, url: str | None = None, directory: Path | None = None
) -> Report:
    """Run scenario `name` against a stack it starts (or the one at `url`)."""
    with tempfile.TemporaryDirectory(prefix="dcodex-chaos-") as owned:
        where = directory or Path(owned)
        if name == "overload":
            return await _overload(profile, url, where)
        return await _load(SCENARIOS[name], profile, url, where)


async def _load(scenario: Scenario, profile: Profile, url: str | None, where: Path) -> Report:
    report = Report(scenario.name)
    marker = f"dcodex-chaos-{uuid.uuid4().hex[:12]}"
    stack = scenario.stack(where, service_args=scenario.service_args)
    if url is not None:
        if scenario.fault is not None:
            raise ValueError(f"{scenario.name} injects a fault: it needs a stack of its own")
        stack.url = url
    else:
        try:
            if scenario.prepare is not None:
                scenario.prepare(stack)  # undone by stack.stop_all
            stack.start_nats()
        except BaseException:
            stack.cleanups.close()
            raise
        for service, count in scenario.counts.items():
            for _ in range(count):
                stack.start(service)
    started = time.monotonic()
    try:
        if url is None:
            await stack.wait_ready(scenario.counts)
        outcomes = await _drive(stack, scenario, profile, marker, report)
        report.tally(outcomes)
        report.wrong += stack.problems
    finally:
        await _finish(stack, report, marker, url is None, scenario.duplicates_by)
    report.seconds = round(time.monotonic() - started, 1)
    return report


async def _drive(
    stack: Stack, scenario: Scenario, profile: Profile, marker: str, report: Report
) -> list[Outcome]:
    workload = Workload(marker)
    outcomes: list[Outcome] = []
    sent = 0
    fault_at = profile.requests // 3 if scenario.fault is not None else -1
    fault_task: asyncio.Task[str] | None = None
    async with await DcodexClient.connect(stack.url, timeout=profile.deadline_s) as warm:
        for outcome in [await perform(warm, workload.job()) for _ in range(3)]:
            if not outcome.correct:
                report.notes.append(f"warm-up: {outcome.kind} {outcome.detail}")
    fds = await _resting_fds_by_pid(stack)
    report.rss_start_mb = _rss_by_service(stack)

    async def client_loop() -> None:
        nonlocal sent, fault_task
        async with await DcodexClient.connect(stack.url, timeout=profile.deadline_s) as client:
            while sent < profile.requests or (fault_task is not None and not fault_task.done()):
                if sent >= profile.requests:  # the fault is still under way: so is the load
                    await asyncio.sleep(AFTER_COUNT_PACE_S)
                sent += 1
                if sent == fault_at and scenario.fault is not None:
                    fault_task = asyncio.ensure_future(scenario.fault(stack))
                outcomes.append(await perform(client, workload.job()))

    await asyncio.gather(*(client_loop() for _ in range(profile.clients)))
    if fault_task is not None:
        report.fault = await fault_task
        if stack.owns_nats:  # ours: the replacements are up before we measure
            await stack.wait_ready(scenario.counts)
    await asyncio.sleep(1.0)  # runs cut off by the fault end
    report.rss_end_mb = _rss_by_service(stack)
    if stack.services:
        report.leaked_fds = await _fds_grown(stack, fds)
    return outcomes


def _rss_by_service(stack: Stack) -> dict[str, float]:
    return {
        f"{s.name}-{s.index}": round(rss_bytes(s.pid) / 2**20, 1) for s in stack.services if s.alive
    }


async def _finish(
    stack: Stack, report: Report, marker: str, own_stack: bool, by: str = "cache_key"
) -> None:
    if not own_stack:
        return
    pids = [s.pid for s in stack.services]
    await asyncio.to_thread(stack.stop_all)
    logs = [s.log for s in stack.services if s.name == "runner"]
    if by == "cache_key":
        caches = [s.log for s in stack.services if s.name == "cache"]
        report.duplicated_executions, uncached, ahead = duplicated_runs(logs, caches)
        if uncached:
            report.notes.append(f"{uncached} programs ran again uncached: bucket unavailable")
        if ahead:
            report.notes.append(f"{ahead} runs sent ahead of their lookup ended unused")
    else:
        runs = runs_by_program(logs, by)
        report.duplicated_executions = sum(count - 1 for count in runs.values() if count > 1)
        again = sum(n - 1 for n in runs_by_program(logs, "cache_key").values() if n > 1)
        report.notes.append(f"identical requests run again (their result was not kept): {again}")
    await asyncio.sleep(0.5)
    report.leaked_processes = len(processes_with(marker))
    leftovers = find_leftovers()
    ours = [p for p in leftovers.directories if any(f"-{pid}-" in p.name for pid in pids)]
    ours += [p for p in leftovers.cgroups if any(f"-{pid}-" in p.name for pid in pids)]
    report.leaked_temp_dirs = len(ours)


# ------------------------------------------------------------------ overload


async def _overload(profile: Profile, url: str | None, where: Path) -> Report:
    """5x what the runners take at once: the excess is refused (503) at once, what is
    admitted completes, and the system serves normally right after."""
    report = Report("overload")
    marker = f"dcodex-chaos-{uuid.uuid4().hex[:12]}"
    slots, queued = 2, 2
    args: dict[str, tuple[str, ...]] = {
        "runner": ("--max-concurrent-sandboxes", str(slots), "--max-queued-executions", str(queued))
    }
    stack = Stack(where, service_args=args)
    capacity = slots + queued
    started = time.monotonic()
    if url is not None:
        stack.url = url
        capacity = 4  # unknown: the remote runners' settings decide what is refused
    else:
        stack.start_nats()
        for service in ("compiler", "runner", "cache"):
            stack.start(service)
    try:
        if url is None:
            await stack.wait_ready({"compiler": 1, "runner": 1, "cache": 1})
        report.rss_start_mb = _rss_by_service(stack)
        fds = await _resting_fds_by_pid(stack)
        burst = 5 * capacity
        sleepy = {
            "language": "python",
            "code": "import time\ntime.sleep(1)\nprint('slept')",
            "args": [marker],
            "cache": False,
        }
        async with await DcodexClient.connect(stack.url, timeout=profile.deadline_s) as client:
            job = Job("overload", sleepy, lambda r: r.status == "ok" and r.stdout == "slept\n")
            outcomes = await asyncio.gather(*(perform(client, job) for _ in range(burst)))
            after = await perform(client, job)  # recovered by itself
            report.tally([*outcomes, after])
            refused = [o for o in outcomes if o.error_code == UNAVAILABLE]
            slow_refusals = [o for o in refused if o.seconds > 2.0]
            report.notes.append(
                f"burst of {burst} against {capacity} places: {len(refused)} refused (503), "
                f"{sum(o.correct for o in outcomes)} completed; "
                f"slowest refusal {max((o.seconds for o in refused), default=0):.2f} s"
            )
            if slow_refusals:
                report.wrong.append(f"{len(slow_refusals)} refusals took over 2 s")
            if not refused:
                report.wrong.append("nothing was refused: the burst did not overload")
            if not after.correct:
                report.wrong.append(
                    f"no recovery after the burst: {after.error_code} {after.detail}"
                )
        report.rss_end_mb = _rss_by_service(stack)
        if url is None:
            report.leaked_fds = await _fds_grown(stack, fds)
    finally:
        await _finish(stack, report, marker, own_stack=url is None)
    report.seconds = round(time.monotonic() - started, 1)
    return report


async def _resting_fds_by_pid(stack: Stack) -> dict[int, int]:
    alive = [s.pid for s in stack.services if s.alive]
    counts = await asyncio.gather(*(resting_fds(pid) for pid in alive))
    return dict(zip(alive, counts, strict=True))


async def _fds_grown(stack: Stack, before: dict[int, int]) -> int:
    """Open fds each service holds at rest beyond what it held before (those alive
    throughout)."""
    now = await _resting_fds_by_pid(stack)
    return sum(max(0, now[pid] - count) for pid, count in before.items() if pid in now)
