"""Faults injected for real (docs/reliability.md): a nats-server restart, SIGTERM and
kill -9 of a runner, a lease shorter than its run, and a tenant's requests (logged in
with the shipped NATS config) through a dead cache or runner and a lost reply. Each
test starts its own nats-server and services as processes, as deployed, and stops
them by PID."""

from __future__ import annotations

import asyncio
import contextlib
import json
import signal
import subprocess
import time
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from nats.aio.msg import Msg

from dcodex.shared.bus.watch import ask_status
from dcodex.shared.client import DcodexClient, SyncDcodexClient
from dcodex.shared.contract import ExecutionResult
from dcodex.shared.errors import UNAVAILABLE, DcodexError
from dcodex.shared.sandbox.leftovers import find_leftovers
from dcodex.shared.sandbox.workspace import staging_root
from dcodex.shared.service.chaos.stack import processes_with
from dcodex.shared.service.nats_server import EmbeddedNats
from tests.conftest import SERVICE_NAMES, ServiceProcesses, pid_alive, until
from tests.deploy_support import NatsServers, tenant_of
from tests.test_deploy_nats import create_buckets

pytestmark = pytest.mark.bus


@pytest.fixture
def server(tmp_path: Path) -> Iterator[EmbeddedNats]:
    nats = EmbeddedNats(store_dir=tmp_path / "jetstream")
    nats.start()
    try:
        yield nats
    finally:
        nats.stop()


@pytest.fixture
def services(server: EmbeddedNats, tmp_path: Path) -> Iterator[ServiceProcesses]:
    processes = ServiceProcesses(server.url, tmp_path)
    try:
        yield processes
    finally:
        processes.stop_all()


def sleeper(seconds: float, marker: str = "", wall_s: float = 20) -> dict[str, Any]:
    """A Python program that prints, sleeps, prints; `marker` shows in its command line."""
    code = f"import time\nprint('begun', flush=True)\ntime.sleep({seconds})\nprint('done')"
    return {
        "language": "python",
        "code": code,
        "args": [marker] if marker else [],
        "limits": {"wall_time_s": wall_s},
        "cache": False,
    }


# ------------------------------------------------------------------ nats-server restart


async def test_a_run_finishing_while_nats_is_down_is_answered(
    server: EmbeddedNats, services: ServiceProcesses, tmp_path: Path
) -> None:
    """The reply the runner sends when it reconnects may find nobody subscribed; the
    cache (and the client) fetch the result again by execution id instead of waiting
    out their timeouts, and identical requests after recovery are answered too."""
    for name in ("compiler", "runner", "cache"):
        services.start(name)
    await asyncio.to_thread(services.wait_ready)
    url, port = server.url, int(server.url.rsplit(":", 1)[1])
    async with await DcodexClient.connect(url, timeout=60) as client:
        request = sleeper(3) | {"cache": True, "code": sleeper(3)["code"] + f"  # {uuid.uuid4()}"}
        started = time.monotonic()
        running = asyncio.ensure_future(client.execute(request))
        await asyncio.sleep(1.5)  # the program has begun
        server.stop()
        await asyncio.sleep(4)  # it finishes while the server is down
        again = EmbeddedNats(store_dir=tmp_path / "jetstream", port=port)
        assert again.start() == url
        try:
            result = await running
            elapsed = time.monotonic() - started
            assert (result.status, result.stdout) == ("ok", "begun\ndone\n")
            assert elapsed < 30, f"answered after {elapsed:.1f} s: a timeout was waited out"
            # The same request after recovery: answered (from the cache or a new run).
            second = await asyncio.wait_for(client.execute(request), 30)
            assert (second.status, second.stdout) == ("ok", "begun\ndone\n")
        finally:
            again.stop()


# ------------------------------------------------------------------ SIGTERM of a runner


async def test_requests_arriving_at_sigterm_are_answered(services: ServiceProcesses) -> None:
    """Stopping drains the endpoints: requests the server routed to a runner before it
    stopped taking work are answered by it, none is dropped to wait for a timeout.

    Two runners; a stream of requests (`dcodex.languages`: cheap, and served by the
    same micro service as `dcodex.run`) goes on while one of them gets SIGTERM with
    runs under way; every request is answered, and so is every run.
    """
    stopping = services.start("runner", "--shutdown-grace-seconds", "30")
    services.start("runner")
    await asyncio.to_thread(services.wait_ready, ("runner",))
    async with await DcodexClient.connect(services.url, timeout=30) as client:
        runs = [asyncio.ensure_future(client.run(sleeper(2))) for _ in range(6)]
        await asyncio.sleep(1.0)
        answered = await flood(
            client, "dcodex.languages", 3000, lambda: stopping.send_signal(signal.SIGTERM)
        )
        results = await asyncio.gather(*runs, return_exceptions=True)
    assert answered == 3000, f"{3000 - answered} of 3000 requests were never answered"
    assert [getattr(r, "stdout", r) for r in results] == ["begun\ndone\n"] * len(runs)
    assert stopping.wait(timeout=30) == 0


