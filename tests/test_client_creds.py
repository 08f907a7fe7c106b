"""JWT logins (`--creds`, `creds=`) against a nats-server in operator mode.

The server trusts one operator and knows its account from a MEMORY resolver; every
user proves itself with a `.creds` file (its JWT and NKey seed) made by the test
issuer in tests/jwt_issuer.py. A stand-in service plays the cache, so that what the
client shows can be told apart: a DCodeX micro service (the services' own
`start_micro_service`) logged in as a user of the same account, answering
`dcodex.cache.stats` with counts of its own. The real services' creds logins are
tested in test_service_logins.py.
"""

from __future__ import annotations

import asyncio
import random
import subprocess
import threading
from collections.abc import Coroutine, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypeVar

import nats
import pytest

from dcodex.shared.client import DcodexClient, SyncDcodexClient
from dcodex.shared.contract import CacheStats
from dcodex.shared.errors import DcodexError
from dcodex.shared.service.micro import Call, Endpoint, RunningService, start_micro_service
from dcodex.shared.service.nats_server import EmbeddedNats
from dcodex.shared.version import version
from tests.jwt_issuer import OperatorSetup
from tests.test_cli import assert_no_traceback, dcodex, flat, json_documents, shown, user_env

pytestmark = pytest.mark.bus


T = TypeVar("T")
STAND_IN = "dcodex-credsprobe"
# All a DCodeX client needs: requests and input on dcodex.*, discovery on $SRV.*,
# replies in its inbox and live output on dcodex.output.*.
CLIENT_PUBLISH = ["dcodex.>", "$SRV.>"]
CLIENT_SUBSCRIBE = ["_INBOX.>", "dcodex.output.>"]


class StandInCache:
    """A micro service answering `dcodex.cache.stats`, on a loop in a thread of its own
    (so it answers while a test waits for a `dcodex` subprocess)."""

    def __init__(self, url: str, creds: Path, entries: int) -> None:
        self.loop = asyncio.new_event_loop()
        self.thread = threading.Thread(target=self.loop.run_forever, daemon=True)
        self.thread.start()
        self.entries = entries
        self.service: RunningService | None = None
        self.nc = self._run(nats.connect(url, user_credentials=str(creds)))
        self.service = self._run(self._start())

    async def _stats(self, call: Call) -> CacheStats:
        return CacheStats(entries=self.entries, bytes=0, hits=0, misses=0, coalesced=0)

    async def _start(self) -> RunningService:
        return await start_micro_service(
            self.nc,
            name=STAND_IN,
            version=version(),
            description="answers dcodex.cache.stats for the creds tests",
            endpoints=[Endpoint("cache_stats", "dcodex.cache.stats", self._stats)],
        )

    def _run(self, work: Coroutine[Any, Any, T]) -> T:
        return asyncio.run_coroutine_threadsafe(work, self.loop).result(timeout=10)

    def stop(self) -> None:
        if self.service is not None:
            self._run(self.service.stop(grace_seconds=1))
        self._run(self.nc.close())
        self.loop.call_soon_threadsafe(self.loop.stop)
        self.thread.join()
        self.loop.close()


@dataclass(frozen=True)
class OperatorServer:
    url: str
    creds: Path  # a client user of the trusted account, with only a client's permissions
    foreign_creds: Path  # a well-formed user of an account of another operator
    entries: int  # what the stand-in cache answers, so a reply proves it came from there


@pytest.fixture(scope="module")
def operator_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[OperatorServer]:
    directory = tmp_path_factory.mktemp("operator")
    setup = OperatorSetup.new()
    config = directory / "nats.conf"
    config.write_text(setup.server_config())
    client_creds = setup.write_creds(
        directory / "client.creds", publish=CLIENT_PUBLISH, subscribe=CLIENT_SUBSCRIBE
    )
    service_creds = setup.write_creds(directory / "service.creds")
    foreign = OperatorSetup.new().write_creds(directory / "foreign.creds")
    entries = random.randrange(1000, 10**6)
    with EmbeddedNats(extra_args=("--config", str(config))) as server:
        stand_in = StandInCache(server.url, service_creds, entries)
        try:
            yield OperatorServer(server.url, client_creds, foreign, entries)
        finally:
            stand_in.stop()


def assert_one_line_error(completed: subprocess.CompletedProcess[str], message: str) -> None:
    assert completed.returncode == 2, shown(completed)
    assert completed.stdout == ""
    assert len(completed.stderr.strip().splitlines()) == 1, shown(completed)
    assert message in flat(completed.stderr), shown(completed)
    assert_no_traceback(completed)


async def test_client_logs_in_with_a_creds_file(operator_server: OperatorServer) -> None:
    server = operator_server
    async with await DcodexClient.connect(server.url, creds=str(server.creds)) as client:
        stats = await client.cache_stats()
        assert stats.entries == server.entries, "answered by the stand-in, logged in by JWT too"
        (instance,) = [i for i in await client.services() if i.name == STAND_IN]
        assert instance.version == version()
        (endpoint,) = instance.endpoints
        assert endpoint.subject == "dcodex.cache.stats" and endpoint.num_requests >= 1


async def test_client_without_valid_creds_is_refused_clearly(
    operator_server: OperatorServer, tmp_path: Path
) -> None:
    url = operator_server.url
    junk = tmp_path / "junk.creds"
    junk.write_text("not a credentials file\n")
    cases = {
        None: f"the NATS server at {url} refused the credentials",
        str(operator_server.foreign_creds): f"the NATS server at {url} refused the credentials",
        str(junk): f"cannot connect to {url}: {junk} is not a NATS credentials file",
        str(tmp_path / "absent.creds"): f"no such file: {tmp_path / 'absent.creds'}",
    }
    for creds, message in cases.items():
        with pytest.raises(DcodexError) as refused:
            await DcodexClient.connect(url, creds=creds)
        assert refused.value.code == 503
        assert message in refused.value.message, (creds, refused.value.message)


def test_sync_client_logs_in_with_a_creds_file(operator_server: OperatorServer) -> None:
    server = operator_server
    with SyncDcodexClient.connect(server.url, creds=str(server.creds)) as client:
        assert client.cache_stats().entries == server.entries


def test_cli_pings_and_reads_stats_with_creds(operator_server: OperatorServer) -> None:
    server = operator_server
    ping = dcodex("bus", "-s", server.url, "--creds", str(server.creds), "ping", "--json")
    assert ping.returncode == 0, shown(ping)
    names = {document["name"] for document in json_documents(ping.stdout)}
    assert STAND_IN in names, shown(ping)

    env = user_env(DCODEX_NATS_URL=server.url, DCODEX_NATS_CREDS=str(server.creds))
    stats = dcodex("bus", "stats", "--json", env=env)
    assert stats.returncode == 0, shown(stats)
    (cache,) = [d["cache"] for d in json_documents(stats.stdout) if "cache" in d]
    assert cache["entries"] == server.entries


def test_cli_with_wrong_or_no_creds_says_so_in_one_line(
    operator_server: OperatorServer, tmp_path: Path
) -> None:
    url = operator_server.url
    refused = f"the NATS server at {url} refused the credentials"
    assert_one_line_error(dcodex("bus", "-s", url, "ping"), refused)
    foreign = str(operator_server.foreign_creds)
    assert_one_line_error(dcodex("bus", "-s", url, "--creds", foreign, "ping"), refused)
    junk = tmp_path / "junk.creds"
    junk.write_text("")
    assert_one_line_error(
        dcodex("bus", "-s", url, "--creds", str(junk), "ping"),
        f"{junk} is not a NATS credentials file",
    )
