"""`dcodex chaos` in its short profile: every scenario, against a stack of separate
processes it starts; nothing lost, nothing leaked, no program run twice, no wrong
answer (docs/reliability.md)."""

from __future__ import annotations

import json
import os
import subprocess
from pathlib import Path

import pytest

from dcodex.shared.service.chaos.disk import TMPFS, PrivateTmpfs, fill
from dcodex.shared.service.chaos.scenarios import ALL, SHORT, run_scenario
from dcodex.shared.service.chaos.stack import processes_with
from tests.conftest import dcodex_argv

pytestmark = [pytest.mark.bus, pytest.mark.timeout(600)]


@pytest.mark.parametrize("scenario", ALL)
async def test_scenario_loses_and_leaks_nothing(scenario: str) -> None:
    report = await run_scenario(scenario, SHORT)
    figures = json.dumps(report.as_dict(), indent=1)
    assert report.sent > 0
    assert report.lost == 0, figures
    assert report.wrong == [], figures
    assert report.duplicated_executions == 0, figures
    assert (report.leaked_processes, report.leaked_temp_dirs, report.leaked_fds) == (0, 0, 0)
    if scenario in ("load", "sigterm-runner", "restart-nats"):
        # No replica died mid-run: every request is answered with the right result
        # (a restart may refuse requests sent while the server is down: 503, said so).
        refused = report.errors_by_code.get("503", 0)
        assert report.correct + refused == report.sent, figures
        assert scenario == "restart-nats" or refused == 0, figures
    elif scenario == "disk-full":
        # Results are returned though they cannot be kept; a C program never compiled
        # before gets a 503 (its binary cannot reach a runner), nothing else. The fault
        # checks that writes really failed, were logged, and caching came back with what
        # was stored before (report.wrong, asserted empty above).
        assert set(report.errors_by_code) <= {"503"}, figures
        assert report.correct + report.errors_by_code.get("503", 0) == report.sent, figures
        assert "ENOSPC" in report.fault and "caching worked again" in report.fault, figures
        # Its store's holder is gone, and with it the tmpfs (never mounted on the host).
        assert processes_with(TMPFS) == [], figures
    elif scenario == "slow-consumer":
        # The server cut the stalled subscriber (counted in /varz, logged, connection
        # closed: checked by the fault); every requester got its right answer.
        assert report.correct == report.sent and not report.errors_by_code, figures
        assert "the server cut that subscriber" in report.fault, figures
    elif scenario == "overload":
        # The excess refused at once, the rest completed, served again after (in wrong).
        assert set(report.errors_by_code) == {"503"}, figures
    else:
        # A replica killed mid-run: its requests get a clear error, the rest complete.
        assert set(report.errors_by_code) <= {"503"}, figures
        assert report.correct >= report.sent // 2, figures


def test_the_command_prints_a_table_and_json() -> None:
    done = subprocess.run(
        dcodex_argv("chaos", "load", "--requests", "8", "--clients", "2"),
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert done.returncode == 0, done.stdout + done.stderr
    assert "dcodex chaos" in done.stdout and "load" in done.stdout
    document = json.loads(done.stdout[done.stdout.index("[\n") :])
    assert document[0]["scenario"] == "load" and document[0]["sent"] == 8
    assert document[0]["lost"] == 0 and document[0]["passed"] is True


def test_the_store_tmpfs_fills_and_leaves_nothing_mounted(tmp_path: Path) -> None:
    """disk-full's filesystem: full at its size, seen only inside its namespace, gone
    with its holder."""
    store = tmp_path / "jetstream"
    tmpfs = PrivateTmpfs(store, 4 * 2**20)
    tmpfs.start()
    try:
        assert tmpfs.holder is not None
        holder = tmpfs.holder.pid
        inside = Path(f"/proc/{holder}/root") / store.relative_to("/")
        assert fill(inside) == 4 * 2**20
        assert not os.path.ismount(store) and not any(store.iterdir())  # the host sees none
    finally:
        tmpfs.stop()
    assert not Path(f"/proc/{holder}").exists()