async def flood(client: DcodexClient, subject: str, count: int, midway: Callable[[], None]) -> int:
    """Send `count` requests as fast as the server takes them, call `midway` a third
    of the way through; how many were answered (each once) within 20 s after."""
    inbox = client.nc.new_inbox()
    answered: set[str] = set()
    done = asyncio.Event()

    async def on_reply(msg: Msg) -> None:
        answered.add(msg.subject)
        if len(answered) == count:
            done.set()

    subscription = await client.nc.subscribe(f"{inbox}.*", cb=on_reply)
    try:
        for index in range(count):
            await client.nc.publish(subject, b"", reply=f"{inbox}.{index}")
            if index == count // 3:
                midway()
            if index % 25 == 0:
                await client.nc.flush()
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(done.wait(), 20)
    finally:
        await subscription.unsubscribe()
    return len(answered)


# ------------------------------------------------------------------ kill -9 of a runner


async def test_kill_9_of_a_runner_ends_its_programs_and_fails_fast(
    services: ServiceProcesses,
) -> None:
    """Its programs die with it (the helper's parent-death signal), the request gets
    a clear 503 within seconds, and the next runner removes its work directories."""
    for name in ("compiler", "runner", "cache"):
        services.start(name)
    await asyncio.to_thread(services.wait_ready)
    runner = services.processes["runner"][0]
    marker = f"dcodex-fault-{uuid.uuid4().hex[:12]}"
    forever = {
        "language": "python",
        "code": "import time\nprint('begun', flush=True)\nwhile True: time.sleep(1)",
        "args": [marker],
        "limits": {"wall_time_s": 30},
        "cache": False,
    }
    async with await DcodexClient.connect(services.url, timeout=60) as client:
        running = asyncio.ensure_future(client.execute(forever))
        assert await until(lambda: bool(processes_with(marker)), 20), "it never started"
        mine = [p for p in find_leftovers().directories if f"-{runner.pid}-" in p.name]
        assert mine == []  # its runner is alive: not a leftover
        started = time.monotonic()
        runner.kill()
        runner.wait()
        services.processes["runner"].remove(runner)
        with pytest.raises(DcodexError) as lost:
            await running
        assert lost.value.code == UNAVAILABLE
        assert time.monotonic() - started < 20, "the cache waited out a timeout"
    assert await until(lambda: not processes_with(marker), 5), "it outlived its runner"
    orphans = [p for p in find_leftovers().directories if f"-{runner.pid}-" in p.name]
    assert orphans, "no work directory was left to clean up (the test proves nothing)"
    # Its warm sandboxes' directories too (they wait for runs, so a kill always leaves some).
    assert any(path.name.startswith(f"dcodex-warm-{runner.pid}-") for path in orphans)
    if staging_root() is not None:  # staged there, and found there too
        assert any(path.parent == staging_root() for path in orphans), orphans
    # Its slots' cgroups (one per slot and controller: the runner runs with every layer).
    cgroups = [p for p in find_leftovers().cgroups if f"-{runner.pid}-" in p.name]
    assert cgroups, "its slots' cgroups were not found"
    services.start("runner")
    await asyncio.to_thread(services.wait_ready, ("runner",))
    assert all(not path.exists() for path in orphans)
    assert all(not path.exists() for path in cgroups)
    assert not pid_alive(runner.pid)


# ------------------------------------------------------------------ long runs, short leases


async def test_a_lease_shorter_than_its_run_is_renewed(services: ServiceProcesses) -> None:
    """Two cache replicas with 2 s leases and a 6 s run: the run happens once, and
    requests to both replicas share it."""
    services.start("compiler")
    services.start("runner")
    for _ in range(2):
        services.start("cache", "--cache-lease-seconds", "2")
    await asyncio.to_thread(services.wait_ready)
    request = sleeper(6) | {"cache": True, "code": sleeper(6)["code"] + f"  # {uuid.uuid4()}"}
    async with await DcodexClient.connect(services.url, timeout=60) as client:
        before = await run_requests(client)
        first = asyncio.ensure_future(client.execute(request))
        await asyncio.sleep(3)  # past one lease: only renewal keeps it
        later: list[asyncio.Future[ExecutionResult]] = []
        while len(later) < 12 and not await both_replicas_asked(client):
            later.append(asyncio.ensure_future(client.execute(request)))
            await asyncio.sleep(0.2)
        assert await both_replicas_asked(client), "the requests all went to one replica"
        results = await asyncio.gather(first, *later)
        assert {(r.status, r.stdout) for r in results} == {("ok", "begun\ndone\n")}
        assert await run_requests(client) - before == 1, "the program ran more than once"


