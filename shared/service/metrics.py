"""Prometheus plumbing: each service has its own registry, served on its own port.

The port's HTTP server also answers the Kubernetes probes:

- `/metrics`: the service's registry, in the Prometheus text format;
- `/healthz`: 200 while the process serves HTTP at all (liveness);
- `/readyz`: 200 when the service is connected to NATS, has its endpoints registered and
  reaches the stores it needs, else 503 with the reasons, one a line (readiness).

`ServiceMetrics` holds what every service exports: build info, requests answered by
endpoint and code with their latency, requests to other services by subject and
outcome (timeouts, no responders) with their latency, and whether NATS is connected.
"""

from __future__ import annotations

import asyncio
import platform
import threading
from collections.abc import Callable, Iterable
from concurrent.futures import TimeoutError as FutureTimeout
from typing import Any
from wsgiref.simple_server import WSGIRequestHandler, WSGIServer, make_server

from nats.aio.client import Client as NATS
from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, Info, make_wsgi_app
from prometheus_client.exposition import ThreadingWSGIServer

from dcodex.shared.errors import INTERNAL, DcodexError
from dcodex.shared.service.health import Readiness
from dcodex.shared.subjects import SERVICES

# Each service's port when `--metrics-port` is not given; `dcodex up` uses all three.
DEFAULT_PORTS = {service.name: service.metrics_port for service in SERVICES}

# Latency buckets, seconds: from a cache hit (~1 ms) to a long run behind a queue.
LATENCY_BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60)

# How long /readyz waits for the service's event loop to run its checks.
READY_WAIT_SECONDS = 5.0


class ServiceMetrics:
    """The metrics every service exports, in the service's own registry."""

    def __init__(self, service: str, version: str) -> None:
        self.registry = CollectorRegistry()
        Info("dcodex_build", "Version of DCodeX and of Python", registry=self.registry).info(
            {"service": service, "version": version, "python": platform.python_version()}
        )
        self.requests = Counter(
            "dcodex_requests_total",
            "Requests answered, by endpoint and code (200, or the error reply's code)",
            ["endpoint", "code"],
            registry=self.registry,
        )
        self.request_seconds = Histogram(
            "dcodex_request_duration_seconds",
            "Time from receiving a request to sending its reply, by endpoint"
            " (the cache's execute endpoint: end-to-end latency)",
            ["endpoint"],
            buckets=LATENCY_BUCKETS,
            registry=self.registry,
        )
        self.downstream = Counter(
            "dcodex_downstream_requests_total",
            "Requests to other services by subject and outcome (ok, error, timeout, no_responders)",
            ["subject", "outcome"],
            registry=self.registry,
        )
        self.downstream_timeouts = Counter(
            "dcodex_downstream_timeouts_total",
            "Requests to other services that got no answer in time, by subject",
            ["subject"],
            registry=self.registry,
        )
        self.downstream_seconds = Histogram(
            "dcodex_downstream_duration_seconds",
            "Latency of requests to other services, by subject",
            ["subject"],
            buckets=LATENCY_BUCKETS,
            registry=self.registry,
        )
        self.nats_connected = Gauge(
            "dcodex_nats_connected", "1 while connected to NATS", registry=self.registry
        )

    def watch_connection(self, nc: NATS) -> None:
        self.nats_connected.set_function(lambda: 1.0 if nc.is_connected else 0.0)

    def request_answered(self, endpoint: str, code: int, seconds: float) -> None:
        """A `bus.RequestObserver`."""
        self.requests.labels(endpoint, str(code)).inc()
        self.request_seconds.labels(endpoint).observe(seconds)

    def downstream_answered(self, subject: str, outcome: str, seconds: float) -> None:
        """A `bus.DownstreamObserver`."""
        self.downstream.labels(subject, outcome).inc()
        if outcome == "timeout":
            self.downstream_timeouts.labels(subject).inc()
        self.downstream_seconds.labels(subject).observe(seconds)

    def expect_downstream(self, subjects: Iterable[str]) -> None:
        """Export zero timeouts for `subjects` before the first, so rates start at 0."""
        for subject in subjects:
            self.downstream_timeouts.labels(subject)


