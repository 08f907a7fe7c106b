"""`dcodex chaos` in its short profile: every scenario, against a stack of separate
processes it starts; nothing lost, nothing leaked, no program run twice, no wrong
answer (docs/reliability.md)."""

from __future__ import annotations

import asyncio
import json
import os
import subprocess
from pathlib import Path

import pytest

from dcodex.shared.service.chaos.disk import TMPFS, PrivateTmpfs, fill
from dcodex.shared.service.chaos.scenarios import ALL, SHORT, run_scenario
from dcodex.shared.service.chaos.stack import (
    duplicated_runs,
    open_fds,
    processes_with,
    resting_fds,
)
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
    elif scenario.startswith("cluster-"):
        # A node of the NATS cluster lost: requests caught in the election window may
        # get a clear 503, every other one the right result; the cached result
        # survived (its check is in `wrong`), and the node was restarted.
        assert set(report.errors_by_code) <= {"503"}, figures
        assert report.correct + report.errors_by_code.get("503", 0) == report.sent, figures
        assert "restarted after" in report.fault, figures
        if scenario == "cluster-leader-stop":
            assert "leads KV_dcodex-results" in report.fault, figures
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


def test_a_program_run_again_uncached_is_told_from_a_duplicated_run(tmp_path: Path) -> None:
    def lines(path: Path, *fields: dict[str, object]) -> Path:
        path.write_text("".join(json.dumps({"event": "request", **f}) + "\n" for f in fields))
        return path

    def run(key: str, execution_id: str, at: str) -> dict[str, object]:
        return {"endpoint": "run", "code": 200, "cache_key": key, "execution_id": execution_id,
                "timestamp": at}  # fmt: skip

    runner = lines(
        tmp_path / "runner.log",
        run("k1", "a", "t1"), run("k1", "b", "t2"),  # b's lookup passed through
        run("k2", "c", "t1"), run("k2", "d", "t2"),  # c's result could not be stored
        run("k3", "e", "t1"), run("k3", "f", "t2"),  # f should have been a hit
        run("k4", "g", "t1"), run("k4", "g", "t2"),  # one request run twice
        run("k5", "h", "t1"), run("k5", "i", "t1"),  # i could not take h's lease
        run("k6", "j", "t1"), run("k6", "k", "t2"),  # k ran ahead, its lookup found j's
        run("k7", "l", "t1"), run("k7", "m", "t2"),  # m ran ahead unused...
        run("k7", "n", "t3"),  # ...and n should have been a hit
    )  # fmt: skip
    cache = lines(
        tmp_path / "cache.log",
        {"endpoint": "execute", "execution_id": "b", "passthrough": True},
        {"event": "result_not_stored", "execution_id": "c", "reason": "unavailable"},
        {"endpoint": "execute", "execution_id": "g", "passthrough": True},
        {"endpoint": "execute", "execution_id": "i", "lease": "unavailable"},
        {"endpoint": "execute", "execution_id": "k", "run_ahead": "unused"},
        {"endpoint": "execute", "execution_id": "m", "run_ahead": "unused"},
    )
    assert duplicated_runs([runner], [cache]) == (3, 3, 2)


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


async def test_fds_are_counted_at_rest_and_a_held_leak_still_counts() -> None:
    """A warm pool's refill opens its pipes a moment after the reply: the count waits
    for it. fds opened and kept (a leak) are in the count."""
    script = (
        "import os, sys, time\n"
        "sys.stdout.write('up\\n'); sys.stdout.flush()\n"
        "kept = []\n"
        "for _ in range(3):\n"
        "    time.sleep(0.3)\n"
        "    kept.append(os.pipe())\n"
        "time.sleep(60)\n"
    )
    process = await asyncio.create_subprocess_exec(
        "/usr/bin/python3", "-c", script, stdout=asyncio.subprocess.PIPE
    )
    try:
        assert process.stdout is not None and await process.stdout.readline() == b"up\n"
        first = open_fds(process.pid)
        rested = await resting_fds(process.pid)
        assert rested == first + 6 == open_fds(process.pid)
    finally:
        process.kill()
        await process.wait()


async def test_fds_a_live_child_holds_are_its_own_and_counted_once_it_is_gone() -> None:
    """A warm sandbox's pipes are the runner's only while the sandbox lives (its refill
    waits for spare CPU, so their number moves on a busy host); a pipe kept after its
    child has gone is the parent's, a leak if it grows."""
    script = (
        "import os, subprocess, sys\n"
        "r, w = os.pipe()\n"
        "child = subprocess.Popen(['sleep', '60'], stdin=r, stdout=subprocess.DEVNULL,\n"
        "                         stderr=subprocess.DEVNULL)\n"
        "os.close(r)\n"
        "sys.stdout.write('up\\n'); sys.stdout.flush()\n"
        "sys.stdin.readline()\n"
        "child.kill(); child.wait()\n"
        "sys.stdout.write('gone\\n'); sys.stdout.flush()\n"
        "sys.stdin.readline()\n"
    )
    process = await asyncio.create_subprocess_exec(
        "/usr/bin/python3",
        "-c",
        script,
        stdin=asyncio.subprocess.PIPE,
        stdout=asyncio.subprocess.PIPE,
    )
    assert process.stdin is not None and process.stdout is not None
    try:
        assert await process.stdout.readline() == b"up\n"
        every = len(os.listdir(f"/proc/{process.pid}/fd"))
        assert open_fds(process.pid) == every - 1  # the write end: the child reads it
        process.stdin.write(b"\n")
        assert await process.stdout.readline() == b"gone\n"
        assert open_fds(process.pid) == every == len(os.listdir(f"/proc/{process.pid}/fd"))
    finally:
        process.kill()
        await process.wait()
