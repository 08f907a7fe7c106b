"""`disk-full`: the filesystem under the JetStream store fills up under load.

The nats-server's store is a small tmpfs, mounted in a user and mount namespace of its
own: no host mount to undo, and it works for a plain user as it does for root. A holder
process keeps that namespace (and the store) alive across a nats-server restart, and
ends by itself when the chaos process does; nats-server runs inside it (`nsenter`).
The fault fills the tmpfs with a file, seen through `/proc/<nats-server pid>/root`.

What nats-server does on ENOSPC (2.15): the stream that failed a write logs "Critical
write error" and keeps that error. It stores nothing more, and sends no reply to a
publish (the publisher times out), even after space is freed, until the server
restarts. Reads go on working. So the recovery is: free the space, restart nats-server.
"""

from __future__ import annotations

import asyncio
import contextlib
import errno
import os
import signal
import subprocess
import time
import uuid
from collections import Counter
from pathlib import Path

from dcodex.shared.client import DcodexClient
from dcodex.shared.contract import ExecutionResult
from dcodex.shared.errors import DcodexError
from dcodex.shared.service.chaos.stack import Stack

MiB = 2**20
STORE_BYTES = 64 * MiB  # the filesystem under the store
# JetStream sizes its store at 75 % of the free space it sees at start: it is told more
# (as an operator who sized it for a bigger disk would), so the disk fills, not the quota.
CONFIG = "jetstream { max_file_store: 1GB }\n"
HOLD_S = 8.0  # how long the disk stays full while the load goes on
RECOVERY_S = 30.0
FILLER = "dcodex-chaos-filler"
TMPFS = "dcodex-chaos-store"  # the tmpfs's name in mountinfo (and in its holder's command)
# What the cache logs when a bucket write (or read) fails: services/cache/buckets.py.
UNAVAILABLE_EVENTS = ("results_bucket_unavailable", "inflight_bucket_unavailable")


class PrivateTmpfs:
    """A tmpfs at `path` that only the processes started with `prefix()` see."""

    def __init__(self, path: Path, size_bytes: int) -> None:
        self.path = path
        self.size_bytes = size_bytes
        self.holder: subprocess.Popen[bytes] | None = None

    def start(self, timeout: float = 10.0) -> None:
        self.path.mkdir(parents=True, exist_ok=True)
        # The holder mounts, then lives as long as the process that started it.
        script = (
            f'mount -t tmpfs -o size="$1" {TMPFS} "$2" || exit 1\n'
            'while kill -0 "$3" 2>/dev/null; do sleep 1; done\n'
        )
        argv = ["unshare", "--user", "--map-root-user", "--mount", "sh", "-c", script, "sh"]
        argv += [str(self.size_bytes), str(self.path), str(os.getpid())]
        self.holder = subprocess.Popen(argv, stderr=subprocess.PIPE)
        deadline = time.monotonic() + timeout
        while not self._mounted():
            if self.holder.poll() is not None or time.monotonic() > deadline:
                error = self.holder.stderr.read().decode() if self.holder.stderr else ""
                self.stop()
                raise RuntimeError(
                    f"could not mount a tmpfs in a namespace of its own ({error.strip()}): "
                    "disk-full needs user namespaces (unshare --user) or root"
                )
            time.sleep(0.05)

    def _mounted(self) -> bool:
        assert self.holder is not None
        try:
            mounts = Path(f"/proc/{self.holder.pid}/mountinfo").read_text()
        except OSError:
            return False
        mine = f" {self.path} "
        return any(mine in line and TMPFS in line for line in mounts.splitlines())

    def prefix(self) -> tuple[str, ...]:
        """The command that runs a program inside the namespace (where the tmpfs is)."""
        assert self.holder is not None
        pid = str(self.holder.pid)
        return ("nsenter", "--target", pid, "--user", "--mount", "--preserve-credentials", "--")

    def stop(self) -> None:
        if self.holder is None:
            return
        if self.holder.poll() is None:
            self.holder.send_signal(signal.SIGTERM)
        self.holder.wait()
        if self.holder.stderr is not None:
            self.holder.stderr.close()
        self.holder = None


def store_on_small_tmpfs(stack: Stack) -> None:
    """The scenario's `prepare`: nats-server's store on a 64 MiB tmpfs of its own."""
    tmpfs = PrivateTmpfs(stack.directory / "jetstream", STORE_BYTES)
    tmpfs.start()
    stack.cleanups.callback(tmpfs.stop)
    config = stack.directory / "nats-disk-full.conf"
    config.write_text(CONFIG)
    stack.nats_args = ("--config", str(config))
    stack.nats_prefix = tmpfs.prefix()


def store_view(stack: Stack) -> Path:
    """The store as nats-server sees it (inside its mount namespace)."""
    assert stack.nats is not None and stack.nats.process is not None
    return Path(f"/proc/{stack.nats.process.pid}/root") / stack.nats.store_dir.relative_to("/")