def toolchains_info(registry: CollectorRegistry, versions: dict[str, str]) -> None:
    """`dcodex_toolchain_info{language, version} 1` for every language offered."""
    info = Info(
        "dcodex_toolchain", "Toolchain version of each language", ["language"], registry=registry
    )
    for language, version in versions.items():
        info.labels(language).info({"version": version})


class MetricsServer:
    """The HTTP server of one service's port, on its own thread."""

    def __init__(self, server: WSGIServer) -> None:
        self.server = server
        self.port: int = server.server_port
        self._thread = threading.Thread(target=server.serve_forever, daemon=True)
        self._thread.start()

    def stop(self) -> None:
        self.server.shutdown()
        self.server.server_close()


def serve_metrics(
    registry: CollectorRegistry,
    port: int,
    readiness: Readiness | None = None,
    loop: asyncio.AbstractEventLoop | None = None,
) -> MetricsServer | None:
    """Serve `/metrics`, `/healthz` and `/readyz` on `port` (0: not at all).

    `readiness` is checked on `loop`, the service's event loop.
    """
    if not port:
        return None
    app = _app(registry, readiness, loop)
    try:
        # All interfaces: Prometheus scrapes pods from outside.
        server = make_server("0.0.0.0", port, app, ThreadingWSGIServer, handler_class=_QuietHandler)
    except OSError as exc:
        raise DcodexError(
            INTERNAL, f"cannot serve metrics on port {port} ({exc.strerror}); see --metrics-port"
        ) from exc
    return MetricsServer(server)


StartResponse = Callable[[str, list[tuple[str, str]]], Any]
WsgiApp = Callable[[dict[str, Any], StartResponse], Iterable[bytes]]


def _app(
    registry: CollectorRegistry,
    readiness: Readiness | None,
    loop: asyncio.AbstractEventLoop | None,
) -> WsgiApp:
    metrics: WsgiApp = make_wsgi_app(registry)

    def app(environ: dict[str, Any], start_response: StartResponse) -> Iterable[bytes]:
        path = environ.get("PATH_INFO", "/")
        if path == "/healthz":
            return _text(start_response, "200 OK", "ok\n")
        if path == "/readyz":
            problems = _readiness_problems(readiness, loop)
            if problems:
                return _text(start_response, "503 Service Unavailable", "\n".join(problems) + "\n")
            return _text(start_response, "200 OK", "ready\n")
        return metrics(environ, start_response)

    return app


def _readiness_problems(
    readiness: Readiness | None, loop: asyncio.AbstractEventLoop | None
) -> list[str]:
    if readiness is None or loop is None:
        return []
    if loop.is_closed():
        return ["the service has stopped"]
    future = asyncio.run_coroutine_threadsafe(readiness.problems(), loop)
    try:
        return future.result(timeout=READY_WAIT_SECONDS)
    except FutureTimeout:
        future.cancel()
        return [f"the service's event loop did not answer within {READY_WAIT_SECONDS:g} s"]


def _text(start_response: StartResponse, status: str, body: str) -> list[bytes]:
    data = body.encode()
    start_response(
        status, [("Content-Type", "text/plain; charset=utf-8"), ("Content-Length", str(len(data)))]
    )
    return [data]


class _QuietHandler(WSGIRequestHandler):
    """No access log line per scrape and probe."""

    def log_message(self, format: str, *args: Any) -> None:
        pass


def metrics_port(service: str, configured: int | None) -> int:
    """The port of one service run alone: the configured one, else its default (an
    operator's added service has none: its metrics are off unless a port is given)."""
    return DEFAULT_PORTS.get(service, 0) if configured is None else configured


def stack_metrics_ports(configured: int | None) -> dict[str, int]:
    """Ports of the services of `dcodex up`: the defaults, or all off (0), or the
    defaults moved to start at `configured` (cache, runner, compiler: P, P+1, P+2)."""
    if configured is None:
        return dict(DEFAULT_PORTS)
    first = min(DEFAULT_PORTS.values())
    return {
        name: configured + port - first if configured else 0 for name, port in DEFAULT_PORTS.items()
    }
