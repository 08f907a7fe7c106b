"""Services outlive a restart of their NATS server: they reconnect and serve again."""

from __future__ import annotations

import asyncio
import time
from pathlib import Path

import pytest

from dcodex.shared.client import DcodexClient
from dcodex.shared.errors import DcodexError
from dcodex.shared.service.nats_server import EmbeddedNats
from tests.conftest import SERVICE_NAMES, ServiceProcesses

pytestmark = pytest.mark.bus


async def hello(url: str, word: str) -> str:
    code = f'#include <stdio.h>\nint main(void) {{ puts("{word}"); return 0; }}'
    async with await DcodexClient.connect(url) as client:
        return (await client.execute({"language": "c", "code": code})).stdout


def hello_when_back(url: str, word: str, timeout: float = 30.0) -> str:
    deadline = time.monotonic() + timeout
    while True:
        try:
            return asyncio.run(hello(url, word))
        except DcodexError:
            if time.monotonic() > deadline:
                raise
            time.sleep(0.2)


def test_services_serve_again_after_nats_restarts(tmp_path: Path) -> None:
    store = tmp_path / "jetstream"
    first = EmbeddedNats(store_dir=store)
    url = first.start()
    services = ServiceProcesses(url, tmp_path)
    second: EmbeddedNats | None = None
    try:
        for name in SERVICE_NAMES:
            services.start(name)
        services.wait_ready()
        assert asyncio.run(hello(url, "before")) == "before\n"
        first.stop()
        second = EmbeddedNats(store_dir=store, port=int(url.rsplit(":", 1)[1]))
        assert second.start() == url
        assert hello_when_back(url, "after") == "after\n"
        assert all(p.poll() is None for group in services.processes.values() for p in group)
    finally:
        services.stop_all()
        first.stop()
        if second is not None:
            second.stop()
