"""The runner's Prometheus metrics."""

from __future__ import annotations

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram

from dcodex.shared.config import Settings
from dcodex.shared.contract import ExecutionResult
from dcodex.shared.slots import SlotPool

# Verdicts that mean a limit stopped the program, by the limit's name.
LIMIT_OF_STATUS = {
    "cpu_time_limit": "cpu_time",
    "wall_time_limit": "wall_time",
    "memory_limit": "memory",
    "output_limit": "output",
}


class RunnerMetrics:
    def __init__(self, settings: Settings, slots: SlotPool) -> None:
        self.registry = CollectorRegistry()
        self.executions = Counter(
            "dcodex_executions_total",
            "Executions by language and verdict",
            ["language", "status"],
            registry=self.registry,
        )
        self.limit_hits = Counter(
            "dcodex_limit_hits_total", "Runs stopped by a limit", ["limit"], registry=self.registry
        )
        self.run_seconds = Histogram(
            "dcodex_run_duration_seconds",
            "Wall time of sandboxed runs",
            ["language"],
            registry=self.registry,
        )
        self.max_sandboxes = Gauge(
            "dcodex_sandboxes_max",
            "Configured maximum concurrent sandboxes",
            registry=self.registry,
        )
        self.max_sandboxes.set(settings.max_concurrent_sandboxes)
        self.active_sandboxes = Gauge(
            "dcodex_sandboxes_active", "Sandboxes running now", registry=self.registry
        )
        self.active_sandboxes.set_function(lambda: slots.busy)
        self.queued = Gauge(
            "dcodex_queue_length", "Runs waiting for a sandbox", registry=self.registry
        )
        self.queued.set_function(lambda: slots.waiting)

    def observe(self, result: ExecutionResult) -> None:
        self.executions.labels(result.language, result.status).inc()
        limit = LIMIT_OF_STATUS.get(result.status)
        if limit:
            self.limit_hits.labels(limit).inc()
        self.run_seconds.labels(result.language).observe(result.wall_time_ms / 1000)
