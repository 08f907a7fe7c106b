"""SIGTERM, as Kubernetes sends it before stopping a pod: the runner stops taking work
and finishes the runs under way within --shutdown-grace-seconds, then exits."""

from __future__ import annotations

import asyncio
import signal
import subprocess
from collections.abc import Iterator

import pytest

from dcodex.shared.client import DcodexClient
from dcodex.shared.contract import ExecutionResult
from dcodex.shared.errors import UNAVAILABLE, DcodexError
from tests.conftest import ServiceProcesses
from tests.deploy_support import NatsServers

pytestmark = pytest.mark.bus


# Prints, then keeps running for 3 s: SIGTERM comes while it sleeps.
SLOW = {
    "language": "python",
    "code": "import time\nprint('begun', flush=True)\ntime.sleep(3)\nprint('finished')",
    "limits": {"wall_time_s": 10},
}


@pytest.fixture
def runners(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ServiceProcesses]:
    servers = NatsServers(tmp_path_factory.mktemp("shutdown-nats"), auth=False)
    servers.start()
    services = ServiceProcesses(servers.url(), tmp_path_factory.mktemp("shutdown-logs"))
    try:
        yield services
    finally:
        services.stop_all()
        servers.stop()


async def run_and_terminate(
    services: ServiceProcesses, runner: subprocess.Popen[bytes], timeout: float
) -> ExecutionResult:
    """Start SLOW on `runner`, SIGTERM it once the program has begun, return the result."""
    await asyncio.to_thread(services.wait_ready, ("runner",))
    async with (
        await DcodexClient.connect(services.url, timeout=timeout) as client,
        client.live(SLOW, via="run") as run,
    ):
        async for event in run.events():
            if getattr(event, "type", None) == "stdout":
                runner.send_signal(signal.SIGTERM)
                break
        return await run.wait()


async def test_sigterm_lets_the_run_under_way_finish(runners: ServiceProcesses) -> None:
    runner = runners.start("runner", "--shutdown-grace-seconds", "30")
    result = await run_and_terminate(runners, runner, timeout=30)
    assert (result.status, result.stdout) == ("ok", "begun\nfinished\n")
    assert runner.wait(timeout=30) == 0


async def test_a_run_longer_than_the_grace_is_cut_off(runners: ServiceProcesses) -> None:
    runner = runners.start("runner", "--shutdown-grace-seconds", "0.5")
    with pytest.raises(DcodexError) as refused:
        await run_and_terminate(runners, runner, timeout=5)
    assert refused.value.code == UNAVAILABLE  # cancelled: the client learns it was lost
    assert runner.wait(timeout=30) == 0
