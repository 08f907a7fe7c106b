"""The bus: connecting to NATS and asking over it, the same for services and clients."""

from dcodex.shared.bus.connect import ConnectOptions, open_connection
from dcodex.shared.bus.request import (
    DownstreamObserver,
    NoResponders,
    RequestTimedOut,
    new_id,
    request,
)

__all__ = [
    "ConnectOptions",
    "DownstreamObserver",
    "NoResponders",
    "RequestTimedOut",
    "new_id",
    "open_connection",
    "request",
]
