"""deploy/nats/values.yaml's users, loaded into a real nats-server.

Every service logs in as its own role and the whole system works (no permission
violation in the server's log); then each role is refused what it must not do, and
allowed the neighbouring things it must do, as the server itself answers.
"""

from __future__ import annotations

import asyncio
import os
import subprocess
import sys
from collections.abc import AsyncIterator, Iterator
from contextlib import contextmanager

import nats
import nats.errors
import pytest
from nats.aio.client import Client as NATS
from nats.aio.msg import Msg

from dcodex.shared.client import DcodexClient
from dcodex.shared.errors import DcodexError
from tests.conftest import ServiceProcesses
from tests.deploy_support import DEPLOY, NatsServers, tenant_of

pytestmark = pytest.mark.bus


SERVICES = ("compiler", "runner", "cache")
# No role may publish here: its refusal marks the end of a check.
SENTINEL = "dcodex.sentinel"
C_PROGRAM = '#include <stdio.h>\nint main(void){char s[64]; if(scanf("%63s",s)==1) puts(s);}'


@contextmanager
def secured_stack(
    tmp_path_factory: pytest.TempPathFactory, tenant_role: str
) -> Iterator[NatsServers]:
    """A nats-server with the roles, the buckets made by the setup role, and each
    service logged in as its own role; readiness is checked as the tenant `tenant_role`."""
    servers = NatsServers(tmp_path_factory.mktemp("secured-nats"))
    servers.start()
    services = ServiceProcesses(
        servers.url(tenant_role),
        tmp_path_factory.mktemp("secured-logs"),
        tenant=tenant_of(tenant_role),
    )
    try:
        create_buckets(servers.url("setup"), replicas=1)
        for name in SERVICES:
            services.start(name, "--nats-url", servers.url(name))
        services.wait_ready()
        yield servers
    finally:
        services.stop_all()
        servers.stop()


@pytest.fixture(scope="module")
def secured(tmp_path_factory: pytest.TempPathFactory) -> Iterator[NatsServers]:
    with secured_stack(tmp_path_factory, "client") as servers:
        yield servers


