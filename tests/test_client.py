"""The Python client: connection options, discovery and the synchronous wrapper."""

from __future__ import annotations

import dataclasses
import os
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import nkeys
import pytest

from dcodex.shared.bus.connect import ConnectOptions, open_connection
from dcodex.shared.client import DcodexClient, SyncDcodexClient
from dcodex.shared.errors import DcodexError
from dcodex.shared.service.nats_server import EmbeddedNats
from dcodex.shared.version import version
from tests.conftest import ServiceProcesses, free_port
from tests.test_cli import assert_no_traceback, dcodex, shown
from tests.tls_support import issue_tls_files

pytestmark = pytest.mark.bus


DCODEX_SERVICES = {"dcodex-cache", "dcodex-runner", "dcodex-compiler"}


# ------------------------------------------------------------------ options


def test_options_come_from_the_environment_and_arguments_win() -> None:
    environ = {
        "DCODEX_NATS_URL": "nats://deploy:4222",
        "DCODEX_NATS_USER": "ada",
        "DCODEX_NATS_PASSWORD": "from-env",
        "DCODEX_NATS_TOKEN": "",  # empty is unset
        "DCODEX_NATS_CREDS": "/etc/dcodex/user.creds",
    }
    options = ConnectOptions.from_env(environ, password="given", token=None)
    assert options.url == "nats://deploy:4222"
    assert (options.user, options.password, options.token) == ("ada", "given", None)
    assert options.nats_kwargs() == {
        "user": "ada",
        "password": "given",
        "user_credentials": "/etc/dcodex/user.creds",
    }
    assert ConnectOptions.from_env({}).url == "nats://127.0.0.1:4222"


async def test_a_missing_key_file_is_named(tmp_path: Path) -> None:
    absent = tmp_path / "absent.nk"
    with pytest.raises(DcodexError) as raised:
        await DcodexClient.connect("nats://127.0.0.1:1", nkey=str(absent))
    assert raised.value.code == 503
    assert f"no such file: {absent}" in raised.value.message


async def test_nobody_listening_says_how_to_start_one() -> None:
    with pytest.raises(DcodexError) as raised:
        await DcodexClient.connect("nats://127.0.0.1:1", connect_timeout_s=0.5)
    assert raised.value.message == (
        "no NATS server is reachable at nats://127.0.0.1:1: start one with `dcodex up`"
    )


async def test_a_url_may_name_several_servers_of_a_cluster(nats_url: str) -> None:
    # The first is down (a node of the cluster that is lost): the second is used.
    dead = f"nats://127.0.0.1:{free_port()}"
    options = ConnectOptions(url=f"{dead}, {nats_url}", connect_timeout_s=5)
    assert options.servers() == [dead, nats_url]
    nc = await open_connection(options)
    try:
        assert nc.is_connected
        assert nc.connected_url is not None and nc.connected_url.port == int(
            nats_url.split(":")[-1]
        )
    finally:
        await nc.close()


async def test_url_defaults_to_dcodex_nats_url(
    stack: ServiceProcesses, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("DCODEX_NATS_URL", stack.url)
    async with await DcodexClient.connect() as client:
        assert (await client.execute({"language": "py", "code": "print(2)"})).stdout == "2\n"


# ------------------------------------------------------------------ NKey login


@pytest.fixture(scope="module")
def nkey_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[str, Path]]:
    """A nats-server that admits one user NKey; yields its URL and the seed file."""
    directory = tmp_path_factory.mktemp("nkey")
    seed = nkeys.encode_seed(os.urandom(32), nkeys.PREFIX_BYTE_USER)
    public = nkeys.from_seed(bytearray(seed)).public_key.decode()
    seed_file = directory / "user.nk"
    seed_file.write_bytes(seed + b"\n")
    config = directory / "nats.conf"
    config.write_text(f'authorization {{ users = [ {{ nkey: "{public}" }} ] }}\n')
    with EmbeddedNats(extra_args=("--config", str(config))) as server:
        yield server.url, seed_file


async def test_client_logs_in_with_an_nkey_seed(nkey_server: tuple[str, Path]) -> None:
    url, seed_file = nkey_server
    async with await DcodexClient.connect(url, nkey=str(seed_file)) as client:
        # Logged in: a request goes out and finds that no DCodeX service runs there.
        with pytest.raises(DcodexError) as raised:
            await client.languages()
        assert raised.value.code == 503 and "dcodex.languages" in raised.value.message
    with pytest.raises(DcodexError) as refused:
        await DcodexClient.connect(url)
    assert "refused the credentials" in refused.value.message


def test_cli_logs_in_with_an_nkey_seed(nkey_server: tuple[str, Path]) -> None:
    url, seed_file = nkey_server
    completed = dcodex("bus", "-s", url, "--nkey", str(seed_file), "languages")
    assert completed.returncode == 2, shown(completed)
    # Past the login: the error is that no runner answers, not refused credentials.
    assert f"no DCodeX runner service is reachable at {url}" in completed.stderr, shown(completed)
    refused = dcodex("bus", "-s", url, "languages")
    assert "refused the credentials" in refused.stderr, shown(refused)
    assert_no_traceback(refused)


# ------------------------------------------------------------------ TLS


@dataclass(frozen=True)
class TlsFiles:
    ca: Path
    client_cert: Path
    client_key: Path

    def options(self) -> ConnectOptions:
        return ConnectOptions(
            tls_ca=str(self.ca), tls_cert=str(self.client_cert), tls_key=str(self.client_key)
        )


@dataclass(frozen=True)
class TlsServers:
    plain_tls: str  # TLS, any client
    mutual: str  # TLS, clients show a certificate from the CA
    files: TlsFiles


