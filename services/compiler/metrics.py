"""The compiler's Prometheus metrics: compiles, artifact reuse, compile slots."""

from __future__ import annotations

from prometheus_client import Counter, Gauge, Histogram

from dcodex.shared.sandbox.slots import SlotPool
from dcodex.shared.service.config import Settings
from dcodex.shared.service.metrics import LATENCY_BUCKETS, ServiceMetrics, toolchains_info
from dcodex.shared.subjects import COMPILER


class CompilerMetrics(ServiceMetrics):
    def __init__(self, settings: Settings, slots: SlotPool, version: str) -> None:
        super().__init__(COMPILER.name, version)
        registry = self.registry
        self.compiles = Counter(
            "dcodex_compiles_total",
            "Compile requests by language and outcome (ok, compile_error, cached)",
            ["language", "outcome"],
            registry=registry,
        )
        self.compile_seconds = Histogram(
            "dcodex_compile_duration_seconds",
            "Time of real compiles (not artifact reuse), by language",
            ["language"],
            buckets=LATENCY_BUCKETS,
            registry=registry,
        )
        self.artifact_lookups = Counter(
            "dcodex_artifact_lookups_total",
            "Artifact Object Store lookups before compiling, by outcome (hit, miss)",
            ["outcome"],
            registry=registry,
        )
        for outcome in ("hit", "miss"):
            self.artifact_lookups.labels(outcome)
        Gauge(
            "dcodex_compile_slots_max", "Compiles this compiler runs at once", registry=registry
        ).set(slots.size)
        Gauge(
            "dcodex_compile_slots_active", "Compiles running now", registry=registry
        ).set_function(lambda: slots.busy)
        Gauge(
            "dcodex_compile_queue_length", "Compiles waiting for a slot", registry=registry
        ).set_function(lambda: slots.waiting)
        Gauge(
            "dcodex_compile_limit_wall_time_seconds", "Wall clock of one compile", registry=registry
        ).set(settings.compile_timeout_seconds)
        Gauge(
            "dcodex_compile_limit_memory_bytes", "Address space of a compile", registry=registry
        ).set(settings.compile_memory_limit_bytes)
        Gauge(
            "dcodex_compile_limit_artifact_bytes", "Largest binary stored", registry=registry
        ).set(settings.max_artifact_bytes)

    def toolchains(self, versions: dict[str, str]) -> None:
        toolchains_info(self.registry, versions)