def create_buckets(url: str, replicas: int) -> str:
    env = {**os.environ, "DCODEX_NATS_URL": url}
    script = DEPLOY / "nats" / "buckets.py"
    done = subprocess.run(
        [sys.executable, str(script), "--replicas", str(replicas)],
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert done.returncode == 0, done.stderr
    return done.stdout


@pytest.fixture
async def as_client(secured: NatsServers) -> AsyncIterator[DcodexClient]:
    tenant = tenant_of("client")
    async with await DcodexClient.connect(
        secured.url("client"), timeout=60, tenant=tenant
    ) as client:
        yield client


async def test_every_role_does_its_job(secured: NatsServers, as_client: DcodexClient) -> None:
    log_before = len(secured.log())
    # A compiled run: compiler writes the artifact, runner reads it, cache stores it.
    request = {"language": "c", "code": C_PROGRAM, "stdin": "roles\n"}
    first = await as_client.execute(request)
    assert (first.status, first.stdout, first.cache_hit) == ("ok", "roles\n", False)
    assert (await as_client.execute(request)).cache_hit
    # Live events published by the runner, and stdin sent by the client.
    live = as_client.interactive({"language": "python", "code": "print(input()[::-1])"})
    async with live:
        await live.send("olleh\n")
        await live.close_stdin()
        assert (await live.wait()).stdout == "hello\n"
    # A cached run replayed as live events by the cache.
    replayed = [event.type async for event in as_client.stream(request)]
    assert replayed[-1] == "result"
    # Discovery and statistics gathered across replicas.
    assert {s.name for s in await as_client.services()} >= {f"dcodex-{n}" for n in SERVICES}
    stats = await as_client.cache_stats()
    assert stats.hits >= 1 and stats.replicas == 1
    async with await DcodexClient.connect(secured.url("admin"), tenant=tenant_of("admin")) as admin:
        assert (await admin.purge()).purged >= 1
    assert "Violation" not in secured.log()[log_before:]


class Refusals:
    """A connection as one role that records the server's permission errors."""

    def __init__(self) -> None:
        self.errors: list[str] = []
        self.nc: NATS | None = None
        self._sentinel_refused = asyncio.Event()

    async def connect(self, url: str) -> Refusals:
        async def on_error(exc: Exception) -> None:
            self.errors.append(str(exc))
            if f'"{SENTINEL}"' in str(exc).lower():
                self._sentinel_refused.set()

        self.nc = await nats.connect(url, error_cb=on_error, allow_reconnect=False)
        return self

    async def refused(self, operation: str, subject: str) -> bool:
        """Whether the server refuses `operation` ("pub" or "sub") on `subject`.

        The server answers a client's commands in order, so once the refusal of a
        publish no role may make (the sentinel) has come, any refusal of the
        operation before it has come too.
        """
        assert self.nc is not None
        before = len(self.errors)
        self._sentinel_refused.clear()
        if operation == "pub":
            await self.nc.publish(subject, b"{}")
        else:
            await self.nc.subscribe(subject, queue="q")
        await self.nc.publish(SENTINEL, b"")
        await asyncio.wait_for(self._sentinel_refused.wait(), timeout=10)
        refusals = [e.lower() for e in self.errors[before:] if "permissions violation" in e.lower()]
        return any(f'"{subject.lower()}"' in e for e in refusals)


# role, operation, subject, allowed (the tenant of `client` is `client`, of `admin`
# `admin`; tests/test_tenancy.py has them attack each other)
RULES = [
    ("client", "pub", "dcodex.execute.client", True),
    ("client", "pub", "dcodex.run.client", True),
    ("client", "pub", "dcodex.input.client.abc", True),
    ("client", "sub", "dcodex.output.client.abc", True),
    ("client", "sub", "_INBOX_client.abc", True),
    ("client", "pub", "dcodex.execute", False),
    ("client", "pub", "dcodex.run", False),
    ("client", "pub", "dcodex.execute.admin", False),
    ("client", "pub", "dcodex.input.abc", False),
    ("client", "pub", "dcodex.input.admin.abc", False),
    ("client", "sub", "dcodex.output.abc", False),
    ("client", "sub", "dcodex.output.admin.abc", False),
    ("client", "sub", "dcodex.output.*", False),
    ("client", "sub", "dcodex.output.>", False),
    ("client", "sub", "_INBOX.>", False),
    ("client", "sub", "_INBOX_admin.>", False),
    ("client", "pub", "dcodex.output.client.abc", False),
    # Judge mode has no tenant subjects yet (docs/tenancy.md): no tenant may ask.
    ("client", "pub", "dcodex.judge", False),
    ("client", "pub", "dcodex.judge.run", False),
    ("client", "pub", "dcodex.output.abc", False),
    ("client", "sub", "dcodex.run", False),
    ("client", "sub", "dcodex.execute", False),
    ("client", "sub", "dcodex.input.abc", False),
    ("client", "pub", "dcodex.cache.purge", False),
    ("client", "pub", "$KV.dcodex-results.somekey", False),
    ("client", "pub", "$O.dcodex-artifacts.C.x", False),
    ("client", "pub", "$JS.API.STREAM.DELETE.KV_dcodex-results", False),
    ("admin", "pub", "dcodex.cache.purge", True),
    ("admin", "pub", "dcodex.execute.admin", True),
    ("admin", "sub", "dcodex.output.admin.abc", True),
    ("admin", "sub", "_INBOX.>", False),
    ("admin", "sub", "dcodex.output.client.abc", False),
    ("admin", "pub", "dcodex.output.abc", False),
    ("cache", "pub", "$KV.dcodex-results.somekey", True),
    ("cache", "pub", "dcodex.output.abc", True),
    ("cache", "pub", "dcodex.output.client.abc", True),
    ("cache", "sub", "dcodex.execute.client", True),
    ("cache", "pub", "dcodex.run.client", True),
    ("cache", "sub", "dcodex.run", False),
    ("cache", "pub", "dcodex.compile", False),
    ("cache", "pub", "$O.dcodex-artifacts.C.x", False),
    ("cache", "pub", "$JS.API.STREAM.DELETE.KV_dcodex-results", False),
    ("runner", "sub", "dcodex.run", True),
    ("runner", "pub", "dcodex.output.abc", True),
    ("runner", "sub", "dcodex.run.client", True),
    ("runner", "sub", "dcodex.judge.run", True),
    ("cache", "sub", "dcodex.judge", True),
    ("cache", "pub", "dcodex.judge.run", True),
    ("runner", "sub", "dcodex.input.client.abc", True),
    ("runner", "pub", "dcodex.output.client.abc", True),
    ("runner", "pub", "$O.dcodex-artifacts.C.x", False),
    ("runner", "pub", "$KV.dcodex-results.somekey", False),
    ("runner", "sub", "dcodex.execute", False),
    ("runner", "pub", "dcodex.run", False),
    ("compiler", "pub", "$O.dcodex-artifacts.C.x", True),
    ("compiler", "pub", "dcodex.output.abc", False),
    ("compiler", "sub", "dcodex.run", False),
    ("compiler", "pub", "dcodex.run", False),
    ("compiler", "pub", "$JS.API.STREAM.DELETE.OBJ_dcodex-artifacts", False),
    ("setup", "pub", "$JS.API.STREAM.UPDATE.KV_dcodex-results", True),
    ("setup", "pub", "dcodex.execute", False),
    ("setup", "sub", "dcodex.output.abc", False),
    ("setup", "pub", "$KV.dcodex-results.somekey", False),
]


@pytest.mark.parametrize(
    ("role", "operation", "subject", "allowed"),
    RULES,
    ids=[f"{r}-{o}-{s}-{'allowed' if a else 'refused'}" for r, o, s, a in RULES],
)
async def test_each_role_is_refused_what_it_must_not_do(
    secured: NatsServers, role: str, operation: str, subject: str, allowed: bool
) -> None:
    connection = await Refusals().connect(secured.url(role))
    try:
        assert await connection.refused(operation, subject) is not allowed
    finally:
        assert connection.nc is not None
        await connection.nc.close()


async def test_a_wrong_password_is_refused(secured: NatsServers) -> None:
    url = secured.url("client").replace(secured.passwords["client"], "wrong")
    with pytest.raises(DcodexError, match="refused the credentials"):
        await DcodexClient.connect(url, connect_timeout_s=2)


async def test_a_client_cannot_answer_for_the_runner(secured: NatsServers) -> None:
    """An impostor subscribed to dcodex.run gets nothing; the real runner answers."""
    impostor = await Refusals().connect(secured.url("client"))
    assert impostor.nc is not None
    heard: list[bytes] = []

    async def steal(msg: Msg) -> None:
        heard.append(msg.data)
        await msg.respond(b'{"status":"ok","stdout":"forged"}')

    await impostor.nc.subscribe("dcodex.run", cb=steal)
    await impostor.nc.flush()
    try:
        url, tenant = secured.url("client"), tenant_of("client")
        async with await DcodexClient.connect(url, timeout=60, tenant=tenant) as client:
            for _ in range(4):
                result = await client.run({"language": "python", "code": "print('real')"})
                assert result.stdout == "real\n"
        assert heard == []
    finally:
        await impostor.nc.close()
