"""The stack a chaos scenario runs against: nats-server and services as separate
processes, as deployed, that the scenario can kill, stop, restart and measure.

Every process is started and stopped by PID; logs go to files in the stack's directory
(the runners' request lines are how duplicated executions are counted).
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import json
import os
import signal
import subprocess
import sys
import time
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from dcodex.shared.client import DcodexClient
from dcodex.shared.service.nats_server import EmbeddedNats


@dataclass
class ServiceProcess:
    name: str
    index: int
    process: subprocess.Popen[bytes]
    log: Path

    @property
    def pid(self) -> int:
        return self.process.pid

    @property
    def alive(self) -> bool:
        return self.process.poll() is None


@dataclass
class Stack:
    """nats-server (unless given a URL) and `dcodex service NAME` processes."""

    directory: Path
    url: str = ""
    service_args: dict[str, tuple[str, ...]] = field(default_factory=dict)
    nats_args: tuple[str, ...] = ()  # more nats-server arguments (a config file)
    nats_prefix: tuple[str, ...] = ()  # a command that runs nats-server (in a namespace)
    # Undone by stop_all, after the processes: what a scenario set up around the stack.
    cleanups: contextlib.ExitStack = field(default_factory=contextlib.ExitStack)
    # What a scenario's fault found wrong (beside the requests' outcomes).
    problems: list[str] = field(default_factory=list)
    nats: EmbeddedNats | None = None
    services: list[ServiceProcess] = field(default_factory=list)
    _port: int = 0

    @property
    def owns_nats(self) -> bool:
        """Whether this stack started the NATS it runs on (and so may fault it)."""
        return self.nats is not None

    def start_nats(self) -> str:
        self.nats = EmbeddedNats(
            store_dir=self.directory / "jetstream",
            port=self._port or -1,
            extra_args=self.nats_args,
            prefix=self.nats_prefix,
        )
        self.url = self.nats.start()
        self._port = int(self.url.rsplit(":", 1)[1])
        return self.url

    def stop_nats(self) -> None:
        if self.nats is not None:
            self.nats.stop()
            self.nats = None

    def start(self, name: str) -> ServiceProcess:
        index = sum(1 for s in self.services if s.name == name)
        log = self.directory / f"{name}-{index}.log"
        argv = [
            sys.executable, "-m", "dcodex.shared.cli.main", "service", name,
            "--nats-url", self.url, "--metrics-port", "0",
            "--log-format", "json", "--log-level", "info",
            *self.service_args.get(name, ()),
        ]  # fmt: skip
        with log.open("wb") as out:
            process = subprocess.Popen(argv, stdout=out, stderr=subprocess.STDOUT)
        service = ServiceProcess(name, index, process, log)
        self.services.append(service)
        return service

    def alive(self, name: str) -> list[ServiceProcess]:
        return [s for s in self.services if s.name == name and s.alive]

    async def wait_ready(self, counts: dict[str, int], timeout: float = 60.0) -> None:
        """Until `counts[name]` instances of each service answer `$SRV.PING`."""
        deadline = time.monotonic() + timeout
        answers: Counter[str] = Counter()
        async with await DcodexClient.connect(self.url, timeout=5) as client:
            while time.monotonic() < deadline:
                answers = Counter(a["name"] for a in await client.ping(wait_s=0.3))
                if all(answers[f"dcodex-{n}"] >= c for n, c in counts.items()):
                    return
                await asyncio.sleep(0.2)
        raise TimeoutError(
            f"services {counts} were not all up within {timeout:g} s "
            f"(answering: {dict(answers)}){self._log_tails()}"
        )

    def _log_tails(self, lines: int = 15) -> str:
        """The last lines of each service's log: why one that should answer does not."""
        tails = []
        for service in self.services:
            state = "running" if service.alive else f"exited {service.process.returncode}"
            with contextlib.suppress(OSError):
                text = service.log.read_text(errors="replace").splitlines()[-lines:]
                tails.append(f"\n--- {service.name}-{service.index} ({state}):\n" + "\n".join(text))
        return "".join(tails)

    def kill(self, service: ServiceProcess, signum: int = signal.SIGKILL) -> None:
        if service.alive:
            service.process.send_signal(signum)

    def stop_all(self, grace_s: float = 20.0) -> None:
        for service in reversed(self.services):
            if service.alive:
                service.process.send_signal(signal.SIGTERM)
        for service in self.services:
            try:
                service.process.wait(timeout=grace_s)
            except subprocess.TimeoutExpired:
                service.process.kill()
                service.process.wait()
        self.stop_nats()
        self.cleanups.close()


# ------------------------------------------------------------------ what the host sees


def rss_bytes(pid: int) -> int:
    with contextlib.suppress(OSError):
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) * 1024
    return 0


def open_fds(pid: int) -> int:
    """Open fds of `pid`, but for the pipes (and other shared kernel objects) one of its
    live descendants holds too: those are a child's (a warm sandbox's stdin and output),
    there for as long as it lives. A runner's warm pool refills only when the host's
    CPUs have time to spare, so on a busy host the count of its sandboxes, and of their
    pipes, differs from one moment to the next without anything leaking."""
    own = _fd_targets(pid)
    if not own:
        return 0
    shared: set[str] = set()
    for descendant in _descendants(pid):
        shared |= set(_fd_targets(descendant))
    return sum(1 for target in own if target not in shared or not target.endswith("]"))


def _fd_targets(pid: int) -> list[str]:
    """What each open fd of `pid` is (`pipe:[inode]`, `socket:[inode]`, a path); [] for
    a process that is gone or not ours to look into."""
    try:
        fds = os.listdir(f"/proc/{pid}/fd")
    except OSError:
        return []
    targets = []
    for fd in fds:
        with contextlib.suppress(OSError):  # closed meanwhile
            targets.append(os.readlink(f"/proc/{pid}/fd/{fd}"))
    return targets


