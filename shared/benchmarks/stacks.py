"""The stack a benchmark measures: started here (one process, or one per service) or given.

`one-process` is `dcodex up`'s layout: all three services in one Python process.
`per-service` is the deployed one: `dcodex service NAME` each. Both talk to an embedded
nats-server started here, on loopback; everything started is stopped by PID.
"""

from __future__ import annotations

import asyncio
import contextlib
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import AsyncIterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, Literal

from dcodex.shared.client import DcodexClient
from dcodex.shared.service.nats_server import EmbeddedNats

StackMode = Literal["one-process", "per-service"]
STACK_MODES: tuple[StackMode, ...] = ("one-process", "per-service")
SERVICES = ("compiler", "runner", "cache")


@dataclass
class Stack:
    """A running stack: its URL and, when started here, its processes by name."""

    url: str
    mode: str
    processes: dict[str, subprocess.Popen[bytes]] = field(default_factory=dict)

    def rss_bytes(self) -> dict[str, int]:
        """The resident memory of each process started here, now."""
        return {name: _rss(process.pid) for name, process in self.processes.items()}


def _rss(pid: int) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) * 1024
    return 0


def _dcodex(*args: str) -> list[str]:
    return [sys.executable, "-m", "dcodex.shared.cli.main", *args]


@contextlib.asynccontextmanager
async def started_stack(
    mode: StackMode | None, url: str | None, service_args: Sequence[str]
) -> AsyncIterator[Stack]:
    """The stack at `url`, or one started in `mode` and stopped at the end."""
    if url is not None:
        await wait_ready(url, {})
        yield Stack(url, "given")
        return
    assert mode is not None
    server = EmbeddedNats()
    logs = tempfile.TemporaryDirectory(prefix="dcodex-bench-logs-")
    stack = Stack(server.start(), mode)
    server_process = server.process
    opened: list[IO[bytes]] = []
    try:
        common = ["--nats-url", stack.url, "--metrics-port", "0", *service_args]
        commands = (
            {"dcodex up (all three)": _dcodex("up", *common)}
            if mode == "one-process"
            else {name: _dcodex("service", name, *common) for name in SERVICES}
        )
        for name, argv in commands.items():
            stack.processes[name] = _launch(
                argv, Path(logs.name) / f"{name.split()[0]}.log", opened
            )
        await wait_ready(stack.url, stack.processes, Path(logs.name))
        if server_process is not None:
            stack.processes["nats-server"] = server_process
        yield stack
    finally:
        for name, process in stack.processes.items():
            if name != "nats-server":
                _stop(process)
        server.stop()
        for log in opened:
            log.close()
        logs.cleanup()


async def wait_ready(
    url: str,
    processes: dict[str, subprocess.Popen[bytes]],
    logs: Path | None = None,
    timeout: float = 60.0,
) -> None:
    """Until every service answers `$SRV.PING` and the runners list their languages."""
    wanted = {f"dcodex-{name}" for name in SERVICES}
    deadline = time.monotonic() + timeout
    async with await DcodexClient.connect(url, timeout=5.0) as client:
        while time.monotonic() < deadline:
            for name, process in processes.items():
                if process.poll() is not None:
                    text = _logs_text(logs) if logs else ""
                    raise RuntimeError(f"{name} exited while starting:\n{text[-3000:]}")
            answering = {answer["name"] for answer in await client.ping(wait_s=0.3)}
            if wanted <= answering:
                await client.languages()
                return
            await asyncio.sleep(0.2)
    raise TimeoutError(f"the stack at {url} was not ready within {timeout} s")


def _launch(argv: list[str], log_path: Path, opened: list[IO[bytes]]) -> subprocess.Popen[bytes]:
    log = log_path.open("wb")
    opened.append(log)
    return subprocess.Popen(argv, stdout=log, stderr=subprocess.STDOUT)


def _logs_text(logs: Path) -> str:
    return "".join(path.read_text(errors="replace") for path in logs.glob("*.log"))


def _stop(process: subprocess.Popen[bytes]) -> None:
    """SIGTERM by PID, SIGKILL after 15 s; reaped either way."""
    if process.poll() is None:
        process.send_signal(signal.SIGTERM)
        try:
            process.wait(timeout=15)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()
