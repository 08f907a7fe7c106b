"""structlog set-up: JSON lines (or console) with the request context bound.

The bus binds `service`, `instance` and `request_id` for each request it answers, and
handlers bind `execution_id` and `language` with
`structlog.contextvars.bound_contextvars`, so every line a request causes carries them.
Each request ends in one INFO line (`request`: endpoint, code, duration, status...);
what happens on the way is logged at DEBUG.
"""

from __future__ import annotations

import json
import logging
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from contextvars import ContextVar
from typing import Any

import structlog

# Whether DEBUG lines are written; until configured, structlog's default writes them all.
_debug = True


def debug_enabled() -> bool:
    """Whether a DEBUG line would be written: a request's path skips a filtered-out line
    altogether (even filtered, a line costs a logger's binding)."""
    return _debug


def configure_logging(level: str = "info", fmt: str = "json") -> None:
    global _debug
    _debug = logging.getLevelNamesMapping()[level.upper()] <= logging.DEBUG
    renderer: structlog.types.Processor
    factory: structlog.types.WrappedLogger
    if fmt == "json":
        # Every request writes a line: orjson renders it in a fraction of json's time.
        renderer = structlog.processors.JSONRenderer(serializer=_json_bytes)
        factory = structlog.BytesLoggerFactory(file=sys.stderr.buffer)
    else:
        renderer = structlog.dev.ConsoleRenderer(colors=sys.stderr.isatty())
        factory = structlog.PrintLoggerFactory(file=sys.stderr)
    structlog.configure(
        processors=[
            structlog.contextvars.merge_contextvars,
            structlog.processors.add_log_level,
            structlog.processors.TimeStamper(fmt="iso", utc=True),
            structlog.processors.format_exc_info,
            renderer,
        ],
        wrapper_class=structlog.make_filtering_bound_logger(
            logging.getLevelNamesMapping()[level.upper()]
        ),
        logger_factory=factory,
        cache_logger_on_first_use=False,
    )


def _json_bytes(fields: dict[str, Any], default: Any = None, **_: Any) -> bytes:
    """`fields` as a JSON line's bytes: by orjson, with what it cannot take (keys that
    are not strings, integers beyond 64 bits) as `json` renders it."""
    import orjson  # a service's dependency (the `server` extra), not the client's

    try:
        return orjson.dumps(fields, default=default, option=orjson.OPT_NON_STR_KEYS)
    except TypeError:
        return json.dumps(fields, default=default).encode()


# The fields of the one INFO line a request ends with: the bus sets a fresh dict while it
# takes a request in (the task that answers it inherits the dict) and handlers add what
# only they know (say, the cache's hit or miss) with `note`.
_request_fields: ContextVar[dict[str, Any] | None] = ContextVar("request_fields", default=None)


@contextmanager
def request_summary(fields: dict[str, Any]) -> Iterator[None]:
    """`fields`, a request's line fields, are `note`'s target while inside (and in the
    tasks started inside)."""
    token = _request_fields.set(fields)
    try:
        yield
    finally:
        _request_fields.reset(token)


def note(**fields: Any) -> None:
    """Add `fields` to the summary line of the request being answered (if any)."""
    current = _request_fields.get()
    if current is not None:
        current.update(fields)
