"""Chaos on a 3-node NATS cluster: a stack whose nats-server is a cluster of three, and
the scenarios that stop one of its nodes under load (docs/reliability.md).

Each node runs JetStream on its own store, routes to the others on loopback ports and
serves its monitoring endpoint on loopback (who leads the meta group, who is connected).
The buckets are brought to 3 replicas once the services have created them, as the
dcodex-buckets Job does, and the services and clients are given all three URLs.

A node is stopped with SIGKILL: a node lost without a word, as a crashed machine or an
OOM-killed pod. Nothing is handed over; the other two must notice the silence and
elect new leaders, which is the costlier case: a nats-server stopped with SIGTERM
steps down from the leaderships it holds before it exits. The node is restarted on
the same ports and store, and catches up.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import random
import shutil
import signal
import socket
import subprocess
import time
import urllib.request
import uuid
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import nats
import nats.errors
import nats.js.errors
from nats.aio.client import Client as NATS

from dcodex.shared.client import DcodexClient
from dcodex.shared.errors import DcodexError
from dcodex.shared.service.chaos.stack import Stack
from dcodex.shared.service.nats_server import accepts_connections, nats_server_binary

NODES = 3
RESULTS_BUCKET = "dcodex-results"
RESULTS_STREAM = f"KV_{RESULTS_BUCKET}"
# What the services create at start (the cache's two buckets, the artifact store).
STREAMS = (RESULTS_STREAM, "KV_dcodex-inflight", "OBJ_dcodex-artifacts")
# A read the cache started during the election may fail only when nats-py's JetStream
# timeout (5 s) ends, after the cluster is whole again; the cache then tries its bucket
# again 1 s later (REOPEN_AFTER_S, services/cache/buckets.py). Past this, it serves hits.
CACHE_BACK_S = 6.5
NODE_DOWN_S = 5.0  # how long a stopped node stays down while the load goes on
SETTLE_S = 60.0  # the longest wait for an election or a catch-up before it is a failure
PORTS_FROM = 20000  # the nodes' ports are chosen above this, below the ephemeral range


def free_port() -> int:
    """A loopback port nobody uses right now (the cluster's routes need them known),
    below the kernel's ephemeral range: a port from that range can be taken, between
    this choice and the node's start, as the local end of some outgoing connection
    (the other nodes' routes among them), and the node would not start."""
    low = _ephemeral_low()
    for _ in range(200):
        port = random.randrange(PORTS_FROM, low)
        with socket.socket() as probe:
            try:
                probe.bind(("127.0.0.1", port))
            except OSError:
                continue
            return port
    raise RuntimeError(f"no free loopback port in {PORTS_FROM}..{low - 1}")


def _ephemeral_low() -> int:
    with contextlib.suppress(OSError, ValueError, IndexError):
        return int(Path("/proc/sys/net/ipv4/ip_local_port_range").read_text().split()[0])
    return 32768  # Linux's default


@dataclass
class NatsNode:
    """One nats-server of the cluster; restarted on the same ports and store."""

    name: str
    directory: Path
    port: int = field(default_factory=free_port)
    cluster_port: int = field(default_factory=free_port)
    http_port: int = field(default_factory=free_port)
    process: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        return f"nats://127.0.0.1:{self.port}"

    @property
    def alive(self) -> bool:
        return self.process is not None and self.process.poll() is None

    def start(self, routes: list[int]) -> None:
        self.directory.mkdir(parents=True, exist_ok=True)
        config = self.directory / "nats.conf"
        config.write_text(self._config(routes))
        with (self.directory / "nats-server.log").open("ab") as log:
            self.process = subprocess.Popen(
                [nats_server_binary(), "--config", str(config)],
                stdout=log,
                stderr=subprocess.STDOUT,
            )

    def _config(self, routes: list[int]) -> str:
        listed = ", ".join(f"nats://127.0.0.1:{port}" for port in routes)
        return "\n".join(
            [
                f"server_name: {self.name}",
                "host: 127.0.0.1",
                f"port: {self.port}",
                f"http: 127.0.0.1:{self.http_port}",
                f"jetstream: {{store_dir: {json.dumps(str(self.directory / 'js'))}}}",
                f"cluster: {{name: dcodex-chaos, host: 127.0.0.1, port: {self.cluster_port},"
                f" routes: [{listed}]}}",
                "",
            ]
        )

    def kill(self, signum: int = signal.SIGKILL) -> None:
        """Send `signum` and reap the process (its pid only)."""
        if self.process is None:
            return
        if self.process.poll() is None:
            self.process.send_signal(signum)
        try:
            self.process.wait(timeout=15)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait()

    def monitor(self, endpoint: str) -> dict[str, Any]:
        """A monitoring endpoint of this node (`jsz`, `connz`, …), as JSON."""
        url = f"http://127.0.0.1:{self.http_port}/{endpoint}"
        with urllib.request.urlopen(url, timeout=2) as answer:
            found: dict[str, Any] = json.load(answer)
            return found


@dataclass
class NatsCluster:
    directory: Path
    size: int = NODES
    nodes: list[NatsNode] = field(default_factory=list)

    @property
    def url(self) -> str:
        """Every node's URL, comma-separated: what the services and clients are given."""
        return ",".join(node.url for node in self.nodes)

    def start(self, timeout: float = 30.0) -> str:
        """Start every node on a fresh store; return once JetStream answers on each (a
        meta leader is elected): services that start earlier cannot make their buckets."""
        shutil.rmtree(self.directory, ignore_errors=True)  # a store of an earlier run
        self.nodes = [NatsNode(f"n{i}", self.directory / f"n{i}") for i in range(self.size)]
        try:
            for node in self.nodes:
                node.start(self.routes())
            for node in self.nodes:
                self._wait_listening(node, timeout)
            deadline = time.monotonic() + timeout
            while not all(self.leader_known(node) for node in self.nodes):
                if time.monotonic() > deadline:
                    raise TimeoutError(f"the NATS cluster elected no meta leader in {timeout} s")
                time.sleep(0.1)
        except BaseException:
            self.stop()  # the nodes that did start
            raise
        return self.url

    @staticmethod
    def leader_known(node: NatsNode) -> bool:
        """Whether `node`'s JetStream knows its meta leader (it can then create streams)."""
        with contextlib.suppress(OSError, ValueError):
            return bool(node.monitor("jsz").get("meta_cluster", {}).get("leader"))
        return False

    def routes(self) -> list[int]:
        return [node.cluster_port for node in self.nodes]

    def node(self, name: str) -> NatsNode:
        (found,) = [node for node in self.nodes if node.name == name]
        return found

    def restart(self, node: NatsNode, timeout: float = 30.0) -> None:
        node.start(self.routes())
        self._wait_listening(node, timeout)

    def _wait_listening(self, node: NatsNode, timeout: float) -> None:
        deadline = time.monotonic() + timeout
        while not accepts_connections(node.url):
            if not node.alive:
                log = (node.directory / "nats-server.log").read_text(errors="replace")
                raise RuntimeError(f"nats-server {node.name} exited at start:\n{log[-4000:]}")
            if time.monotonic() > deadline:
                raise TimeoutError(f"nats-server {node.name} did not start within {timeout} s")
            time.sleep(0.05)

    def stop(self) -> None:
        for node in self.nodes:
            if node.alive:
                assert node.process is not None
                node.process.send_signal(signal.SIGTERM)
        for node in self.nodes:
            node.kill(signal.SIGTERM)  # waits; SIGKILL after 15 s

    def meta_leader(self) -> str | None:
        for node in self.nodes:
            if node.alive:
                with contextlib.suppress(OSError, ValueError):
                    leader = node.monitor("jsz").get("meta_cluster", {}).get("leader")
                    if leader:
                        return str(leader)
        return None

    def clients_of(self, node: NatsNode) -> list[str]:
        """Names of the client connections `node` serves (the services say who they are)."""
        with contextlib.suppress(OSError, ValueError):
            connections = node.monitor("connz?limit=1024").get("connections") or []
            return sorted(str(c.get("name") or "?") for c in connections)
        return []


@dataclass(frozen=True)
class StreamPeers:
    leader: str | None
    replicas: dict[str, bool]  # the other peers: whether each is current

    @property
    def healthy(self) -> bool:
        return (
            self.leader is not None
            and len(self.replicas) == NODES - 1
            and all(self.replicas.values())
        )


async def stream_peers(nc: NATS, stream: str) -> StreamPeers | None:
    """`$JS.API.STREAM.INFO.<stream>`: its leader and replicas, or None if nobody answers."""
    try:
        info = await nc.jetstream(timeout=2).stream_info(stream)
    except (nats.errors.Error, nats.js.errors.Error, TimeoutError):
        return None
    if info.cluster is None:
        return StreamPeers(None, {})
    replicas = {str(peer.name): bool(peer.current) for peer in info.cluster.replicas or []}
    return StreamPeers(info.cluster.leader, replicas)


async def until_healthy(nc: NATS, streams: tuple[str, ...], timeout: float = SETTLE_S) -> float:
    """Until each stream has a leader and every replica is current; seconds it took."""
    started = time.monotonic()
    while True:
        found = [await stream_peers(nc, stream) for stream in streams]
        if all(peers is not None and peers.healthy for peers in found):
            return time.monotonic() - started
        if time.monotonic() - started > timeout:
            raise TimeoutError(f"streams {streams} not healthy within {timeout:g} s: {found}")
        await asyncio.sleep(0.1)


async def set_replicas(nc: NATS, replicas: int, timeout: float = SETTLE_S) -> None:
    """Every stream the services created gets `replicas` replicas (as deploy/nats/buckets.py
    does), once all of them exist; returns when every replica is current."""
    js = nc.jetstream(timeout=5)
    deadline = time.monotonic() + timeout
    for stream in STREAMS:
        while True:
            try:
                config = (await js.stream_info(stream)).config
                if config.num_replicas != replicas:
                    config.num_replicas = replicas
                    await js.update_stream(config)
                break
            except (nats.errors.Error, nats.js.errors.Error, TimeoutError):
                if time.monotonic() > deadline:
                    raise
                await asyncio.sleep(0.2)
    await until_healthy(nc, STREAMS, max(1.0, deadline - time.monotonic()))


@dataclass
class ClusterStack(Stack):
    """A `Stack` whose NATS is a 3-node cluster, with R3 buckets."""

    cluster: NatsCluster | None = None
    _replicated: bool = False

    @property
    def owns_nats(self) -> bool:
        return self.cluster is not None

    def start_nats(self) -> str:
        self.cluster = NatsCluster(self.directory / "nats")
        self.url = self.cluster.start()
        return self.url

    def stop_nats(self) -> None:
        if self.cluster is not None:
            self.cluster.stop()
            self.cluster = None

    async def wait_ready(self, counts: dict[str, int], timeout: float = 60.0) -> None:
        """The services answer; the first time, their buckets are then made R3."""
        await super().wait_ready(counts, timeout)
        if not self._replicated:
            nc = await nats.connect(self.url.split(","), connect_timeout=2)
            try:
                await set_replicas(nc, NODES)
            finally:
                await nc.close()
            self._replicated = True


# ------------------------------------------------------------------ the faults


@dataclass
class Probe:
    """A result cached before the fault, asked for again after it: still a hit."""

    request: dict[str, Any]
    stdout: str
    cache_key: str = ""


async def cache_one(client: DcodexClient) -> tuple[Probe | None, str]:
    token = uuid.uuid4().hex
    probe = Probe({"language": "python", "code": f"print({token!r})"}, token + "\n")
    try:
        first = await client.execute(probe.request)
        again = await client.execute(probe.request)
    except DcodexError as exc:
        return None, f"caching a result before the fault failed: {exc.code} {exc.message}"
    if first.stdout != probe.stdout or not again.cache_hit or not first.cache_key:
        return None, f"no cached result before the fault (hit: {again.cache_hit})"
    probe.cache_key = first.cache_key
    return probe, ""


async def in_bucket(nc: NATS, probe: Probe, when: str) -> str:
    """'' when the probe's result is in the results bucket; else what is wrong."""
    try:
        kv = await nc.jetstream(timeout=5).key_value(RESULTS_BUCKET)
        if (await kv.get(probe.cache_key)).value:
            return ""
        return f"{when}: the cached result is empty in {RESULTS_BUCKET}"
    except (nats.errors.Error, nats.js.errors.Error, TimeoutError) as exc:
        return f"{when}: the cached result is not in {RESULTS_BUCKET}: {exc!r}"


async def served_as_hit(client: DcodexClient, probe: Probe, when: str) -> str:
    """'' when the cache serves the probe's program from the bucket; else what is wrong."""
    try:
        result = await client.execute(probe.request)
    except DcodexError as exc:
        return f"{when}: the cached program got {exc.code} {exc.message}"
    if not result.cache_hit or result.stdout != probe.stdout:
        return f"{when}: the cached program was not a cache hit ({result.status})"
    return ""


async def stop_node(stack: Stack, leader: bool) -> str:
    """SIGKILL the results stream's leader (or a node that is not), under load; a new
    leader is elected (or the leader stays); restart the node after NODE_DOWN_S."""
    assert isinstance(stack, ClusterStack) and stack.cluster is not None
    cluster = stack.cluster
    notes: list[str] = []
    async with await DcodexClient.connect(stack.url, timeout=60) as client:
        nc = client.nc
        probe, wrong = await cache_one(client)
        before = await stream_peers(nc, RESULTS_STREAM)
        if before is None or before.leader is None:
            stack.problems.append(f"no leader of {RESULTS_STREAM} before the fault")
            return "no fault: the results stream had no leader"
        if leader:
            victim = cluster.node(before.leader)
        else:
            victim = next(n for n in cluster.nodes if n.name != before.leader)
        roles = [f"leader of {RESULTS_STREAM}"] if leader else ["a replica"]
        if cluster.meta_leader() == victim.name:
            roles.append("the meta leader")
        moved = [name for name in cluster.clients_of(victim) if name.startswith("dcodex-")]
        stopped = time.monotonic()
        await asyncio.to_thread(victim.kill, signal.SIGKILL)
        notes.append(
            f"SIGKILL nats node {victim.name} ({', '.join(roles)}; "
            f"{len(moved)} connections of ours moved)"
        )
        elected = await _until_leader(nc, other_than=victim.name if leader else None)
        if elected is None:
            stack.problems.append(f"no leader of {RESULTS_STREAM} within {SETTLE_S:g} s")
        elif leader:
            notes.append(
                f"{elected.leader} leads {RESULTS_STREAM} "
                f"{time.monotonic() - stopped:.1f} s after the stop"
            )
        elif elected.leader != before.leader:
            notes.append(f"the leader changed to {elected.leader} although it lived")
        if probe is not None and elected is not None:
            # Read from the bucket itself: the cache passes through while it cannot use
            # it (until about a second after the election), and would run it again.
            wrong = wrong or await in_bucket(nc, probe, "with the node down")
        await asyncio.sleep(max(0.0, NODE_DOWN_S - (time.monotonic() - stopped)))
        await asyncio.to_thread(cluster.restart, victim)
        restarted = time.monotonic()
        try:
            await until_healthy(nc, STREAMS)
            notes.append(f"restarted after {restarted - stopped:.1f} s, "
                         f"caught up {time.monotonic() - restarted:.1f} s later")  # fmt: skip
        except TimeoutError as exc:
            stack.problems.append(str(exc))
        if probe is not None:
            await asyncio.sleep(CACHE_BACK_S)
            wrong = wrong or await in_bucket(nc, probe, "after the restart")
            wrong = wrong or await served_as_hit(client, probe, "after the restart")
    if wrong:
        stack.problems.append(wrong)
    elif probe is not None:
        notes.append("a result cached before is in the bucket with the node down, a hit after")
    return "; ".join(notes)


async def _until_leader(nc: NATS, other_than: str | None) -> StreamPeers | None:
    deadline = time.monotonic() + SETTLE_S
    while time.monotonic() < deadline:
        peers = await stream_peers(nc, RESULTS_STREAM)
        if peers is not None and peers.leader is not None and peers.leader != other_than:
            return peers
        await asyncio.sleep(0.1)
    return None


async def node_stop(stack: Stack) -> str:
    return await stop_node(stack, leader=False)


async def leader_stop(stack: Stack) -> str:
    return await stop_node(stack, leader=True)


# The scenarios, for chaos/scenarios.py's table: name, summary, fault.
FAULTS = (
    ("cluster-node-stop", "SIGKILL of a node of a 3-node NATS cluster that does not lead "
     "the results bucket; restarted 5 s later", node_stop),
    ("cluster-leader-stop", "SIGKILL of the node leading the results bucket's stream "
     "(KV_dcodex-results); a new leader; restarted 5 s later", leader_stop),
)  # fmt: skip
# Two cache replicas: their leases (dcodex-inflight) live on the cluster too.
COUNTS = {"compiler": 1, "runner": 2, "cache": 2}
