"""Fixtures: a real nats-server with JetStream and the three services as processes.

Everything started here is stopped here, by PID.
"""

from __future__ import annotations

import asyncio
import os
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from collections.abc import AsyncIterator, Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
from prometheus_client.parser import text_string_to_metric_families

from dcodex.shared.client import DcodexClient
from dcodex.shared.service.nats_server import EmbeddedNats

SERVICE_NAMES = ("compiler", "runner", "cache")
# Fixtures that bring a bus with them: a test using any of them is marked `bus`.
BUS_FIXTURES = {"nats_url", "stack", "client"}


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    for item in items:
        if BUS_FIXTURES & set(getattr(item, "fixturenames", ())):
            item.add_marker(pytest.mark.bus)


# What needs root: sandboxes on slots of their own (`root`) and the services' default
# isolation (`strict`: a uid per sandbox slot and the slots' cgroups), and the daemons
# and guests of the container and VM tests.
NEEDS_ROOT = ("bus", "containers", "vm", "root")


def pytest_collection_finish(session: pytest.Session) -> None:
    """Stop at once, saying why, rather than fail test after test as a plain user."""
    if os.geteuid() == 0:
        return
    needing = [i for i in session.items if any(i.get_closest_marker(m) for m in NEEDS_ROOT)]
    if needing:
        pytest.exit(
            f"{len(needing)} of the selected tests need root: the services run every sandbox "
            "layer (`--isolation strict`: a uid per slot, the slots' cgroups), and the "
            "container and VM tests start dockerd and qemu. Run `make test` as root, or "
            'as this user only the unit subset: pytest -m "not bus and not vm and not '
            'containers and not root"',
            returncode=3,
        )


@pytest.fixture(autouse=True)
def _bus_only_when_marked(request: pytest.FixtureRequest, monkeypatch: pytest.MonkeyPatch) -> None:
    """A test not marked `bus` may not start a nats-server: keeps `-m "not bus"` honest."""
    if request.node.get_closest_marker("bus") is None:

        def refuse(*args: Any, **kwargs: Any) -> str:
            raise RuntimeError("this test starts a nats-server: mark it `bus`")

        monkeypatch.setattr(EmbeddedNats, "start", refuse)


def dcodex_argv(*args: str) -> list[str]:
    """The `dcodex` command, run by this test's Python."""
    return [sys.executable, "-m", "dcodex.shared.cli.main", *args]


def stop_process(process: subprocess.Popen[Any]) -> None:
    """SIGTERM by PID, then SIGKILL if it has not ended within 15 s; reaped either way."""
    if process.poll() is None:
        process.send_signal(signal.SIGTERM)
        try:
            process.wait(timeout=15)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()


@dataclass
class ServiceProcesses:
    """Services started as `dcodex service NAME` processes against one NATS URL."""

    url: str
    log_dir: Path
    extra_args: tuple[str, ...] = ()
    processes: dict[str, list[subprocess.Popen[bytes]]] = field(default_factory=dict)
    tenant: str | None = None  # of the `url`'s login, when it is a tenant's (docs/tenancy.md)
    # Each start's log, by pid: `name`-N.log, N counting the starts of `name` (a
    # replacement's log is a file of its own, not the dead one's).
    logs: dict[int, Path] = field(default_factory=dict)

    def start(self, name: str, *args: str) -> subprocess.Popen[bytes]:
        index = sum(1 for path in self.logs.values() if path.name.startswith(f"{name}-"))
        path = self.log_dir / f"{name}-{index}.log"
        log = path.open("wb")
        argv = dcodex_argv(
            "service", name, "--nats-url", self.url, "--metrics-port", "0", *self.extra_args, *args
        )
        process = subprocess.Popen(argv, stdout=log, stderr=subprocess.STDOUT)
        self.processes.setdefault(name, []).append(process)
        self.logs[process.pid] = path
        return process

    def stop(self, process: subprocess.Popen[bytes]) -> None:
        stop_process(process)

    def stop_all(self) -> None:
        for group in self.processes.values():
            for process in group:
                self.stop(process)
        self.processes.clear()

    def log(self, name: str, index: int = 0) -> str:
        """The log of `name`'s start number `index` (0 the first, 1 the one after...)."""
        return (self.log_dir / f"{name}-{index}.log").read_text(errors="replace")

    def wait_ready(self, names: tuple[str, ...] = SERVICE_NAMES, timeout: float = 30.0) -> None:
        """Until every named service answers `$SRV.PING`."""
        wanted = {f"dcodex-{name}" for name in names}
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            for group in self.processes.values():
                for process in group:
                    if process.poll() is not None:
                        raise RuntimeError(f"a service exited: {process.args!r}")
            # Others' instances of the same names may answer too: these processes
            # must also have said they started.
            if self._started(names) and wanted <= asyncio.run(_answering(self.url, self.tenant)):
                return
            time.sleep(0.1)
        raise TimeoutError(f"services {sorted(wanted)} did not answer within {timeout} s")

    def _started(self, names: tuple[str, ...]) -> bool:
        """Whether each process of `names` started here has logged `service_started`."""
        return all(
            "service_started" in self.logs[process.pid].read_text(errors="replace")
            for name in names
            for process in self.processes.get(name, [])
        )