def fill(directory: Path) -> int:
    """Write a file in `directory` until the filesystem is full; the bytes written."""
    written = 0
    chunk = b"\0" * MiB
    with (directory / FILLER).open("wb", buffering=0) as file:
        while True:
            try:
                written += file.write(chunk) or 0
            except OSError as exc:
                if exc.errno != errno.ENOSPC:
                    raise
                return written


def count_lines(path: Path, needles: tuple[str, ...]) -> int:
    try:
        text = path.read_text(errors="replace")
    except OSError:
        return 0
    return sum(1 for line in text.splitlines() if any(n in line for n in needles))


async def fill_the_store(stack: Stack) -> str:
    """The fault: fill the store's filesystem, keep it full for HOLD_S under load, free
    it and restart nats-server; caching must work again, with what was stored before."""
    async with await DcodexClient.connect(stack.url, timeout=60) as client:
        before = await _cached_twice(client, "before")
    if before is None:
        stack.problems.append("disk-full: caching did not work before the disk filled")
    view = store_view(stack)
    filled = await asyncio.to_thread(fill, view)
    started = time.monotonic()
    async with await DcodexClient.connect(stack.url, timeout=60) as client:
        probe, probe_s = await _timed(client, _program("full"))
        compiled = await _compiled_on_full_disk(client)
    if not _answered(probe, "full\n", hit=False):
        stack.problems.append(f"disk-full: a fresh request on a full disk got {probe}")
    if compiled:
        stack.problems.append(f"disk-full: a new C program on a full disk: {compiled}")
    await asyncio.sleep(max(0.0, HOLD_S - (time.monotonic() - started)))
    assert stack.nats is not None
    enospc = count_lines(stack.nats.log_path, ("no space left on device",))
    caches = [s.log for s in stack.services if s.name == "cache"]
    logged = sum(count_lines(log, UNAVAILABLE_EVENTS) for log in caches)
    if not enospc:
        stack.problems.append("disk-full: the disk filled but nats-server failed no write")
    if not logged:
        stack.problems.append("disk-full: the cache logged none of its failed writes")
    (view / FILLER).unlink()
    stack.stop_nats()  # a stream that failed a write stays failed until the server restarts
    stack.start_nats()
    recovered = time.monotonic()
    await stack.wait_ready(Counter(s.name for s in stack.services if s.alive))
    async with await DcodexClient.connect(stack.url, timeout=60) as client:
        again = await _cached_twice(client, "after", RECOVERY_S)
        kept = (await _timed(client, before))[0] if before is not None else None
    if again is None:
        stack.problems.append(f"disk-full: caching did not work again within {RECOVERY_S:g} s")
    if kept is not None and not _answered(kept, "before\n", hit=True):
        stack.problems.append(f"disk-full: what was cached before the fill got {kept}")
    return (
        f"filled the store's {STORE_BYTES // MiB} MiB tmpfs ({filled // MiB} MiB more) for "
        f"{HOLD_S:g} s: nats-server failed {enospc} writes (ENOSPC), the cache logged "
        f"{logged} failed bucket calls; a fresh request on the full disk was answered in "
        f"{probe_s:.2f} s; after freeing and a restart, caching worked again "
        f"{time.monotonic() - recovered:.1f} s later"
    )


def _program(text: str) -> dict[str, object]:
    return {"language": "python", "code": f"print({text!r})  # {uuid.uuid4().hex}"}


async def _compiled_on_full_disk(client: DcodexClient) -> str:
    """A C program never compiled before, on the full disk: its binary cannot be stored,
    yet it runs (the binary reaches the runner in the compile's reply); "" when it did."""
    code = (
        f'#include <stdio.h>\nint main(void) {{ puts("built"); return 0; }} '
        f"/* {uuid.uuid4().hex} */\n"
    )
    try:
        result = await client.execute({"language": "c", "code": code})
    except DcodexError as exc:
        return f"{exc.code} {exc.message}"
    if result.status != "ok" or result.stdout != "built\n":
        return f"answered {result.status}: {result.stdout!r} {result.stderr[-200:]!r}"
    return ""


async def _timed(
    client: DcodexClient, request: dict[str, object]
) -> tuple[ExecutionResult | str, float]:
    """What `request` got (its result, or the error), and how long it took."""
    started = time.monotonic()
    try:
        got: ExecutionResult | str = await client.execute(request)
    except DcodexError as exc:
        got = f"{exc.code} {exc.message}"
    return got, time.monotonic() - started


def _answered(got: ExecutionResult | str, stdout: str, hit: bool) -> bool:
    return isinstance(got, ExecutionResult) and (got.stdout, got.cache_hit) == (stdout, hit)


async def _cached_twice(
    client: DcodexClient, text: str, within_s: float = 0.0
) -> dict[str, object] | None:
    """A fresh program sent twice, whose second answer is a cache hit (None if it never is)."""
    deadline = time.monotonic() + within_s
    while True:
        request = _program(text)
        with contextlib.suppress(DcodexError):  # tried again until the deadline
            first = await client.execute(request)
            second = await client.execute(request)
            if first.stdout == second.stdout == f"{text}\n" and second.cache_hit:
                return request
        if time.monotonic() >= deadline:
            return None
        await asyncio.sleep(1.0)
