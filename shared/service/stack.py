"""Starting and stopping services in this process: `dcodex service X` and `dcodex up`.

This is the composition root: the one place that knows all three services.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import signal
import socket
from collections.abc import Awaitable, Callable, Sequence
from importlib.metadata import entry_points
from pathlib import Path

import structlog

from dcodex.shared.bus.connect import DEFAULT_PORT, up_state_file
from dcodex.shared.service.config import Settings
from dcodex.shared.service.health import Readiness
from dcodex.shared.service.lifecycle import Service
from dcodex.shared.service.metrics import serve_metrics
from dcodex.shared.service.nats_server import EmbeddedNats
from dcodex.shared.subjects import SERVICES as ALL_SERVICES

SERVICE_ENTRY_POINTS = "dcodex.services"

log = structlog.get_logger("dcodex.stack")

Starter = Callable[[Settings], Awaitable[Service]]


def installed_services() -> tuple[str, ...]:
    """The services `dcodex up` starts, in start order: DCodeX's own (each needs the one
    before it), then any an operator's package adds through a `dcodex.services` entry
    point, by name."""
    found = {point.name for point in entry_points(group=SERVICE_ENTRY_POINTS)}
    own = tuple(service.name for service in ALL_SERVICES if service.name in found)
    return own + tuple(sorted(found - set(own)))


def starter(name: str) -> Starter:
    """The `start` of service NAME, found through the `dcodex.services` entry points.

    This keeps `dcodex.shared` free of imports of `dcodex.services`, and lets an
    operator's package add a service (its own entry point) without touching this code.
    """
    found = {point.name: point for point in entry_points(group=SERVICE_ENTRY_POINTS)}
    if name not in found:
        raise LookupError(f"no service {name!r} is installed (entry points: {sorted(found)})")
    start: Starter = found[name].load()
    return start


async def start_services(
    settings: Settings, names: Sequence[str], metrics_ports: dict[str, int]
) -> list[Service]:
    started: list[Service] = []
    try:
        for name in names:
            service = await starter(name)(settings)
            started.append(service)
            readiness = Readiness(service.nc, service.micro, service.ready_checks)
            server = serve_metrics(
                service.metrics, metrics_ports.get(name, 0), readiness, asyncio.get_running_loop()
            )
            if server is not None:
                service.on_stopped.append(server.stop)
            log.info("service_started", service=service.name, metrics_port=metrics_ports.get(name))
    except BaseException:
        await stop_services(started)
        raise
    return started


async def stop_services(services: list[Service], grace_seconds: float = 10.0) -> None:
    for service in reversed(services):
        await service.stop(grace_seconds)
        log.info("service_stopped", service=service.name)


def stop_on_signals() -> asyncio.Event:
    """An event set by SIGINT or SIGTERM."""
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for signum in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(signum, stop.set)
    return stop


async def serve(settings: Settings, names: Sequence[str], metrics_ports: dict[str, int]) -> None:
    """Run services until SIGINT or SIGTERM, then drain them."""
    stop = stop_on_signals()
    services = await start_services(settings, names, metrics_ports)
    try:
        await stop.wait()
    finally:
        await stop_services(services, settings.shutdown_grace_seconds)


async def up(
    settings: Settings,
    *,
    embedded: bool,
    data_dir: Path | None,
    metrics_ports: dict[str, int],
    command: Sequence[str],
    on_ready: Callable[[Settings, list[Service]], None],
) -> int:
    """The whole system on one machine; with `command`, run it against the stack and stop."""
    # The port clients try first when free (else one the kernel picks, told to clients
    # on this machine through the state file).
    port = DEFAULT_PORT if port_is_free(DEFAULT_PORT) else -1
    server = EmbeddedNats(store_dir=data_dir, port=port) if embedded else None
    try:
        if server is not None:
            settings = settings.model_copy(update={"nats_url": server.start()})
            announce(settings.nats_url)
        stop = stop_on_signals()
        services = await start_services(settings, installed_services(), metrics_ports)
        try:
            on_ready(settings, services)
            if command:
                return await _run_command(command, settings.nats_url, stop)
            await stop.wait()
            return 0
        finally:
            await stop_services(services)
    finally:
        if server is not None:
            withdraw()
            server.stop()


def port_is_free(port: int, host: str = "127.0.0.1") -> bool:
    with socket.socket() as probe:
        try:
            probe.bind((host, port))
        except OSError:
            return False
    return True


def announce(url: str) -> None:
    """Tell clients on this machine where this stack's NATS server is."""
    path = up_state_file()
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(json.dumps({"url": url, "pid": os.getpid()}))
    except OSError as exc:  # clients then need --server; the stack runs all the same
        log.warning("state_file_not_written", path=str(path), error=str(exc))


def withdraw() -> None:
    """Remove the state file, if it is still this process's."""
    path = up_state_file()
    with contextlib.suppress(OSError, ValueError):
        if json.loads(path.read_text()).get("pid") == os.getpid():
            path.unlink()


async def _run_command(command: Sequence[str], nats_url: str, stop: asyncio.Event) -> int:
    env = {**os.environ, "DCODEX_NATS_URL": nats_url}
    process = await asyncio.create_subprocess_exec(*command, env=env)
    waiter = asyncio.ensure_future(process.wait())
    stopper = asyncio.ensure_future(stop.wait())
    await asyncio.wait({waiter, stopper}, return_when=asyncio.FIRST_COMPLETED)
    stopper.cancel()
    if not waiter.done():
        process.terminate()
    return await waiter
