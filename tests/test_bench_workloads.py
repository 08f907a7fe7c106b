"""`dcodex bench workloads`: runs against stacks it starts and one given by URL, and says
what it measured in the shape promised (figures are never asserted: no timing here)."""

from __future__ import annotations

import json
import subprocess
import time
from pathlib import Path
from typing import Any

import pytest

from dcodex.shared.benchmarks.neighbours import MARK
from dcodex.shared.sandbox.proc_stat import stat_fields
from dcodex.shared.service.chaos.stack import processes_with
from tests.conftest import ServiceProcesses, dcodex_argv, stop_process

pytestmark = pytest.mark.bus

TINY = [
    "-n",
    "2",
    "--hits",
    "5",
    "--concurrent-hits",
    "6",
    "--clients",
    "2",
    "--concurrent-runs",
    "4",
]
ROW_FIELDS = {"workload", "name", "count", "p50_ms", "p90_ms", "p99_ms", "per_second", "floor"}


def bench(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        dcodex_argv("bench", "workloads", *TINY, *args), capture_output=True, text=True, timeout=300
    )


def test_one_process_stack_every_workload_beside_its_floor_as_json() -> None:
    done = bench("--isolation", "best", "--json")
    assert done.returncode == 0, done.stderr
    report = json.loads(done.stdout)
    assert report["stack"] == "one-process"
    assert report["machine"]["cores"] >= 1 and len(report["machine"]["load_before"]) == 3
    assert {"rlimits", "no_new_privs", "clean_env"} <= set(report["isolation"])
    rows = {row["workload"]: row for row in report["workloads"]}
    assert set(rows) == {"W1", "W2", "W3", "W4", "W4c", "W5", "W6", "W6b", "C", "N"}
    for key, row in rows.items():
        assert set(row) >= ROW_FIELDS, key
        assert row["count"] >= 2 and row["p50_ms"] > 0 and row["per_second"] > 0, row
        assert row["p50_ms"] <= row["p90_ms"] <= row["p99_ms"], row
    assert rows["W1"]["floor"]["name"] == "bare python3 hello"
    assert rows["W2"]["floor"]["name"] == "bare gcc -O2 + run"
    assert rows["W3"]["floor"]["name"] == "bare g++ -O2 + run"
    assert rows["W5"]["compare"] == "throughput" and rows["W5"]["ratio"] > 0
    assert rows["W4c"]["floor"] is None and rows["W4c"]["ratio"] is None
    assert rows["W4"]["floor"]["name"] == "bare NATS request/reply"
    # What any NATS service costs: beside W4, no ratio of its own.
    assert rows["N"]["name"] == "do-nothing NATS service, a hit's messages"
    assert rows["N"]["floor"] is None and rows["N"]["ratio"] is None
    assert rows["W6b"]["name"] == "W6 back to back, no floor between"
    assert rows["W6b"]["floor"] is None and rows["W6b"]["ratio"] is None
    # Idle memory of the one process that holds all three services, and of NATS.
    assert set(report["idle_rss_bytes"]) == {"dcodex up (all three)", "nats-server"}
    assert all(size > 0 for size in report["idle_rss_bytes"].values())


def test_per_service_stack_reports_each_service_memory_in_a_table() -> None:
    done = bench("--isolation", "best", "--stack", "per-service", "--only", "W1,W4")
    assert done.returncode == 0, done.stderr
    out = done.stdout
    for text in ("W1 Python hello", "bare python3 hello", "W4 cache hit", "bare NATS"):
        assert text in out, out
    assert "W2" not in out and "W6" not in out
    for service in ("compiler", "runner", "cache", "nats-server"):
        assert f"│ {service}" in out, out
    assert "load" in out and "sandbox layers:" in out


def test_a_stack_given_by_url_is_measured_and_left_running(stack: ServiceProcesses) -> None:
    done = bench("--url", stack.url, "--only", "W6", "--json")
    assert done.returncode == 0, done.stderr
    report = json.loads(done.stdout)
    assert report["stack"] == "given" and report["idle_rss_bytes"] == {}
    rows = {row["workload"]: row for row in report["workloads"]}
    assert set(rows) == {"W6", "W6b", "C"}
    assert rows["W6"]["floor"]["name"] == "plain bwrap, C binary"
    assert all(process.poll() is None for group in stack.processes.values() for process in group)


def neighbours_alive() -> list[int]:
    """PIDs of busy neighbours (`--busy-neighbours`) running now, anyone's."""
    return processes_with(MARK)


def wait_for_neighbours(bench: subprocess.Popen[Any], count: int) -> list[int]:
    deadline = time.monotonic() + 60
    while len(found := neighbours_alive()) < count:
        assert bench.poll() is None, "the benchmark ended before its neighbours showed"
        assert time.monotonic() < deadline, "no busy neighbours within 60 s"
        time.sleep(0.05)
    return found


def test_busy_neighbours_load_the_machine_while_it_runs_and_are_stopped_after() -> None:
    assert neighbours_alive() == []
    argv = dcodex_argv(
        "bench", "workloads", *TINY, "--isolation", "best", "--only", "W6",
        "--busy-neighbours", "2", "--json",
    )  # fmt: skip
    with subprocess.Popen(argv, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True) as run:
        try:
            busy = wait_for_neighbours(run, 2)
            # Each neighbour is a loop that never sleeps: it is on a core, not waiting.
            time.sleep(0.3)
            assert all(stat_fields(pid)[0] == "R" for pid in busy)
            out, err = run.communicate(timeout=300)
        finally:
            stop_process(run)
    assert run.returncode == 0, err
    report = json.loads(out)
    assert report["machine"]["busy_neighbours"] == 2
    assert {row["workload"] for row in report["workloads"]} == {"W6", "W6b", "C"}
    assert neighbours_alive() == []


def test_busy_neighbours_die_with_a_benchmark_killed_outright(stack: ServiceProcesses) -> None:
    # A stack of the fixture's: killed outright, the benchmark could not stop one of its own.
    argv = dcodex_argv(
        "bench", "workloads", *TINY, "--url", stack.url, "--only", "W6", "--busy-neighbours", "1"
    )
    with subprocess.Popen(argv, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL) as run:
        try:
            busy = wait_for_neighbours(run, 1)
            run.kill()  # no `finally` of its own runs
            run.wait()
        finally:
            stop_process(run)
    deadline = time.monotonic() + 10
    while any(Path(f"/proc/{pid}").exists() for pid in busy) and time.monotonic() < deadline:
        time.sleep(0.05)
    assert neighbours_alive() == []
