"""A local rehearsal of the Kubernetes deployment: a 3-node NATS cluster with JetStream
(R3 buckets) and the roles of deploy/nats/values.yaml, two replicas of every service
spread over the nodes, and 200 executions from 8 concurrent clients."""

from __future__ import annotations

import asyncio
from collections.abc import Iterator

import nats
import pytest

from dcodex.shared.bus.discovery import ServiceInstance
from dcodex.shared.client import DcodexClient
from dcodex.shared.contract import ExecutionResult
from tests.conftest import ServiceProcesses
from tests.deploy_support import NatsServers, tenant_of
from tests.test_deploy_nats import create_buckets

pytestmark = pytest.mark.bus


NODES = 3
REPLICAS = 2
TENANT = tenant_of("client")
SERVICES = ("compiler", "runner", "cache")
CLIENTS = 8
PER_CLIENT = 25  # 200 executions in all
ENDPOINT = {"cache": "execute", "runner": "run", "compiler": "compile"}
STREAMS = ("KV_dcodex-results", "KV_dcodex-inflight", "OBJ_dcodex-artifacts")


@pytest.fixture(scope="module")
def cluster(tmp_path_factory: pytest.TempPathFactory) -> Iterator[NatsServers]:
    servers = NatsServers(tmp_path_factory.mktemp("cluster"), size=NODES)
    servers.start()
    services = ServiceProcesses(
        servers.url("client"), tmp_path_factory.mktemp("cluster-logs"), tenant=TENANT
    )
    try:
        # The buckets first, as the Job does; the cache must keep their 3 replicas.
        create_buckets(servers.url("setup", node=1), replicas=NODES)
        for replica in range(REPLICAS):
            for offset, name in enumerate(SERVICES):
                node = (replica + offset) % NODES
                services.start(name, "--nats-url", servers.url(name, node=node))
        asyncio.run(wait_for_instances(servers.url("client"), REPLICAS * len(SERVICES)))
        yield servers
    finally:
        services.stop_all()
        servers.stop()


async def wait_for_instances(url: str, count: int) -> None:
    async with await DcodexClient.connect(url, tenant=TENANT) as client:
        for _ in range(300):
            if len(await dcodex_instances(client)) >= count:
                return
        raise TimeoutError(f"fewer than {count} service instances answered")


async def dcodex_instances(client: DcodexClient) -> list[ServiceInstance]:
    found = await client.services(wait_s=0.3)
    return [s for s in found if s.name.startswith("dcodex-")]


def program(client: int, index: int) -> tuple[dict[str, object], str]:
    """The request and its expected stdout: unique, so each misses the cache; every
    fifth is C (a compile), and each client's last repeats its first (a cache hit)."""
    index = 0 if index == PER_CLIENT - 1 else index
    token = f"client{client}-run{index}"
    if index % 5 == 4:
        code = f'#include <stdio.h>\nint main(void){{puts("{token}");}}'
        return {"language": "c", "code": code}, token + "\n"
    return {"language": "python", "code": f"print({token!r})"}, token + "\n"


async def one_client(url: str, client: int) -> list[tuple[ExecutionResult, str]]:
    async with await DcodexClient.connect(url, timeout=90, tenant=TENANT) as connected:
        results = []
        for index in range(PER_CLIENT):
            request, expected = program(client, index)
            results.append((await connected.execute(request), expected))
        return results


async def test_two_replicas_of_each_service_share_200_executions(cluster: NatsServers) -> None:
    urls = [cluster.url("client", node=i % NODES) for i in range(CLIENTS)]
    per_client = await asyncio.gather(*(one_client(url, i) for i, url in enumerate(urls)))
    results = [pair for client in per_client for pair in client]
    assert len(results) == CLIENTS * PER_CLIENT == 200
    for result, expected in results:
        assert (result.status, result.stdout) == ("ok", expected), result.stderr
    assert sum(result.cache_hit for result, _ in results) >= CLIENTS  # each last one

    async with await DcodexClient.connect(cluster.url("client"), tenant=TENANT) as client:
        instances = await dcodex_instances(client)
    for name in SERVICES:
        replicas = [s for s in instances if s.name == f"dcodex-{name}"]
        assert len(replicas) == REPLICAS
        for replica in replicas:
            # On the plain subject or the tenant's (`execute-tenant`).
            served = sum(
                e.num_requests for e in replica.endpoints if e.name.startswith(ENDPOINT[name])
            )
            assert served > 0, f"{name} replica {replica.id} served nothing"
    assert "Violation" not in cluster.log()


async def test_the_buckets_keep_three_replicas_on_three_nodes(cluster: NatsServers) -> None:
    nc = await nats.connect(cluster.url("setup"))
    try:
        js = nc.jetstream()
        for stream in STREAMS:
            info = await js.stream_info(stream)
            assert info.config.num_replicas == NODES
            assert info.cluster is not None
            peers = {info.cluster.leader, *(peer.name for peer in info.cluster.replicas or [])}
            assert peers == {node.name for node in cluster.nodes}
    finally:
        await nc.close()