def _descendants(pid: int) -> list[int]:
    children: dict[int, list[int]] = {}
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        with contextlib.suppress(OSError, IndexError, ValueError):
            with open(f"/proc/{entry}/stat") as file:
                # The parent is the 2nd field after the command, which is in parentheses.
                parent = int(file.read().rsplit(")", 1)[1].split()[1])
            children.setdefault(parent, []).append(int(entry))
    found, queue = [], [pid]
    while queue:
        for child in children.get(queue.pop(), []):
            found.append(child)
            queue.append(child)
    return found


RESTING_S = 0.5  # a warm pool's refill (fork, pipes) is over well within this
RESTING_LIMIT_S = 5.0


async def resting_fds(pid: int) -> int:
    """Open fds of `pid` once the count has held still for RESTING_S.

    A runner's warm pools refill after each run: a sandbox's pipes close and the next
    one's open, so an instant's count can be a few short of the resting one. Counting
    at rest makes the growth between two counts a leak, not the refill's timing."""
    deadline = time.monotonic() + RESTING_LIMIT_S
    count, since = open_fds(pid), time.monotonic()
    while time.monotonic() < deadline and time.monotonic() - since < RESTING_S:
        await asyncio.sleep(0.05)
        now = open_fds(pid)
        if now != count:
            count, since = now, time.monotonic()
    return count


def processes_with(marker: str) -> list[int]:
    """Pids of the processes whose command line holds `marker` (the chaos programs')."""
    found = []
    for entry in os.listdir("/proc"):
        if not entry.isdigit() or int(entry) == os.getpid():
            continue
        try:
            with open(f"/proc/{entry}/cmdline", "rb") as file:
                if marker.encode() in file.read():
                    found.append(int(entry))
        except OSError:
            continue
    return found


def runs_by_program(logs: list[Path], by: str = "cache_key") -> Counter[str]:
    """How many times each program ran to an answer, from the runners' request lines
    (keyed by cache key, or by execution id for runs that bypass the cache; `by`
    "execution_id": how many times each request ran)."""
    runs: Counter[str] = Counter()
    for log in logs:
        with contextlib.suppress(OSError), log.open(errors="replace") as lines:
            for line in lines:
                if '"endpoint": "run"' not in line and '"endpoint":"run"' not in line:
                    continue
                with contextlib.suppress(ValueError):
                    fields = json.loads(line)
                    if fields.get("event") == "request" and fields.get("code") == 200:
                        key = fields.get(by) or fields.get("execution_id")
                        if key:
                            runs[str(key)] += 1
    return runs


def _unstored_lines(log: Path) -> list[dict[str, Any]]:
    """The cache's lines for results it could not put in its bucket."""
    found = []
    with contextlib.suppress(OSError), log.open(errors="replace") as lines:
        for line in lines:
            if "result_not_stored" in line:
                with contextlib.suppress(ValueError):
                    fields = json.loads(line)
                    if fields.get("event") == "result_not_stored":
                        found.append(fields)
    return found


def _request_lines(log: Path, endpoint: str) -> list[dict[str, Any]]:
    """The request summary lines a service logged for `endpoint` (JSON logs)."""
    found = []
    with contextlib.suppress(OSError), log.open(errors="replace") as lines:
        for line in lines:
            if f'"endpoint": "{endpoint}"' not in line and f'"endpoint":"{endpoint}"' not in line:
                continue
            with contextlib.suppress(ValueError):
                fields = json.loads(line)
                if fields.get("event") == "request":
                    found.append(fields)
    return found


def duplicated_runs(runner_logs: list[Path], cache_logs: list[Path]) -> tuple[int, int, int]:
    """Programs run again, from the runners' request lines by cache key: (duplicated,
    uncached, ahead). A run again is *uncached*, not duplicated, when the cache said it
    could not use its buckets for it: its lookup passed through (`passthrough`), it
    could not take a lease to share another replica's run (`lease: unavailable`), or the
    run before could not be stored (its `result_not_stored` line, logged after the
    reply), as during a leader election of a bucket's stream. A run the cache sent ahead
    of its lookup and then left unused (`run_ahead: unused`, docs/cache.md) is counted
    apart, as *ahead*: by design. The same request (execution id) run twice is always
    duplicated."""
    passed, unstored, unused = set(), set(), set()
    for log in cache_logs:
        for fields in _request_lines(log, "execute"):
            if fields.get("passthrough") or fields.get("lease") == "unavailable":
                passed.add(fields.get("execution_id"))
            if fields.get("run_ahead") == "unused":
                unused.add(str(fields.get("execution_id")))
        unstored |= {fields.get("execution_id") for fields in _unstored_lines(log)}
    runs: dict[str, list[tuple[str, str]]] = {}
    for log in runner_logs:
        for fields in _request_lines(log, "run"):
            key = fields.get("cache_key") or fields.get("execution_id")
            if fields.get("code") == 200 and key:
                run = (str(fields.get("timestamp")), str(fields.get("execution_id")))
                runs.setdefault(str(key), []).append(run)
    duplicated = uncached = ahead = 0
    for all_runs in runs.values():
        key_runs = sorted(run for run in all_runs if run[1] not in unused)
        ahead += len(all_runs) - len(key_runs)
        for (_, before), (_, again) in itertools.pairwise(key_runs):
            if again != before and (again in passed or before in unstored):
                uncached += 1
            else:
                duplicated += 1
    return duplicated, uncached, ahead