async def _answering(url: str, tenant: str | None = None) -> set[str]:
    async with await DcodexClient.connect(url, tenant=tenant) as client:
        return {answer["name"] for answer in await client.ping(wait_s=0.3)}


@pytest.fixture(scope="session")
def nats_server() -> Iterator[EmbeddedNats]:
    """The session's broker, with its monitoring port (what the server itself sees)."""
    server = EmbeddedNats(extra_args=("-m", "-1"))
    server.start()
    yield server
    server.stop()


@pytest.fixture(scope="session")
def nats_url(nats_server: EmbeddedNats) -> str:
    return nats_server.url


@pytest.fixture(scope="session")
def stack(nats_url: str, tmp_path_factory: pytest.TempPathFactory) -> Iterator[ServiceProcesses]:
    """The three services, started once for the whole session."""
    services = ServiceProcesses(nats_url, tmp_path_factory.mktemp("service-logs"))
    try:
        for name in SERVICE_NAMES:
            services.start(name)
        # Under emulation (tests/test_vm_cgroup_v2.py) services take minutes to start.
        services.wait_ready(timeout=float(os.environ.get("DCODEX_TEST_READY_SECONDS", "30")))
        yield services
    finally:
        services.stop_all()


@pytest.fixture
async def client(stack: ServiceProcesses) -> AsyncIterator[DcodexClient]:
    async with await DcodexClient.connect(stack.url) as connected:
        yield connected


async def until(condition: Callable[[], bool], timeout: float) -> bool:
    """Whether `condition` holds within `timeout` seconds (looked at every 0.1 s)."""
    for _ in range(int(timeout * 10)):
        if condition():
            return True
        await asyncio.sleep(0.1)
    return condition()


def host_processes() -> dict[int, dict[str, str]]:
    """Every process on the host by pid: the fields of its /proc/PID/status (Name,
    State, PPid, Uid...), values stripped."""
    table = {}
    for status in Path("/proc").glob("[0-9]*/status"):
        try:
            lines = status.read_text().splitlines()
        except OSError:
            continue  # it ended while we looked
        fields = (line.split(":", 1) for line in lines if ":" in line)
        table[int(status.parent.name)] = {key: value.strip() for key, value in fields}
    return table


def pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    return True


async def wait_for_subject(url: str, subject: str, timeout: float = 30.0) -> None:
    """Until something answers on `subject` (a service has started), or TimeoutError."""
    async with await DcodexClient.connect(url) as client:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            try:
                await client.nc.request(subject, b"", timeout=1)
                return
            except Exception:
                await asyncio.sleep(0.1)
    raise TimeoutError(f"nothing answers on {subject}")


# A program that forks until the process limit refuses, then prints how many it got
# (the children sleep, so all of them count at once).
FORK_UNTIL_REFUSED = """
import os, time
forks = 0
try:
    while True:
        if os.fork() == 0:
            time.sleep(5)
            os._exit(0)
        forks += 1
except OSError:
    print(forks)
"""


def free_port() -> int:
    """A loopback port nobody listens on right now."""
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port: int = probe.getsockname()[1]
        return port


def scrape_text(port: int) -> str:
    """A service's /metrics page."""
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=5) as response:
        text: str = response.read().decode()
        return text


def metric(port: int, name: str, **labels: str) -> float:
    """The sum of the samples of `name` whose labels include `labels`."""
    return sum(
        sample.value
        for family in text_string_to_metric_families(scrape_text(port))
        for sample in family.samples
        if sample.name == name and labels.items() <= sample.labels.items()
    )
