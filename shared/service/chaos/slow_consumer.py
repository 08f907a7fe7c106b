"""`slow-consumer`: a subscriber that never reads a run's live output subject.

The stalled subscriber speaks the NATS protocol on a raw socket with a small receive
buffer: it subscribes to `dcodex.output.<id>` and then never reads (nats-py would: its
reader drains the socket whatever the application does, and its own pending limits
are the client's, not the server's). One run's output is capped at 256 KiB, and the
kernel buffers more than that on loopback, so it subscribes to one big run after
another until the server's writes to it block; past the server's `write_deadline` it
counts a slow consumer and closes that connection. The runs' requester, the runners
and every other client must not notice.
"""

from __future__ import annotations

import asyncio
import json
import socket
import statistics
import time
import urllib.request
from typing import Any
from urllib.parse import urlsplit

from dcodex.shared.bus.request import new_id
from dcodex.shared.client import DcodexClient
from dcodex.shared.contract import ExecutionResult
from dcodex.shared.errors import DcodexError
from dcodex.shared.service.chaos.stack import Stack
from dcodex.shared.subjects import DEFAULT_PREFIX, output_subject

# The server's default is 10 s: 2 s keeps the scenario short, and is still far above
# what a client that reads ever takes.
WRITE_DEADLINE = "2s"
LINES, WIDTH = 2000, 100  # 200,000 bytes of output (the output ceiling is 256 KiB)
RECEIVE_BUFFER = 4096
MAX_RUNS = 60  # 12 MB: far more than the kernel buffers on loopback
DETECTED_WITHIN_S = 20.0


def low_write_deadline(stack: Stack) -> None:
    """The scenario's `prepare`: the server's write deadline, and its monitoring port."""
    config = stack.directory / "nats-slow-consumer.conf"
    config.write_text(f'write_deadline: "{WRITE_DEADLINE}"\nhttp: "127.0.0.1:-1"\n')
    stack.nats_args = ("--config", str(config))


class StalledSubscriber:
    """A NATS connection subscribed to `subject` that reads nothing after subscribing."""

    def __init__(self, url: str) -> None:
        where = urlsplit(url)
        self.sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        # Before connecting: the window it advertises stays this small.
        self.sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, RECEIVE_BUFFER)
        self.sock.settimeout(5)
        try:
            self.sock.connect((where.hostname or "127.0.0.1", where.port or 4222))
            self._read_until(b"\r\n")  # INFO
            connect = {"verbose": False, "pedantic": False, "name": "dcodex-chaos-stalled"}
            self.sock.sendall(f"CONNECT {json.dumps(connect)}\r\nPING\r\n".encode())
            self._read_until(b"PONG\r\n")  # connected: from now on, nothing is read
        except BaseException:
            self.sock.close()
            raise
        self.subscriptions = 0

    def subscribe(self, subject: str) -> None:
        """Subscribe (writing only: the server handles it before our next request's events)."""
        self.subscriptions += 1
        self.sock.sendall(f"SUB {subject} {self.subscriptions}\r\n".encode())

    def _read_until(self, end: bytes) -> None:
        seen = b""
        while end not in seen:
            data = self.sock.recv(4096)
            if not data:
                raise ConnectionError(f"the server closed the connection before {end!r}")
            seen += data

    def closed_by_server(self) -> bool:
        """Whether the server has closed this connection (what it had sent is read first)."""
        self.sock.settimeout(2)
        try:
            while self.sock.recv(65536):
                pass
        except TimeoutError:
            return False  # still open: the server has not given up on it
        except OSError:
            return True  # reset
        return True  # end of stream

    def close(self) -> None:
        self.sock.close()


def varz(stack: Stack) -> dict[str, Any]:
    assert stack.nats is not None and stack.nats.monitoring_url
    with urllib.request.urlopen(f"{stack.nats.monitoring_url}/varz", timeout=5) as reply:
        data: dict[str, Any] = json.loads(reply.read())
    return data