@pytest.fixture(scope="module")
def tls(tmp_path_factory: pytest.TempPathFactory) -> Iterator[TlsServers]:
    """Two nats-servers that speak only TLS, with certificates from a test CA."""
    directory = tmp_path_factory.mktemp("tls")
    files = issue_tls_files(directory, "client.dcodex.test")
    server_tls = ("--tls", "--tlscert", str(files["cert"]), "--tlskey", str(files["key"]))
    verify = ("--tlsverify", "--tlscacert", str(files["ca"]))
    with (
        EmbeddedNats(extra_args=server_tls) as plain_tls,
        EmbeddedNats(extra_args=server_tls + verify) as mutual,
    ):
        yield TlsServers(
            plain_tls.url, mutual.url, TlsFiles(files["ca"], files["ccert"], files["ckey"])
        )


async def test_client_verifies_the_server_with_a_ca_file(tls: TlsServers) -> None:
    for url in (tls.plain_tls, tls.mutual):
        options = dataclasses.replace(tls.files.options(), url=url)
        async with await DcodexClient.connect(options) as client:
            assert client.nc.is_connected
            with pytest.raises(DcodexError) as raised:
                await client.cache_stats()  # over TLS, to a server without DCodeX
            assert raised.value.code == 503
        with pytest.raises(DcodexError) as untrusted:
            await DcodexClient.connect(url)  # the system's CAs do not know the test CA
        assert f"TLS with the NATS server at {url} failed" in untrusted.value.message


async def test_a_server_that_verifies_clients_needs_a_client_certificate(
    tls: TlsServers,
) -> None:
    async with await DcodexClient.connect(tls.plain_tls, tls_ca=str(tls.files.ca)) as client:
        assert client.nc.is_connected
    with pytest.raises(DcodexError) as refused:
        await DcodexClient.connect(tls.mutual, tls_ca=str(tls.files.ca))
    assert refused.value.code == 503
    assert tls.mutual in refused.value.message


def test_cli_takes_tls_files(tls: TlsServers) -> None:
    files = tls.files
    completed = dcodex(
        "bus", "-s", tls.mutual,
        "--tls-ca", str(files.ca), "--tls-cert", str(files.client_cert),
        "--tls-key", str(files.client_key),
        "cache", "purge",
    )  # fmt: skip
    assert completed.returncode == 2, shown(completed)
    assert f"no DCodeX cache service is reachable at {tls.mutual}" in completed.stderr, shown(
        completed
    )
    untrusted = dcodex("bus", "-s", tls.plain_tls, "cache", "purge")
    assert "TLS with the NATS server" in untrusted.stderr, shown(untrusted)
    assert_no_traceback(untrusted)


# ------------------------------------------------------------------ discovery


async def test_services_report_version_uptime_and_endpoint_stats(client: DcodexClient) -> None:
    await client.execute({"language": "python", "code": f"print({uuid.uuid4().hex!r})"})
    instances = [i for i in await client.services() if i.name.startswith("dcodex-")]
    assert {i.name for i in instances} >= DCODEX_SERVICES
    for instance in instances:
        assert instance.version == version()
        uptime = instance.uptime_s()
        assert uptime is not None and uptime >= 0
        assert instance.endpoints, instance
    cache = next(i for i in instances if i.name == "dcodex-cache")
    execute = next(e for e in cache.endpoints if e.subject == "dcodex.execute")
    assert execute.num_requests >= 1
    only_runners = await client.services(name="dcodex-runner")
    assert only_runners and {i.name for i in only_runners} == {"dcodex-runner"}


# ------------------------------------------------------------------ the sync wrapper


def test_sync_client_does_what_the_async_one_does(stack: ServiceProcesses) -> None:
    code = f"print(input(), {uuid.uuid4().hex!r})"
    with SyncDcodexClient.connect(stack.url) as client:
        first = client.execute({"language": "python", "code": code, "stdin": "hi\n"})
        again = client.execute({"language": "python", "code": code, "stdin": "hi\n"})
        assert first.status == "ok" and first.stdout.startswith("hi ")
        assert (first.cache_hit, again.cache_hit) == (False, True)
        direct = client.run({"language": "python", "code": code, "stdin": "hi\n"})
        assert direct.stdout == first.stdout and direct.cache_hit is False
        compiled = client.compile("c", "int main(void) { return 0; }\n")
        assert compiled.status == "ok" and compiled.artifact is not None
        assert "python" in {language.id for language in client.languages().languages}
        assert client.cache_stats().entries >= 1
        assert client.purge(uuid.uuid4().hex * 2).purged == 0
        assert {answer["name"] for answer in client.ping()} >= DCODEX_SERVICES
        assert {instance.name for instance in client.services()} >= DCODEX_SERVICES
        with pytest.raises(DcodexError) as raised:
            client.execute({"language": "cobol", "code": ""})
        assert raised.value.code == 404


async def test_sync_client_works_where_an_event_loop_runs(stack: ServiceProcesses) -> None:
    # Called from async code (e.g. a notebook cell), it still answers: its loop is its own.
    with SyncDcodexClient.connect(stack.url) as client:
        assert client.execute({"language": "python", "code": "print(3)"}).stdout == "3\n"


def test_sync_client_raises_when_nothing_answers() -> None:
    with pytest.raises(DcodexError) as raised:
        SyncDcodexClient.connect("nats://127.0.0.1:1", connect_timeout_s=0.5)
    assert "no NATS server is reachable" in raised.value.message


def test_sync_client_refuses_calls_after_close(stack: ServiceProcesses) -> None:
    client = SyncDcodexClient.connect(stack.url)
    client.close()
    with pytest.raises(RuntimeError, match="closed"):
        client.languages()
