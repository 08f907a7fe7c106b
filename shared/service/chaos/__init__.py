"""`dcodex chaos`: reliability scenarios with figures (docs/reliability.md).

Runs load, overload and faults under load (kill -9 of a runner, a compiler or a cache
replica; a nats-server restart; SIGTERM of a runner; a full disk under the JetStream
store; a slow consumer on an output subject) against a stack of separate
processes it starts (or, for load and overload, the one at --url), and prints a table
and JSON: requests sent, answered, answered correctly, lost, duplicated executions,
p50/p99, errors by code, leaked processes / temp directories / fds, service RSS.
Exits 1 when a scenario lost a request, leaked, ran a program twice or answered wrongly.
"""

from __future__ import annotations

import asyncio
import json
import sys
from pathlib import Path

import click
from rich.console import Console
from rich.table import Table

from dcodex.shared.service.chaos.scenarios import ALL, LONG, SHORT, Profile, Report, run_scenario


@click.command()
@click.argument("scenarios", nargs=-1, type=click.Choice(["all", *ALL]))
@click.option("--long", "long_", is_flag=True, help="the long profile (2,000 requests, 16 clients)")
@click.option("--requests", type=int, default=None, help="requests per scenario (overrides)")
@click.option("--clients", type=int, default=None, help="concurrent clients (overrides)")
@click.option("--url", default=None, help="a running stack's NATS URL (load and overload only)")
@click.option("--json-out", type=click.Path(path_type=Path), default=None, help="write JSON here")
@click.option("--keep-logs", type=click.Path(path_type=Path, file_okay=False), default=None,
              help="keep the stack's service logs in this directory")  # fmt: skip
def chaos(
    scenarios: tuple[str, ...],
    long_: bool,
    requests: int | None,
    clients: int | None,
    url: str | None,
    json_out: Path | None,
    keep_logs: Path | None,
) -> None:
    """Run reliability SCENARIOS (default: all) and print their figures."""
    names = list(ALL) if not scenarios or "all" in scenarios else list(scenarios)
    base = LONG if long_ else SHORT
    profile = Profile(requests or base.requests, clients or base.clients, base.deadline_s)
    reports = []
    for name in names:
        where = None
        if keep_logs is not None:
            where = keep_logs / name
            where.mkdir(parents=True, exist_ok=True)
        click.echo(
            f"chaos: {name} ({profile.requests} requests, {profile.clients} clients)", err=True
        )
        reports.append(asyncio.run(run_scenario(name, profile, url, where)))
    Console(width=None if sys.stdout.isatty() else 200).print(table(reports))
    document = json.dumps([r.as_dict() for r in reports], indent=2)
    click.echo(document)
    if json_out is not None:
        json_out.write_text(document + "\n")
    sys.exit(0 if all(r.passed for r in reports) else 1)


def table(reports: list[Report]) -> Table:
    grid = Table(title="dcodex chaos")
    columns = (
        "scenario", "sent", "answered", "correct", "lost", "dup runs", "p50 s", "p99 s",
        "errors", "leaks p/d/fd", "RSS MB start→end", "ok",
    )  # fmt: skip
    for column in columns:
        grid.add_column(column)
    for r in reports:
        start, end = sum(r.rss_start_mb.values()), sum(r.rss_end_mb.values())
        leaks = "/".join("-" if v is None else str(v) for v in
                         (r.leaked_processes, r.leaked_temp_dirs, r.leaked_fds))  # fmt: skip
        grid.add_row(
            r.scenario, str(r.sent), str(r.answered), str(r.correct), str(r.lost),
            "-" if r.duplicated_executions is None else str(r.duplicated_executions),
            f"{r.p50_s:.2f}", f"{r.p99_s:.2f}",
            " ".join(f"{code}×{n}" for code, n in r.errors_by_code.items()) or "-",
            leaks, f"{start:.0f}→{end:.0f}", "yes" if r.passed else "NO",
        )  # fmt: skip
    return grid
