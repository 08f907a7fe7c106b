"""Prometheus plumbing: each service has its own registry, served on its own port."""

from __future__ import annotations

from prometheus_client import CollectorRegistry, start_http_server

from dcodex.shared.errors import INTERNAL, DcodexError

DEFAULT_PORTS = {"dcodex-cache": 9101, "dcodex-runner": 9102, "dcodex-compiler": 9103}


def serve_metrics(registry: CollectorRegistry, port: int) -> None:
    """Serve `/metrics` of `registry` on `port` (0: not at all)."""
    if not port:
        return
    try:
        # All interfaces: Prometheus scrapes pods from outside.
        start_http_server(port, addr="0.0.0.0", registry=registry)
    except OSError as exc:
        raise DcodexError(
            INTERNAL, f"cannot serve metrics on port {port} ({exc.strerror}); see --metrics-port"
        ) from exc


def metrics_port(service: str, configured: int | None) -> int:
    return DEFAULT_PORTS[service] if configured is None else configured
