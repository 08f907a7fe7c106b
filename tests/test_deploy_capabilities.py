"""The privileges deploy/k8s gives each service are enough, and the sandbox's are needed.

Each service runs here under `setpriv` with exactly its container's capabilities as its
bounding set (what a container runtime grants): the runner and compiler as root with
the capabilities of their Deployment and `--isolation strict`, the cache as an
unprivileged uid with none and no_new_privs. They then serve real requests.
"""

from __future__ import annotations

import subprocess
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

import pytest

from dcodex.shared.client import DcodexClient
from dcodex.shared.service.nats_server import EmbeddedNats
from tests.conftest import dcodex_argv
from tests.deploy_support import kustomize
from tests.test_deploy_manifests import OVERLAY, container, deployment

pytestmark = pytest.mark.bus

STRICT_LAYERS = {"uid", "network", "pid", "mount", "ipc", "uts", "tmpfs_workdir", "read_only_view"}


def manifest_capabilities(service: str) -> list[str]:
    ctr = container(deployment(kustomize(OVERLAY), service))
    added: list[str] = ctr["securityContext"]["capabilities"].get("add", [])
    return added


def setpriv(capabilities: list[str], *, uid: int | None = None) -> list[str]:
    bounding = ",".join(["-all", *(f"+{c.lower()}" for c in capabilities)])
    argv = ["setpriv", f"--bounding-set={bounding}", "--inh-caps=-all"]
    if uid is not None:
        argv += [f"--reuid={uid}", f"--regid={uid}", "--clear-groups", "--no-new-privs"]
    return [*argv, "--"]


def start(
    name: str, url: str, prefix: list[str], log: Path, *extra: str
) -> subprocess.Popen[bytes]:
    argv = [*prefix, *dcodex_argv("service", name, "--nats-url", url, "--metrics-port", "0")]
    with log.open("wb") as out:
        return subprocess.Popen([*argv, *extra], stdout=out, stderr=subprocess.STDOUT)


def stop(process: subprocess.Popen[bytes]) -> None:
    if process.poll() is None:
        process.terminate()
        try:
            process.wait(timeout=15)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()


@pytest.fixture(scope="module")
def confined(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """A NATS server of its own and the three services with their container's privileges."""
    logs = tmp_path_factory.mktemp("confined")
    server = EmbeddedNats()
    url = server.start()
    processes: list[subprocess.Popen[bytes]] = []
    try:
        for name in ("compiler", "runner"):
            prefix = setpriv(manifest_capabilities(name))
            processes.append(
                start(name, url, prefix, logs / f"{name}.log", "--isolation", "strict")
            )
        cache_uid = 10001  # the image's user, as the cache Deployment runs it
        processes.append(start("cache", url, setpriv([], uid=cache_uid), logs / "cache.log"))
        yield url
    finally:
        for process in processes:
            stop(process)
        server.stop()


@pytest.fixture
async def confined_client(confined: str) -> AsyncIterator[DcodexClient]:
    async with await DcodexClient.connect(confined, timeout=60) as client:
        for _ in range(300):
            names = {answer["name"] for answer in await client.ping(wait_s=0.2)}
            if {"dcodex-cache", "dcodex-runner", "dcodex-compiler"} <= names:
                break
        yield client


async def test_confined_services_sandbox_with_every_strict_layer(
    confined_client: DcodexClient,
) -> None:
    languages = await confined_client.languages()
    assert set(languages.isolation) >= STRICT_LAYERS


C_HELLO = '#include <stdio.h>\nint main(void){puts("c ok");}'
CPP_HELLO = '#include <iostream>\nint main(){std::cout<<"cpp ok\\n";}'
# Killed at its 1 s wall clock, it never prints; a runner that cannot signal the
# sandbox's uid cannot kill it, but the helper's own wall clock (the run's + 2 s) does.
OUTLIVES_WALL_CLOCK = "import time\ntime.sleep(10)\nprint('outlived')"


@pytest.mark.parametrize(
    ("request_", "status", "stdout"),
    [
        ({"language": "c", "code": C_HELLO}, "ok", "c ok\n"),
        ({"language": "cpp", "code": CPP_HELLO}, "ok", "cpp ok\n"),
        ({"language": "python", "code": "print(input()[::-1])", "stdin": "ko yp"}, "ok", "py ok\n"),
        (
            {"language": "python", "code": OUTLIVES_WALL_CLOCK, "limits": {"wall_time_s": 1}},
            "wall_time_limit",
            "",
        ),
        ({"language": "python", "code": "while True: pass"}, "cpu_time_limit", ""),
    ],
    ids=["c", "cpp", "python", "wall-clock-kill", "cpu-limit"],
)
async def test_confined_services_run_programs(
    confined_client: DcodexClient, request_: dict[str, Any], status: str, stdout: str
) -> None:
    result = await confined_client.execute({**request_, "cache": False})
    assert (result.status, result.stdout) == (status, stdout), result.stderr


async def test_the_confined_cache_stores_results(confined_client: DcodexClient) -> None:
    request = {"language": "python", "code": "print('stored by a cache without privileges')"}
    await confined_client.execute(request)
    assert (await confined_client.execute(request)).cache_hit


@pytest.mark.parametrize("missing", ["SYS_ADMIN", "SETUID", "SETGID", "CHOWN", "DAC_OVERRIDE"])
def test_without_a_sandbox_capability_the_runner_refuses_to_start(
    missing: str, tmp_path: Path
) -> None:
    capabilities = [c for c in manifest_capabilities("runner") if c != missing]
    with EmbeddedNats() as server:
        runner = start("runner", server.url, setpriv(capabilities), tmp_path / "runner.log")
        try:
            code = runner.wait(timeout=60)
        finally:
            stop(runner)
    log = (tmp_path / "runner.log").read_text()
    assert code != 0
    assert "--isolation strict needs the layers" in log, log


async def test_without_kill_only_the_helper_ends_a_run_past_its_wall_clock(
    tmp_path: Path,
) -> None:
    """Without CAP_KILL the runner cannot signal the sandbox's uid at the wall clock;
    the helper (same uid as the runner) ends the run itself 2 s later."""
    capabilities = [c for c in manifest_capabilities("runner") if c != "KILL"]
    assert len(capabilities) == len(manifest_capabilities("runner")) - 1
    with EmbeddedNats() as server:
        runner = start("runner", server.url, setpriv(capabilities), tmp_path / "runner.log")
        try:
            async with await DcodexClient.connect(server.url, timeout=60) as client:
                for _ in range(300):
                    if await client.ping(wait_s=0.2):
                        break
                request = {"language": "python", "code": OUTLIVES_WALL_CLOCK}
                result = await client.run({**request, "limits": {"wall_time_s": 1}})
        finally:
            stop(runner)
    assert (result.status, result.stdout) == ("wall_time_limit", "")
    assert 3000 <= result.wall_time_ms < 10_000, "ended by the helper, not by the runner"
