"""The cache's Prometheus metrics: lookups by outcome, pass-throughs, leases, results not stored.

End-to-end latency is the `execute` endpoint's `dcodex_request_duration_seconds`.
"""

from __future__ import annotations

from prometheus_client import Counter

from dcodex.shared.service.metrics import ServiceMetrics
from dcodex.shared.subjects import CACHE

OUTCOMES = ("hit", "miss", "coalesced", "bypass")
LEASE_OUTCOMES = ("led", "followed", "lost", "adopted", "unavailable")


class CacheMetrics(ServiceMetrics):
    def __init__(self, version: str) -> None:
        super().__init__(CACHE.name, version)
        self.lookups = Counter(
            "dcodex_cache_lookups_total",
            "Result cache lookups by outcome (hit, miss, coalesced, bypass)",
            ["outcome"],
            registry=self.registry,
        )
        # Each outcome's counter, looked up once (a lookup on every request costs).
        self.lookups_by_outcome = {outcome: self.lookups.labels(outcome) for outcome in OUTCOMES}
        self.passthrough = Counter(
            "dcodex_cache_passthrough_total",
            "Requests sent to a runner unread because the result bucket was unavailable",
            registry=self.registry,
        )
        self.leases = Counter(
            "dcodex_cache_leases_total",
            "Runs coordinated through dcodex-inflight: led (this replica ran it), followed "
            "(shared another replica's run), lost (that lease ended without an outcome), "
            "adopted (took the result of a dead replica's run from its runner), "
            "unavailable (no lease bucket: ran without one)",
            ["outcome"],
            registry=self.registry,
        )
        for outcome in LEASE_OUTCOMES:
            self.leases.labels(outcome)
        self.memory_hits = Counter(
            "dcodex_cache_memory_hits_total",
            "Hits served from this replica's memory, without a JetStream read (a part of "
            'dcodex_cache_lookups_total{outcome="hit"})',
            registry=self.registry,
        )
        self.run_ahead = Counter(
            "dcodex_cache_run_ahead_total",
            "Misses whose run went to the runners with their lookup: used (the run was this "
            "replica's to lead), unused (the lookup found the result, or another replica "
            "led the run: this one ended unused)",
            ["outcome"],
            registry=self.registry,
        )
        for outcome in ("used", "unused"):
            self.run_ahead.labels(outcome)
        self.not_stored = Counter(
            "dcodex_cache_not_stored_total",
            "Results not stored, by reason (verdict, isolation, too_large, unavailable)",
            ["reason"],
            registry=self.registry,
        )
