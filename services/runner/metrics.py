"""The runner's Prometheus metrics: verdicts, limits hit, latencies, saturation."""

from __future__ import annotations

import signal

from prometheus_client import Counter, Gauge, Histogram

from dcodex.shared.contract import EffectiveLimits, ExecutionResult
from dcodex.shared.sandbox.run import SandboxResult
from dcodex.shared.sandbox.slots import SlotPool
from dcodex.shared.service.config import Settings
from dcodex.shared.service.metrics import LATENCY_BUCKETS, ServiceMetrics, toolchains_info
from dcodex.shared.subjects import RUNNER

LIMITS = ("cpu_time", "wall_time", "memory", "output", "processes", "file_size")

# Verdicts that mean a limit stopped the program, by the limit's name.
LIMIT_OF_STATUS = {
    "cpu_time_limit": "cpu_time",
    "wall_time_limit": "wall_time",
    "memory_limit": "memory",
    "output_limit": "output",
}

# Each limit's gauge: its name and unit, and its field of `EffectiveLimits`.
LIMIT_GAUGES = {
    "cpu_time": ("dcodex_limit_cpu_time_seconds", "cpu_time_s"),
    "wall_time": ("dcodex_limit_wall_time_seconds", "wall_time_s"),
    "memory": ("dcodex_limit_memory_bytes", "memory_bytes"),
    "output": ("dcodex_limit_output_bytes", "output_bytes"),
    "processes": ("dcodex_limit_processes", "processes"),
    "file_size": ("dcodex_limit_file_size_bytes", "file_size_bytes"),
}


def limits_hit(outcome: SandboxResult, status: str) -> set[str]:
    """Every limit the run ran into, whichever one its verdict names.

    Beyond the verdict: the supervisor's kill reason, the cgroup's OOM kill and refused
    fork, and SIGXFSZ (a write past the file size limit). A run can hit several: a
    program stopped at its CPU limit may also have outlived its wall clock.
    """
    hit = {LIMIT_OF_STATUS[status]} if status in LIMIT_OF_STATUS else set()
    if outcome.killed_for is not None:
        hit.add(outcome.killed_for)
    if outcome.memory_limit_hit:
        hit.add("memory")
    if outcome.process_limit_hit:
        hit.add("processes")
    if outcome.signal == signal.SIGXFSZ:
        hit.add("file_size")
    return hit


class RunnerMetrics(ServiceMetrics):
    def __init__(self, settings: Settings, slots: SlotPool, version: str) -> None:
        super().__init__(RUNNER.name, version)
        registry = self.registry
        self.executions = Counter(
            "dcodex_executions_total",
            "Executions by language and verdict",
            ["language", "status"],
            registry=registry,
        )
        self.limit_hits = Counter(
            "dcodex_limit_hits_total",
            "Runs that ran into a limit, by limit (one run may hit several)",
            ["limit"],
            registry=registry,
        )
        for limit in LIMITS:
            self.limit_hits.labels(limit)
        self.run_seconds = Histogram(
            "dcodex_run_duration_seconds",
            "Wall time of sandboxed runs, by language",
            ["language"],
            buckets=LATENCY_BUCKETS,
            registry=registry,
        )
        self.sandbox_starts = Counter(
            "dcodex_sandbox_starts_total",
            "Sandboxed runs by how their program started: forked from the Python zygote "
            "(zygote) or exec'd by the helper (exec, warm sandboxes too)",
            ["how"],
            registry=registry,
        )
        for how in ("zygote", "exec"):
            self.sandbox_starts.labels(how)
        self.queue_wait_seconds = Histogram(
            "dcodex_queue_wait_seconds",
            "Time a run waited for a free sandbox",
            buckets=LATENCY_BUCKETS,
            registry=registry,
        )
        self.artifact_lookups = Counter(
            "dcodex_runner_artifact_lookups_total",
            "Compiled programs found in the runner's memory (hit) or fetched (miss)",
            ["outcome"],
            registry=registry,
        )
        Gauge(
            "dcodex_sandboxes_max", "Configured maximum concurrent sandboxes", registry=registry
        ).set(settings.max_concurrent_sandboxes)
        Gauge("dcodex_sandboxes_active", "Sandboxes running now", registry=registry).set_function(
            lambda: slots.busy
        )
        Gauge("dcodex_queue_length", "Runs waiting for a sandbox", registry=registry).set_function(
            lambda: slots.waiting
        )
        Gauge(
            "dcodex_queue_max", "Runs that may wait before new ones get 503", registry=registry
        ).set(settings.max_queued_executions)
        self._limit_gauges(settings.default_limits(), settings.ceiling_limits())

    def _limit_gauges(self, defaults: EffectiveLimits, ceilings: EffectiveLimits) -> None:
        for limit, (name, attribute) in LIMIT_GAUGES.items():
            gauge = Gauge(
                name,
                f"The {limit} limit: its default and the most a request may ask (bound)",
                ["bound"],
                registry=self.registry,
            )
            gauge.labels("default").set(getattr(defaults, attribute))
            gauge.labels("ceiling").set(getattr(ceilings, attribute))

    def toolchains(self, versions: dict[str, str]) -> None:
        toolchains_info(self.registry, versions)

    def sandbox_finished(self, outcome: SandboxResult, result: ExecutionResult) -> None:
        """Told by `execute` of every sandboxed run: its facts and its verdict."""
        for limit in limits_hit(outcome, result.status):
            self.limit_hits.labels(limit).inc()
        self.run_seconds.labels(result.language).observe(outcome.wall_time_ms / 1000)
        self.sandbox_starts.labels("zygote" if outcome.zygote else "exec").inc()

    def observe(self, result: ExecutionResult) -> None:
        """Every execution the runner answers, sandboxed or not (compile errors)."""
        self.executions.labels(result.language, result.status).inc()