def _request(execution_id: str) -> dict[str, Any]:
    code = f"for i in range({LINES}):\n    print('x' * {WIDTH - 1}, flush=True)\n"
    return {
        "language": "python",
        "code": code,
        "execution_id": execution_id,
        "limits": {"output_bytes": LINES * WIDTH + 4096},
        "cache": False,
    }


async def _live(
    client: DcodexClient, request: dict[str, Any]
) -> tuple[ExecutionResult | str, float]:
    """The result of a streamed run (or its error), and how long it took."""
    started = time.monotonic()
    try:
        async with client.live(request) as run:
            result: ExecutionResult | str = await run.wait()
    except DcodexError as exc:
        result = f"{exc.code} {exc.message}"
    return result, time.monotonic() - started


def _complete(result: ExecutionResult | str) -> bool:
    """The whole output, as the program printed it."""
    if isinstance(result, str):
        return False
    return result.status == "ok" and len(result.stdout) == LINES * WIDTH


def _said(result: ExecutionResult | str) -> str:
    if isinstance(result, str):
        return result
    return f"{result.status}, {len(result.stdout)} bytes"


async def stall_a_subscriber(stack: Stack) -> str:
    """The fault: big streamed runs with a stalled subscriber on their output subjects."""
    runners = len(stack.alive("runner"))
    server = varz(stack)
    before = int(server.get("slow_consumers", 0))
    clients_before = int(server.get("slow_consumer_stats", {}).get("clients", 0))
    watched: list[float] = []
    async with await DcodexClient.connect(stack.url, timeout=60) as client:
        _, alone_s = await _live(client, _request(new_id()))  # what it costs unwatched
        stalled = await asyncio.to_thread(StalledSubscriber, stack.url)
        try:
            while len(watched) < MAX_RUNS and not await _counted(stack, before):
                execution_id = new_id()
                try:
                    stalled.subscribe(output_subject(DEFAULT_PREFIX, execution_id))
                except OSError:
                    break  # cut since we looked: the server counts it at once
                result, seconds = await _live(client, _request(execution_id))
                watched.append(seconds)
                if not _complete(result):
                    stack.problems.append(f"slow-consumer: a requester got {_said(result)}")
            detected_s = await _detected(stack, before)
            closed = await asyncio.to_thread(stalled.closed_by_server)
        finally:
            stalled.close()
    stats = varz(stack).get("slow_consumer_stats", {})
    if detected_s is None:
        stack.problems.append("slow-consumer: the server never counted a slow consumer")
    elif int(stats.get("clients", 0)) - clients_before != 1:
        stack.problems.append(f"slow-consumer: connections cut as slow consumers: {stats}")
    if not closed:
        stack.problems.append("slow-consumer: the server kept the stalled connection")
    assert stack.nats is not None
    logged = "Slow Consumer Detected" in stack.nats.log_path.read_text(errors="replace")
    if not logged:
        stack.problems.append("slow-consumer: no 'Slow Consumer Detected' in the server's log")
    if len(stack.alive("runner")) != runners:
        stack.problems.append("slow-consumer: a runner died")
    return (
        f"{len(watched)} streamed runs of {LINES * WIDTH:,} bytes with a subscriber that never "
        f"reads: answered in {statistics.median(watched or [0]):.2f} s (median), "
        f"{max(watched or [0]):.2f} s at most ({alone_s:.2f} s without it); "
        + (
            f"the server cut that subscriber (write deadline {WRITE_DEADLINE}) after "
            f"{len(watched) * LINES * WIDTH / 2**20:.1f} MiB of output had been sent to it"
            if detected_s is not None
            else "the server never cut that subscriber"
        )
    )


async def _counted(stack: Stack, before: int) -> bool:
    return int((await asyncio.to_thread(varz, stack)).get("slow_consumers", 0)) > before


async def _detected(stack: Stack, before: int) -> float | None:
    """Seconds until the server counts one more slow consumer than `before` (None: never)."""
    started = time.monotonic()
    while time.monotonic() - started < DETECTED_WITHIN_S:
        if (await asyncio.to_thread(varz, stack)).get("slow_consumers", 0) > before:
            return time.monotonic() - started
        await asyncio.sleep(0.2)
    return None
