"""Prometheus plumbing: each service has its own registry, served on its own port."""

from __future__ import annotations

from prometheus_client import CollectorRegistry, start_http_server

from dcodex.shared.errors import INTERNAL, DcodexError

# Each service's port when `--metrics-port` is not given; `dcodex up` uses all three.
DEFAULT_PORTS = {"cache": 9101, "runner": 9102, "compiler": 9103}


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
    """The port of one service run alone: the configured one, else its default."""
    return DEFAULT_PORTS[service] if configured is None else configured


def stack_metrics_ports(configured: int | None) -> dict[str, int]:
    """Ports of the services of `dcodex up`: the defaults, or `configured` and the next
    two, or all off (0)."""
    if configured is None:
        return dict(DEFAULT_PORTS)
    return {
        name: configured + offset if configured else 0 for offset, name in enumerate(DEFAULT_PORTS)
    }
