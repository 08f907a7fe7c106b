"""Real deployments ask clients to log in: the CLI and the client against nats-servers
that require a user and password, or a token. Each server runs a runner of its own
(which logs in with credentials in its URL), enough to answer `dcodex.languages`.
"""

from __future__ import annotations

import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest

from dcodex.shared.client import DcodexClient, SyncDcodexClient
from dcodex.shared.errors import DcodexError
from dcodex.shared.service.nats_server import EmbeddedNats
from tests.conftest import ServiceProcesses
from tests.test_cli import assert_no_traceback, dcodex, flat, shown, table_rows, user_env

pytestmark = pytest.mark.bus


USER, PASSWORD, TOKEN = "ada", "s3cret-pw", "t0ken-42"


def runner_behind(server: EmbeddedNats, credentials: str, logs: Path) -> ServiceProcesses:
    """A runner on `server`, logging in with `credentials` (`user:password` or a token)."""
    url_with_login = server.url.replace("nats://", f"nats://{credentials}@")
    services = ServiceProcesses(url_with_login, logs)
    services.start("runner")
    services.wait_ready(("runner",))
    return services


@pytest.fixture(scope="module")
def password_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    with EmbeddedNats(extra_args=("--user", USER, "--pass", PASSWORD)) as server:
        services = runner_behind(server, f"{USER}:{PASSWORD}", tmp_path_factory.mktemp("pw"))
        try:
            yield server.url
        finally:
            services.stop_all()


@pytest.fixture(scope="module")
def token_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    with EmbeddedNats(extra_args=("--auth", TOKEN)) as server:
        services = runner_behind(server, TOKEN, tmp_path_factory.mktemp("token"))
        try:
            yield server.url
        finally:
            services.stop_all()


def assert_languages_listed(completed: subprocess.CompletedProcess[str]) -> None:
    assert completed.returncode == 0, shown(completed)
    assert {"c", "cpp", "python"} <= set(table_rows(completed.stdout)), shown(completed)


def assert_refused(completed: subprocess.CompletedProcess[str], url: str) -> None:
    assert completed.returncode == 2, shown(completed)
    err = flat(completed.stderr)
    assert f"the NATS server at {url} refused the credentials" in err, shown(completed)
    assert completed.stdout == ""
    assert_no_traceback(completed)


def test_user_and_password_flags(password_server: str) -> None:
    url = password_server
    assert_languages_listed(
        dcodex("bus", "-s", url, "--user", USER, "--password", PASSWORD, "languages")
    )
    wrong = dcodex("bus", "-s", url, "--user", USER, "--password", "wrong", "languages")
    assert_refused(wrong, url)
    assert_refused(dcodex("bus", "-s", url, "languages"), url)


def test_user_and_password_from_the_environment(password_server: str) -> None:
    env = user_env(
        DCODEX_NATS_URL=password_server, DCODEX_NATS_USER=USER, DCODEX_NATS_PASSWORD=PASSWORD
    )
    assert_languages_listed(dcodex("bus", "languages", env=env))


def test_token_flag_and_environment(token_server: str) -> None:
    url = token_server
    assert_languages_listed(dcodex("bus", "-s", url, "--token", TOKEN, "languages"))
    env = user_env(DCODEX_NATS_URL=url, DCODEX_NATS_TOKEN=TOKEN)
    assert_languages_listed(dcodex("bus", "languages", env=env))
    assert_refused(dcodex("bus", "-s", url, "--token", "not-it", "languages"), url)


async def test_client_logs_in_with_a_user_or_a_token(
    password_server: str, token_server: str
) -> None:
    async with await DcodexClient.connect(password_server, user=USER, password=PASSWORD) as client:
        assert "python" in {language.id for language in (await client.languages()).languages}
    async with await DcodexClient.connect(token_server, token=TOKEN) as client:
        assert "c" in {language.id for language in (await client.languages()).languages}
    with pytest.raises(DcodexError) as refused:
        await DcodexClient.connect(token_server, token="not-it")
    assert refused.value.code == 503
    assert "refused the credentials" in refused.value.message


def test_sync_client_logs_in_too(password_server: str) -> None:
    with SyncDcodexClient.connect(password_server, user=USER, password=PASSWORD) as client:
        assert "cpp" in {language.id for language in client.languages().languages}
