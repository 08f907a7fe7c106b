"""`dcodex up`: the embedded stack starts, serves, and stops leaving nothing behind."""

from __future__ import annotations

import os
import re
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest

from dcodex.shared.service.nats_server import accepts_connections
from tests.conftest import dcodex_argv, free_port

pytestmark = pytest.mark.bus


CLIENT = textwrap.dedent(
    """
    import asyncio, os
    from dcodex.shared.client import DcodexClient

    async def main():
        async with await DcodexClient.connect(os.environ["DCODEX_NATS_URL"]) as client:
            result = await client.execute({"language": "c", "code": "int main(void) { return 0; }"})
            again = await client.execute({"language": "py", "code": "print('from up')"})
            print(result.status, again.stdout.strip())

    asyncio.run(main())
    """
)


def processes_mentioning(text: str) -> list[int]:
    """PIDs of live processes whose command line contains `text`."""
    found = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit() or int(entry.name) == os.getpid():
            continue
        try:
            cmdline = (entry / "cmdline").read_bytes().replace(b"\0", b" ").decode()
        except OSError:
            continue
        if text in cmdline:
            found.append(int(entry.name))
    return found


def up(*arguments: str) -> subprocess.CompletedProcess[str]:
    """`dcodex up ARGUMENTS` to its end, its output captured."""
    return subprocess.run(
        dcodex_argv("up", *arguments), capture_output=True, text=True, timeout=120
    )


def test_up_runs_a_command_against_the_stack_and_stops(tmp_path: Path) -> None:
    data_dir = tmp_path / "jetstream"
    completed = up(
        "--metrics-port", "0", "--data-dir", str(data_dir), "--", sys.executable, "-c", CLIENT
    )
    assert completed.returncode == 0, completed.stderr
    assert completed.stdout.strip() == "ok from up"
    # `best` isolation, and it says what it got: on this root host, every layer.
    isolation = re.search(r"isolation: (.*)", completed.stderr)
    assert isolation is not None, completed.stderr
    assert {"uid", "network", "pid", "mount", "tree_kill"} <= set(isolation.group(1).split())
    url = re.search(r"NATS at (nats://\S+)", completed.stderr)
    assert url is not None, completed.stderr
    assert not accepts_connections(url.group(1)), "the embedded nats-server must be stopped"
    assert processes_mentioning(str(data_dir)) == []
    assert (data_dir / "jetstream").is_dir(), "JetStream kept its data where it was told"


def test_up_exits_with_the_commands_exit_code() -> None:
    completed = up("--metrics-port", "0", "--", sys.executable, "-c", "raise SystemExit(3)")
    assert completed.returncode == 3


@pytest.mark.parametrize("signum", [signal.SIGTERM, signal.SIGINT], ids=["SIGTERM", "Ctrl-C"])
def test_a_signal_stops_everything(tmp_path: Path, signum: signal.Signals) -> None:
    data_dir = tmp_path / "jetstream"
    process = subprocess.Popen(
        dcodex_argv("up", "--metrics-port", "0", "--data-dir", str(data_dir)),
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        assert process.stderr is not None
        banner = ""
        deadline = time.monotonic() + 60
        while "Stop with Ctrl-C" not in banner and time.monotonic() < deadline:
            banner += process.stderr.readline()
        url = re.search(r"NATS at (nats://\S+)", banner)
        assert url is not None, banner
        assert accepts_connections(url.group(1))
        assert len(processes_mentioning(str(data_dir))) == 2  # dcodex up and nats-server
        process.send_signal(signum)
        assert process.wait(timeout=30) == 0
        assert not accepts_connections(url.group(1))
        assert processes_mentioning(str(data_dir)) == []
    finally:
        if process.poll() is None:
            process.kill()
            process.wait()


def test_a_busy_metrics_port_is_a_clear_error_and_leaves_nothing(tmp_path: Path) -> None:
    import socket

    data_dir = tmp_path / "jetstream"
    with socket.socket() as taken:
        taken.bind(("0.0.0.0", 0))
        taken.listen()
        port = taken.getsockname()[1]
        completed = up("--metrics-port", str(port), "--data-dir", str(data_dir), "--", "true")
    assert completed.returncode == 1
    assert f"cannot serve metrics on port {port}" in completed.stderr
    assert "Traceback" not in completed.stderr
    assert processes_mentioning(str(data_dir)) == []


SCRAPE = textwrap.dedent(
    """
    import sys, urllib.request
    for port in sys.argv[1:]:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=5) as page:
            names = {line.split("_")[1] for line in page.read().decode().splitlines()
                     if line.startswith("dcodex_")}
        print(port, " ".join(sorted(names)))
    """
)


def test_a_metrics_port_given_to_up_moves_the_defaults_in_their_order(tmp_path: Path) -> None:
    """The defaults are cache, runner, compiler on 9101-9103; `--metrics-port P` puts
    them on P, P+1, P+2 in that order (what docs/configuration.md promises)."""
    port = free_port()
    ports = [str(port + offset) for offset in range(3)]
    data_dir = str(tmp_path / "jetstream")
    completed = up(
        "--metrics-port",
        str(port),
        "--data-dir",
        data_dir,
        "--",
        sys.executable,
        "-c",
        SCRAPE,
        *ports,
    )
    assert completed.returncode == 0, completed.stderr
    families = dict(line.split(" ", 1) for line in completed.stdout.splitlines())
    # Each service's own metric families (dcodex_cache_…, dcodex_sandbox_…, dcodex_compile_…).
    owner = {"cache": str(port), "sandbox": str(port + 1), "compile": str(port + 2)}
    for family, where in owner.items():
        assert [p for p, names in families.items() if family in names.split()] == [where]
