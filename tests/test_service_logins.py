"""The services log in to NATS every way a client can: one connect path for both.

Each case starts a real nats-server that admits only one kind of login, then the three
services (in this process, through `dcodex up`'s own `start_services`) with that login
in their settings, and runs a program through a client that logs in the same way.
"""

from __future__ import annotations

import os
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import nkeys
import pytest

from dcodex.shared.client import DcodexClient
from dcodex.shared.errors import DcodexError
from dcodex.shared.service.config import Settings
from dcodex.shared.service.nats_server import EmbeddedNats
from dcodex.shared.service.stack import installed_services, start_services, stop_services
from tests.jwt_issuer import OperatorSetup
from tests.tls_support import issue_tls_files

pytestmark = pytest.mark.bus


# A login: (nats-server arguments, the Settings fields of that login) for a directory.
Login = Callable[[Path], tuple[tuple[str, ...], dict[str, Any]]]


def user_and_password(directory: Path) -> tuple[tuple[str, ...], dict[str, Any]]:
    return ("--user", "svc", "--pass", "s3cret"), {"nats_user": "svc", "nats_password": "s3cret"}


def token(directory: Path) -> tuple[tuple[str, ...], dict[str, Any]]:
    return ("--auth", "t0ken-for-services"), {"nats_token": "t0ken-for-services"}


def nkey(directory: Path) -> tuple[tuple[str, ...], dict[str, Any]]:
    seed = nkeys.encode_seed(os.urandom(32), nkeys.PREFIX_BYTE_USER)
    public = nkeys.from_seed(bytearray(seed)).public_key.decode()
    (directory / "user.nk").write_bytes(seed + b"\n")
    config = directory / "nats.conf"
    config.write_text(f'authorization {{ users = [ {{ nkey: "{public}" }} ] }}\n')
    return ("--config", str(config)), {"nats_nkey": str(directory / "user.nk")}


def creds(directory: Path) -> tuple[tuple[str, ...], dict[str, Any]]:
    setup = OperatorSetup.new()
    config = directory / "nats.conf"
    config.write_text(setup.server_config())
    path = setup.write_creds(directory / "service.creds")
    return ("--config", str(config)), {"nats_creds": str(path)}


def mutual_tls(directory: Path) -> tuple[tuple[str, ...], dict[str, Any]]:
    files = issue_tls_files(directory, "service.dcodex.test")
    server = ("--tls", "--tlscert", str(files["cert"]), "--tlskey", str(files["key"]))
    verify = ("--tlsverify", "--tlscacert", str(files["ca"]))
    login = {
        "nats_tls_ca": str(files["ca"]),
        "nats_tls_cert": str(files["ccert"]),
        "nats_tls_key": str(files["ckey"]),
    }
    return server + verify, login


CLIENT_OPTION = {
    "nats_user": "user",
    "nats_password": "password",
    "nats_token": "token",
    "nats_nkey": "nkey",
    "nats_creds": "creds",
    "nats_tls_ca": "tls_ca",
    "nats_tls_cert": "tls_cert",
    "nats_tls_key": "tls_key",
}


@asynccontextmanager
async def services_logged_in(url: str, login: dict[str, Any]) -> AsyncIterator[None]:
    settings = Settings(**{"nats_url": url, "isolation": "best", **login})
    services = await start_services(settings, installed_services(), {})
    try:
        yield
    finally:
        await stop_services(services, grace_seconds=2)


@pytest.mark.parametrize("login", [user_and_password, token, nkey, creds, mutual_tls])
async def test_services_log_in_like_clients(login: Login, tmp_path: Path) -> None:
    server_args, fields = login(tmp_path)
    with EmbeddedNats(extra_args=server_args) as server:
        # Without the login the server refuses a service, so the login below is what works.
        with pytest.raises(DcodexError, match=r"refused the credentials|TLS|reachable"):
            async with services_logged_in(server.url, {"nats_connect_timeout_seconds": 2.0}):
                pass
        async with services_logged_in(server.url, {**fields, "nats_connect_timeout_seconds": 10}):
            options = {CLIENT_OPTION[name]: value for name, value in fields.items()}
            async with await DcodexClient.connect(server.url, **options) as client:
                result = await client.execute(
                    {"language": "python", "code": "print(6 * 7)", "cache": False}
                )
                assert (result.status, result.stdout) == ("ok", "42\n")
                cached = await client.execute({"language": "python", "code": "print('kv')"})
                again = await client.execute({"language": "python", "code": "print('kv')"})
                assert cached.stdout == again.stdout == "kv\n"
                assert again.cache_hit, "the result bucket works under this login too"