async def run_requests(client: DcodexClient) -> int:
    runners = await client.services(name="dcodex-runner")
    return sum(e.num_requests for r in runners for e in r.endpoints if e.name == "run")


async def both_replicas_asked(client: DcodexClient) -> bool:
    caches = await client.services(name="dcodex-cache", wait_s=0.3)
    asked = [sum(e.num_requests for e in c.endpoints if e.name == "execute") for c in caches]
    return len(asked) == 2 and all(count >= 1 for count in asked)


# ------------------------------------------------------------------ kill -9 of a compiler

# Seconds to compile (5-7 s here) even warm: the test must see the compile under way,
# and the compile must end well within its 30 s limit (400 elements took 27-37 s).
SLOW_CPP = """#include <tuple>
#include <utility>
template <int N> struct S { int a[N % 7 + 1]; };
template <int... I> auto make(std::integer_sequence<int, I...>) {
    return std::make_tuple(S<I>{}...);
}
int main() {
    auto t = make(std::make_integer_sequence<int, 250>{});
    return std::get<5>(t).a[0] * 0;
}
"""


@pytest.mark.timeout(200)  # the phases below are bounded: 60 s to see it, 100 s to finish
async def test_a_compile_whose_compiler_dies_is_compiled_again(
    services: ServiceProcesses,
) -> None:
    """kill -9 of the compiler while it compiles: the runner sees within seconds that
    nobody has the compile any more and asks again (compiling runs no user program),
    so the run completes on the compiler that replaced it."""
    compiler = services.start("compiler")
    services.start("runner")
    await asyncio.to_thread(services.wait_ready, ("compiler", "runner"))
    execution_id = uuid.uuid4().hex
    request = {"language": "cpp", "code": SLOW_CPP, "execution_id": execution_id}
    async with await DcodexClient.connect(services.url, timeout=120) as client:
        running = asyncio.ensure_future(client.run(request))

        async def compiling() -> bool:
            status = await ask_status(client.nc, "dcodex.status.compile", execution_id, "t", 1)
            return status is not None and status.state == "running"

        deadline = time.monotonic() + 60  # each silent ask takes a second
        while not await compiling():
            assert time.monotonic() < deadline, (
                "the compile was never seen under way; runner's log:\n"
                + services.log("runner")[-6000:]
                + "\ncompiler's log:\n"
                + services.log("compiler")[-6000:]
            )
            await asyncio.sleep(0.1)
        compiler.kill()
        compiler.wait()
        services.processes["compiler"].remove(compiler)
        services.start("compiler")
        try:
            result = await asyncio.wait_for(running, 100)
        except TimeoutError:
            raise AssertionError(
                "no result in 100 s; runner's log:\n"
                + services.log("runner")[-6000:]
                + "\nthe new compiler's log:\n"
                + services.log("compiler", 1)[-6000:]
            ) from None
    assert (result.status, result.exit_code) == ("ok", 0), result.compile_output
    assert "compile_lost" in services.log("runner")


# ------------------------------------------------------------------ a slow consumer


async def test_a_slow_consumer_on_output_subjects_slows_nobody(
    services: ServiceProcesses,
) -> None:
    """A subscriber to every output subject that never reads its socket: the server
    buffers for it (and drops it in the end); streamed runs go on as usual."""
    for name in ("compiler", "runner", "cache"):
        services.start(name)
    await asyncio.to_thread(services.wait_ready)
    host, port = services.url.removeprefix("nats://").rsplit(":", 1)
    reader, writer = await asyncio.open_connection(host, int(port))
    await reader.readline()  # INFO
    writer.write(b'CONNECT {"verbose":false,"pedantic":false}\r\nSUB dcodex.output.> 1\r\nPING\r\n')
    await writer.drain()  # subscribed; from now on nothing is read
    loud = "import sys\nfor i in range(4000): sys.stdout.write('x' * 63 + '\\n')"
    request = {
        "language": "python",
        "code": loud,
        "limits": {"output_bytes": 256 * 1024},
        "cache": False,
    }
    try:
        async with await DcodexClient.connect(services.url, timeout=60) as client:
            results = []
            for _ in range(12):  # each within the client's deadline, or it raises
                async with client.live(request) as run:
                    results.append(await run.wait())
    finally:
        writer.close()
    assert {(r.status, len(r.stdout)) for r in results} == {("ok", 4000 * 64)}


