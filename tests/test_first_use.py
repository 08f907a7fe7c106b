"""First use as a new user tries it: `dcodex up` in one terminal, `dcodex bus ...` in
another, options where the user puts them, attached runs, readable limits."""

from __future__ import annotations

import re
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from dcodex.shared.bus.connect import DEFAULT_PORT
from dcodex.shared.service.stack import port_is_free
from tests.conftest import ServiceProcesses, dcodex_argv, stop_process
from tests.test_cli import bus, dcodex, flat, shown, user_env

pytestmark = pytest.mark.bus


def test_connection_options_after_the_subcommand(stack: ServiceProcesses, tmp_path: Path) -> None:
    program = tmp_path / "hello.py"
    program.write_text("print('after the subcommand')\n")
    done = dcodex("bus", "run", "-f", str(program), "--server", stack.url, "--timeout", "30")
    assert done.returncode == 0, shown(done)
    assert "after the subcommand" in done.stdout
    nowhere = dcodex("bus", "--server", stack.url, "languages", "--server", "nats://127.0.0.1:1")
    assert nowhere.returncode == 2 and "nats://127.0.0.1:1" in flat(nowhere.stderr)


def test_languages_prints_bytes_in_human_units(stack: ServiceProcesses) -> None:
    done = bus(stack.url, "languages")
    assert done.returncode == 0, shown(done)
    assert "e+0" not in done.stdout
    assert re.search(r"memory_bytes[\s│]+\d+(\.\d+)? [KMG]iB[\s│]+\d+(\.\d+)? [KMG]iB", done.stdout)
    assert re.search(r"cpu_time_s[\s│]+[\d.]+ s", done.stdout)


def test_attach_has_a_wall_clock_for_people(stack: ServiceProcesses, tmp_path: Path) -> None:
    # Longer than the 2 s default wall clock: a person typing takes that long.
    program = tmp_path / "slow.py"
    program.write_text("import time\ntime.sleep(2.5)\nprint('still here')\n")
    done = subprocess.run(
        dcodex_argv("bus", "--server", stack.url, "run", "--attach", "-f", str(program)),
        input="",  # a pipe that ends at once: the program's stdin is closed
        capture_output=True,
        text=True,
        timeout=60,
        env=user_env(),
    )
    assert done.returncode == 0, shown(done)
    assert "still here" in done.stdout
    assert flat(done.stderr).startswith("ok"), shown(done)


def test_up_listens_on_4222_or_says_where_and_clients_find_it(tmp_path: Path) -> None:
    free_before = port_is_free(DEFAULT_PORT)
    env = {**user_env(), "XDG_STATE_HOME": str(tmp_path / "state")}
    up = subprocess.Popen(
        dcodex_argv("up", "--metrics-port", "0", "--data-dir", str(tmp_path / "js")),
        stderr=subprocess.PIPE,
        stdout=subprocess.DEVNULL,
        text=True,
        env=env,
    )
    try:
        assert up.stderr is not None
        lines: list[str] = []
        deadline = time.monotonic() + 90
        while time.monotonic() < deadline and not any("Stop with" in line for line in lines):
            lines.append(up.stderr.readline())
        said = flat("".join(lines))
        url = re.search(r"NATS at (nats://\S+)", said)
        assert url is not None, said
        if free_before:
            assert url.group(1) == f"nats://127.0.0.1:{DEFAULT_PORT}", said
        else:
            assert f"port {DEFAULT_PORT} is taken" in said, said
        assert (tmp_path / "state" / "dcodex" / "up.json").exists()
        # Another terminal: no --server, no DCODEX_NATS_URL.
        found = subprocess.run(
            [sys.executable, "-m", "dcodex.shared.cli.main", "bus", "ping"],
            capture_output=True,
            text=True,
            timeout=60,
            env=env,
        )
        assert found.returncode == 0, shown(found)
        assert "dcodex-runner" in found.stdout
    finally:
        up.send_signal(signal.SIGINT)
        try:
            up.wait(timeout=30)
        except subprocess.TimeoutExpired:
            stop_process(up)
    assert not (tmp_path / "state" / "dcodex" / "up.json").exists()
