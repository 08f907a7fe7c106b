"""`dcodex bus stats` shows how long each endpoint takes, after real runs.

A cache and a runner of their own, on a subject prefix of their own, so that no
other test's requests are in their averages.
"""

from __future__ import annotations

import asyncio
import re
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.conftest import ServiceProcesses, wait_for_subject
from tests.test_cli import dcodex, json_documents, shown, user_env

pytestmark = pytest.mark.bus


SLEEP_S = 0.2
RUNS = 3


@pytest.fixture
def own_services(stack: ServiceProcesses, tmp_path: Path) -> Iterator[tuple[ServiceProcesses, str]]:
    prefix = f"timed{uuid.uuid4().hex[:8]}"
    services = ServiceProcesses(stack.url, tmp_path, extra_args=("--subject-prefix", prefix))
    try:
        services.start("runner")
        services.start("cache")
        # Their own subjects: the session's runner and cache answer pings already.
        for subject in (f"{prefix}.languages", f"{prefix}.cache.stats"):
            asyncio.run(wait_for_subject(stack.url, subject))
        yield services, prefix
    finally:
        services.stop_all()


def endpoint_of(documents: list[dict[str, object]], subject: str) -> dict[str, object]:
    """The stats of the one endpoint on `subject` among every instance's."""
    found = [
        endpoint
        for document in documents
        for endpoint in document.get("endpoints", [])  # type: ignore[attr-defined]
        if endpoint["subject"] == subject
    ]
    assert len(found) == 1, (subject, found)
    return found[0]  # type: ignore[no-any-return]


def test_stats_show_the_average_time_of_each_endpoint(
    own_services: tuple[ServiceProcesses, str], tmp_path: Path
) -> None:
    services, prefix = own_services
    files = []
    for index in range(RUNS):  # distinct programs: none is answered from the cache
        program = tmp_path / f"sleep{index}.py"
        program.write_text(f"import time\ntime.sleep({SLEEP_S})\nprint({index})\n")
        files += ["-f", program.name]
    ran = dcodex(
        "bus", "-s", services.url, "--subject-prefix", prefix, "run", "--json", *files,
        cwd=tmp_path,
    )  # fmt: skip
    assert ran.returncode == 0, shown(ran)
    runs = json_documents(ran.stdout)
    assert [r["status"] for r in runs] == ["ok"] * RUNS and not any(r["cache_hit"] for r in runs)
    slowest_ms = max(float(r["elapsed_ms"]) for r in runs)  # as the client saw them

    stats = dcodex("bus", "-s", services.url, "--subject-prefix", prefix, "stats", "--json")
    assert stats.returncode == 0, shown(stats)
    documents = json_documents(stats.stdout)
    for subject in (f"{prefix}.run", f"{prefix}.execute"):
        endpoint = endpoint_of(documents, subject)
        assert endpoint["num_requests"] == RUNS, endpoint
        average_ms = endpoint["average_processing_time_ms"]
        assert isinstance(average_ms, float)
        # Each request slept, and was answered before the client had its reply.
        assert SLEEP_S * 1000 <= average_ms <= slowest_ms, (endpoint, slowest_ms)
        assert endpoint["average_processing_time"] == pytest.approx(average_ms * 1e6, abs=1e3)
        assert endpoint["processing_time"] >= RUNS * SLEEP_S * 1e9  # type: ignore[operator]

    wide = user_env(COLUMNS="200")  # each row on one line
    table = dcodex("bus", "-s", services.url, "--subject-prefix", prefix, "stats", env=wide)
    assert table.returncode == 0, shown(table)
    header = next(line for line in table.stdout.splitlines() if "endpoint" in line)
    assert re.search(r"requests\s*┃\s*errors\s*┃\s*avg time", header), shown(table)
    run_row = next(line for line in table.stdout.splitlines() if f"{prefix}.run " in line)
    cells = [cell.strip() for cell in run_row.split("│")[1:-1]]
    assert cells[3:5] == [str(RUNS), "0"], cells
    shown_ms = float(cells[5].removesuffix(" ms"))
    expected = endpoint_of(documents, f"{prefix}.run")["average_processing_time_ms"]
    # Shown to a tenth of a millisecond: half of one either way (205.75 shows as 205.8),
    # and the float's own error on top.
    assert shown_ms == pytest.approx(expected, abs=0.05 + 1e-9), cells