# ------------------------------------------------------------------ a tenant's requests

TENANT_ROLE = "client"  # a tenant of deploy/nats/values.yaml


@dataclass
class SecuredStack:
    """The shipped NATS config in a real nats-server, each service logged in as its
    own role, processes started and stopped here by PID; clients log in as a tenant."""

    servers: NatsServers
    services: ServiceProcesses

    def start(self, name: str, *args: str) -> subprocess.Popen[bytes]:
        return self.services.start(name, "--nats-url", self.servers.url(name), *args)

    async def ready(self, names: tuple[str, ...] = SERVICE_NAMES) -> None:
        await asyncio.to_thread(self.services.wait_ready, names)

    def kill(self, process: subprocess.Popen[bytes]) -> None:
        """kill -9, by PID."""
        process.kill()
        process.wait()
        for group in self.services.processes.values():
            if process in group:
                group.remove(process)

    @property
    def tenant_url(self) -> str:
        return self.servers.url(TENANT_ROLE)

    @property
    def tenant(self) -> str:
        return tenant_of(TENANT_ROLE)


@pytest.fixture
def secured(tmp_path: Path) -> Iterator[SecuredStack]:
    servers = NatsServers(tmp_path / "nats")
    servers.start()
    tenant = tenant_of(TENANT_ROLE)
    services = ServiceProcesses(servers.url(TENANT_ROLE), tmp_path, tenant=tenant)
    try:
        create_buckets(servers.url("setup"), replicas=1)
        yield SecuredStack(servers, services)
    finally:
        services.stop_all()
        servers.stop()


def lost(error: DcodexError) -> bool:
    """The 503 of an execution nobody has any more (`dcodex.shared.bus.watch`)."""
    return error.code == UNAVAILABLE and "was lost" in error.message


@pytest.mark.parametrize("how", ["execute", "stream"])
async def test_kill_9_of_the_cache_replica_holding_a_tenants_request(
    secured: SecuredStack, how: str
) -> None:
    """The tenant's client watches its request on its own status subject: when the
    replica holding it dies it gets the "lost" 503 within seconds, not after its
    timeout, and the other replica serves the tenant's next request."""
    for name in SERVICE_NAMES:
        secured.start(name)
    await secured.ready()
    marker = f"dcodex-fault-{uuid.uuid4().hex[:12]}"
    request = sleeper(20, marker, wall_s=30)
    async with await DcodexClient.connect(
        secured.tenant_url, tenant=secured.tenant, timeout=60
    ) as client:
        if how == "stream":
            run = client.live(request)
            await run.start()
            running = asyncio.ensure_future(run.wait())
        else:
            running = asyncio.ensure_future(client.execute(request))
        assert await until(lambda: bool(processes_with(marker)), 20), "it never started"
        # Only now a second replica: the first one surely holds the request.
        holder = secured.services.processes["cache"][0]
        secured.start("cache")
        await secured.ready(("cache",))
        killed_at = time.monotonic()
        secured.kill(holder)
        with pytest.raises(DcodexError) as failed:
            await running
        waited = time.monotonic() - killed_at
        assert lost(failed.value), failed.value
        assert waited < 20, f"answered {waited:.1f} s after the kill: its timeout was waited out"
        after = await client.execute({"language": "python", "code": "print('after')"})
        assert (after.status, after.stdout) == ("ok", "after\n")
        if how == "stream":
            await run.close()


async def test_kill_9_of_the_runner_holding_a_tenants_direct_run(secured: SecuredStack) -> None:
    """A tenant's run on `dcodex.run.<tenant>` (no cache in between), from the blocking
    client: watched on `dcodex.status.run.<tenant>`, a dead runner is a 503 within
    seconds, and the runner that replaces it serves the tenant."""
    secured.start("compiler")
    runner = secured.start("runner")
    await secured.ready(("compiler", "runner"))
    marker = f"dcodex-fault-{uuid.uuid4().hex[:12]}"
    client = await asyncio.to_thread(
        SyncDcodexClient.connect, secured.tenant_url, tenant=secured.tenant, timeout=60
    )
    try:
        running = asyncio.ensure_future(
            asyncio.to_thread(client.run, sleeper(20, marker, wall_s=30))
        )
        assert await until(lambda: bool(processes_with(marker)), 20), "it never started"
        killed_at = time.monotonic()
        secured.kill(runner)
        with pytest.raises(DcodexError) as failed:
            await running
        waited = time.monotonic() - killed_at
        assert lost(failed.value), failed.value
        assert waited < 20, f"answered {waited:.1f} s after the kill: its timeout was waited out"
        secured.start("runner")
        await secured.ready(("runner",))
        after = await asyncio.to_thread(client.run, {"language": "python", "code": "print(2)"})
        assert (after.status, after.stdout) == ("ok", "2\n")
    finally:
        await asyncio.to_thread(client.close)
    assert await until(lambda: not processes_with(marker), 5), "it outlived its runner"


