"""The error format of the contract (docs/protocol.md).

Every failure a service reports is a `DcodexError`: an HTTP-like code, a message a
person can act on and, for bad input, the dotted name of the offending field.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

from pydantic import ValidationError

BAD_REQUEST = 400
NOT_FOUND = 404
CONFLICT = 409  # an execution_id that a run under way already has
TOO_LARGE = 413
INTERNAL = 500
UNAVAILABLE = 503
TIMEOUT = 504

ERROR_HEADER = "Nats-Service-Error"
ERROR_CODE_HEADER = "Nats-Service-Error-Code"


class DcodexError(Exception):
    """An error reply: `{"error": {"code": ..., "message": ..., "field": ...}}`."""

    def __init__(self, code: int, message: str, field: str | None = None) -> None:
        super().__init__(message)
        self.code = code
        self.message = message
        self.field = field

    def __repr__(self) -> str:
        where = f" ({self.field})" if self.field else ""
        return f"DcodexError({self.code}: {self.message}{where})"

    def to_body(self) -> dict[str, Any]:
        error: dict[str, Any] = {"code": self.code, "message": self.message}
        if self.field is not None:
            error["field"] = self.field
        return {"error": error}

    def to_headers(self) -> dict[str, str]:
        return {ERROR_HEADER: self.message, ERROR_CODE_HEADER: str(self.code)}

    @classmethod
    def from_body(cls, body: Any, fallback_code: int, fallback_message: str) -> DcodexError:
        """Rebuild an error from a reply body, tolerating bodies that are not ours."""
        error = body.get("error") if isinstance(body, dict) else None
        if not isinstance(error, dict):
            return cls(fallback_code, fallback_message)
        code = error.get("code", fallback_code)
        return cls(
            code if isinstance(code, int) else fallback_code,
            str(error.get("message", fallback_message)),
            error.get("field") if isinstance(error.get("field"), str) else None,
        )


def unknown_language(name: str, known: Iterable[str]) -> DcodexError:
    """The 404 for a language nobody offers, listing those that are offered."""
    listed = ", ".join(sorted(known))
    return DcodexError(NOT_FOUND, f"unknown language {name!r}; known: {listed}", "language")


def from_validation_error(exc: ValidationError, prefix: str = "") -> DcodexError:
    """The first problem of a pydantic validation, as a 400 naming the field."""
    first = exc.errors()[0]
    field = ".".join(str(part) for part in first["loc"]) or None
    if prefix and field:
        field = f"{prefix}.{field}"
    message = first["msg"]
    if field:
        message = f"{field}: {message}"
    return DcodexError(BAD_REQUEST, message, field)
