"""Latency samples and what the benchmark table says of them."""

from __future__ import annotations

from dataclasses import dataclass


def percentile(samples: list[float], percent: float) -> float:
    """The nearest-rank percentile of `samples` (not empty)."""
    ordered = sorted(samples)
    index = min(len(ordered) - 1, round(percent / 100 * (len(ordered) - 1)))
    return ordered[index]


@dataclass(frozen=True)
class Figures:
    """One measured thing: its per-execution latencies (ms) and its throughput."""

    name: str
    samples_ms: list[float]
    elapsed_s: float  # wall time of the whole measurement, for executions per second

    @property
    def p50(self) -> float:
        return percentile(self.samples_ms, 50)

    @property
    def p90(self) -> float:
        return percentile(self.samples_ms, 90)

    @property
    def p99(self) -> float:
        return percentile(self.samples_ms, 99)

    @property
    def per_second(self) -> float:
        return len(self.samples_ms) / self.elapsed_s if self.elapsed_s > 0 else 0.0

    def as_dict(self) -> dict[str, float | int | str]:
        return {
            "name": self.name,
            "count": len(self.samples_ms),
            "p50_ms": round(self.p50, 3),
            "p90_ms": round(self.p90, 3),
            "p99_ms": round(self.p99, 3),
            "per_second": round(self.per_second, 1),
        }


def joined(name: str, parts: list[Figures]) -> Figures:
    """Measurements made in several blocks, as one: every sample, the blocks' time."""
    samples = [sample for part in parts for sample in part.samples_ms]
    return Figures(name, samples, sum(part.elapsed_s for part in parts))