class CuttableProxy:
    """A loopback TCP relay in front of the NATS server. `cut()` closes the connections
    through it and refuses new ones until `restore()`: the client behind it is away
    (its subscriptions gone from the server) while the services go on."""

    def __init__(self, target_port: int) -> None:
        self.target_port = target_port
        self.open = True
        self._writers: set[asyncio.StreamWriter] = set()
        self._relays: set[asyncio.Task[Any]] = set()
        self._server: asyncio.Server | None = None

    async def start(self) -> int:
        self._server = await asyncio.start_server(self._accept, "127.0.0.1", 0)
        port: int = self._server.sockets[0].getsockname()[1]
        return port

    async def close(self) -> None:
        if self._server is not None:
            self._server.close()
        self.cut()
        for relay in self._relays:
            relay.cancel()
        await asyncio.gather(*self._relays, return_exceptions=True)
        if self._server is not None:
            await self._server.wait_closed()

    def cut(self) -> None:
        self.open = False
        for writer in list(self._writers):
            writer.close()
        self._writers.clear()

    def restore(self) -> None:
        self.open = True

    async def _accept(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        relay = asyncio.current_task()
        assert relay is not None
        self._relays.add(relay)
        try:
            if not self.open:
                return
            upstream_reader, upstream_writer = await asyncio.open_connection(
                "127.0.0.1", self.target_port
            )
            self._writers |= {writer, upstream_writer}
            await asyncio.gather(
                self._pipe(reader, upstream_writer),
                self._pipe(upstream_reader, writer),
                return_exceptions=True,
            )
        except asyncio.CancelledError:
            pass  # closed: ending quietly is the point
        finally:
            writer.close()
            self._relays.discard(relay)

    async def _pipe(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            while data := await reader.read(65536):
                writer.write(data)
                await writer.drain()
        finally:
            writer.close()
            self._writers.discard(writer)


def answered_in_log(log: str, execution_id: str) -> bool:
    """Whether a service's log has the `request` line of `execution_id` (written once
    its reply was sent)."""
    for line in log.splitlines():
        with contextlib.suppress(ValueError):
            entry = json.loads(line)
            if entry.get("event") == "request" and entry.get("execution_id") == execution_id:
                return True
    return False


async def test_a_tenants_reply_lost_on_the_way_is_fetched_again(secured: SecuredStack) -> None:
    """The cache answers while the tenant's connection is away: nobody receives that
    reply. Back, the client asks its status subject and gets the result from there,
    in seconds, instead of waiting out its timeout."""
    for name in SERVICE_NAMES:
        secured.start(name)
    await secured.ready()
    proxy = CuttableProxy(secured.servers.nodes[0].port)
    proxy_port = await proxy.start()
    url = secured.tenant_url.replace(f":{secured.servers.nodes[0].port}", f":{proxy_port}")
    marker = f"dcodex-fault-{uuid.uuid4().hex[:12]}"
    execution_id = uuid.uuid4().hex
    try:
        async with await DcodexClient.connect(url, tenant=secured.tenant, timeout=60) as client:
            request = sleeper(2, marker) | {"execution_id": execution_id}
            running = asyncio.ensure_future(client.execute(request))
            assert await until(lambda: bool(processes_with(marker)), 20), "it never started"
            proxy.cut()
            replied = await until(
                lambda: answered_in_log(secured.services.log("cache"), execution_id), 30
            )
            assert replied, "the cache never answered"
            assert not running.done()
            back_at = time.monotonic()
            proxy.restore()
            result = await running
            waited = time.monotonic() - back_at
    finally:
        await proxy.close()
    assert (result.status, result.stdout, result.execution_id) == (
        "ok",
        "begun\ndone\n",
        execution_id,
    )
    assert waited < 20, f"answered {waited:.1f} s after reconnecting: its timeout was waited out"
