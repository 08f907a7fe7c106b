"""How `dcodex bus run` shows results: per run, the cache demo, and the closing summary."""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from typing import Any

import click
from rich.markup import escape
from rich.table import Table

from dcodex.shared.cli.common import console
from dcodex.shared.cli.jobs import Job
from dcodex.shared.cli.terminal import visible
from dcodex.shared.contract import ExecutionResult

STATUS_STYLE = {"ok": "green", "compile_error": "yellow", "internal_error": "red bold"}


def check_expectations(result: ExecutionResult, expect: dict[str, Any]) -> list[str]:
    """What in `result` differs from a manifest entry."""
    problems = []
    if result.status != expect.get("status", "ok"):
        problems.append(f"status {result.status}, expected {expect.get('status', 'ok')}")
    for stream in ("stdout", "stderr"):
        wanted = expect.get(stream)
        if wanted and wanted not in getattr(result, stream):
            problems.append(f"{stream} lacks {wanted!r}")
    return problems


def show(job: Job, result: ExecutionResult, elapsed_s: float, problems: list[str]) -> None:
    style = STATUS_STYLE.get(result.status, "magenta")
    mark = "" if job.expect is None else (" [green]✓[/green]" if not problems else " [red]✗[/red]")
    console.rule(f"[bold]{escape(str(job.path))}[/bold] ({escape(result.language)})")
    if result.compile_output.strip():
        console.print(
            f"[dim]compile:[/dim]\n{escape(visible(result.compile_output.rstrip()))}",
            highlight=False,
        )
    if result.stdout:
        shown = visible(clip(result.stdout))
        console.print(escape(shown), end="" if shown.endswith("\n") else "\n", highlight=False)
    if result.stderr:
        console.print(f"[red]{escape(visible(clip(result.stderr)))}[/red]", highlight=False)
    console.print(f"[{style}]{result.status}[/{style}]{mark}  {summary(result, elapsed_s)}")
    for problem in problems:
        console.print(f"  [red]{escape(problem)}[/red]")


def ending(result: ExecutionResult) -> str:
    if result.signal is not None:
        return f"signal {result.signal}"
    return "not run" if result.exit_code is None else f"exit {result.exit_code}"


def summary(result: ExecutionResult, elapsed_s: float) -> str:
    """Exit, times, memory and cache of a result, on one line."""
    parts = [
        ending(result),
        f"cpu {result.cpu_time_ms:.0f} ms",
        f"wall {result.wall_time_ms:.0f} ms",
        f"mem {result.peak_memory_bytes / 2**20:.1f} MiB",
    ]
    if result.compile_time_ms is not None:
        parts.append(f"compile {result.compile_time_ms:.0f} ms")
    parts.append(f"cache {'hit' if result.cache_hit else 'miss'}")
    parts.append(f"total {elapsed_s * 1000:.0f} ms")
    return "  ".join(parts)


def show_cache_demo(result: ExecutionResult, first_s: float, second_s: float) -> None:
    """The second run of `--cache-demo`: a hit, and how much faster than the first."""
    speedup = first_s / second_s if second_s > 0 else float("inf")
    verdict = "[green]cache hit[/green]" if result.cache_hit else "[yellow]cache miss[/yellow]"
    console.print(
        f"again: {verdict}  {second_s * 1000:.1f} ms vs {first_s * 1000:.1f} ms "
        f"({speedup:.0f}x faster)"
    )


def print_json_line(job: Job, result: ExecutionResult, elapsed_s: float) -> None:
    document = {"file": str(job.path), **result.model_dump(mode="json")}
    document["elapsed_ms"] = round(elapsed_s * 1000, 3)
    click.echo(json.dumps(document, ensure_ascii=False))


def clip(text: str, limit: int = 1000) -> str:
    return text if len(text) <= limit else text[:limit] + f"\n… ({len(text) - limit} more chars)"


@dataclass
class _Row:
    runs: int = 0
    hits: int = 0
    seconds: float = 0.0


@dataclass
class Tally:
    """Verdicts, cache hits and time of every run of one `dcodex bus run`."""

    rows: dict[str, _Row] = field(default_factory=dict)
    mismatches: int = 0

    def add(self, result: ExecutionResult, elapsed_s: float) -> None:
        row = self.rows.setdefault(result.status, _Row())
        row.runs += 1
        row.hits += result.cache_hit
        row.seconds += elapsed_s

    @property
    def runs(self) -> int:
        return sum(row.runs for row in self.rows.values())

    @property
    def not_ok(self) -> int:
        return sum(row.runs for status, row in self.rows.items() if status != "ok")

    def show(self) -> None:
        """A rule with the counts, then a table by verdict with a total row."""
        counts = ", ".join(f"{row.runs} {status}" for status, row in sorted(self.rows.items()))
        console.rule(f"{self.runs} runs: {counts}")
        table = Table("verdict", "runs", "from cache", "time")
        for status, row in sorted(self.rows.items()):
            style = STATUS_STYLE.get(status, "magenta")
            table.add_row(
                f"[{style}]{status}[/{style}]", str(row.runs), str(row.hits), _seconds(row.seconds)
            )
        table.add_section()
        total = _Row(
            self.runs,
            sum(row.hits for row in self.rows.values()),
            sum(row.seconds for row in self.rows.values()),
        )
        table.add_row("total", str(total.runs), str(total.hits), _seconds(total.seconds))
        console.print(table)


def _seconds(value: float) -> str:
    return f"{value:.2f} s"


def human_bytes(count: float) -> str:
    """1536 → `1.5 KiB`, 4294967296 → `4 GiB`."""
    for unit in ("B", "KiB", "MiB", "GiB", "TiB"):
        if abs(count) < 1024 or unit == "TiB":
            text = f"{count:.1f}".rstrip("0").rstrip(".") if unit != "B" else str(int(count))
            return f"{text} {unit}"
        count /= 1024
    raise AssertionError("unreachable")
