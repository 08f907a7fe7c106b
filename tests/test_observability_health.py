"""`/readyz` follows the service's dependencies: its NATS server going and coming back."""

from __future__ import annotations

import asyncio
import time
from pathlib import Path

import nats
import pytest

from dcodex.shared.results import RESULTS_BUCKET
from dcodex.shared.service.nats_server import EmbeddedNats
from tests.conftest import ServiceProcesses, free_port
from tests.test_observability import probe, wait_ready

pytestmark = pytest.mark.bus


def wait_for_status(port: int, status: int, timeout: float = 30.0) -> str:
    """The /readyz body once it answers `status`."""
    deadline = time.monotonic() + timeout
    answer = (0, "")
    while time.monotonic() < deadline:
        answer = probe(port, "/readyz")
        if answer[0] == status:
            return answer[1]
        time.sleep(0.1)
    raise TimeoutError(f"/readyz stayed {answer} instead of {status}")


def test_readiness_flips_when_nats_goes_and_comes_back(tmp_path: Path) -> None:
    store = tmp_path / "jetstream"
    server = EmbeddedNats(store_dir=store)
    url = server.start()
    port = int(url.rpartition(":")[2])
    services = ServiceProcesses(url, tmp_path)
    metrics = free_port()
    try:
        services.start("cache", "--metrics-port", str(metrics))
        wait_ready(metrics)
        assert probe(metrics, "/readyz") == (200, "ready\n")

        server.stop()
        reason = wait_for_status(metrics, 503)
        assert reason.startswith("not connected to NATS"), reason
        assert probe(metrics, "/healthz") == (200, "ok\n")  # alive all the while

        server = EmbeddedNats(store_dir=store, port=port)
        server.start()
        assert wait_for_status(metrics, 200) == "ready\n"
    finally:
        services.stop_all()
        server.stop()


def test_readiness_names_a_lost_store(tmp_path: Path) -> None:
    """A cache whose result bucket is deleted is not ready until it has made a new one."""
    server = EmbeddedNats(store_dir=tmp_path / "jetstream")
    server.start()
    services = ServiceProcesses(server.url, tmp_path)
    metrics = free_port()
    try:
        services.start("cache", "--metrics-port", str(metrics))
        wait_ready(metrics)
        asyncio.run(delete_bucket(server.url, RESULTS_BUCKET))
        body = probe(metrics, "/readyz")
        assert body[0] == 503
        assert body[1].startswith(f"the result bucket {RESULTS_BUCKET} is unreachable"), body
        assert probe(metrics, "/healthz") == (200, "ok\n")
        # The cache declares the bucket again (after REOPEN_AFTER_S) and is ready.
        assert wait_for_status(metrics, 200) == "ready\n"
    finally:
        services.stop_all()
        server.stop()


async def delete_bucket(url: str, bucket: str) -> None:
    nc = await nats.connect(url)
    try:
        await nc.jetstream().delete_key_value(bucket)
    finally:
        await nc.close()
