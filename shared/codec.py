"""Wire encoding: JSON by default, msgpack when the request says so (docs/protocol.md).

A reply, and every stream event of an execution, uses the encoding of the request
that caused it.
"""

from __future__ import annotations

import json
from typing import Any, Final, Literal

import msgpack
from pydantic import BaseModel

from dcodex.shared.errors import BAD_REQUEST, DcodexError

CONTENT_TYPE_HEADER = "Content-Type"
REQUEST_ID_HEADER = "Dcodex-Request-Id"
CACHE_KEY_HEADER = "Dcodex-Cache-Key"  # cache → runner: the result's key, for its events
Encoding = Literal["application/json", "application/msgpack"]
JSON: Final[Encoding] = "application/json"
MSGPACK: Final[Encoding] = "application/msgpack"


def encoding_of(headers: dict[str, str] | None) -> Encoding:
    """The encoding a message's headers ask for; JSON unless msgpack is named."""
    value = (headers or {}).get(CONTENT_TYPE_HEADER, "")
    return (
        MSGPACK
        if value.split(";")[0].strip().lower() in {MSGPACK, "application/x-msgpack"}
        else JSON
    )


def encode(payload: BaseModel | dict[str, Any], encoding: Encoding = JSON) -> bytes:
    if encoding == MSGPACK:
        # Python values, not JSON's: bytes stay bytes (MessagePack's bin type).
        data = payload.model_dump() if isinstance(payload, BaseModel) else payload
        packed: bytes = msgpack.packb(data, use_bin_type=True)
        return packed
    if isinstance(payload, BaseModel):
        # pydantic writes a model's JSON itself, in a fraction of dumping a dict first.
        return payload.__pydantic_serializer__.to_json(payload)
    return json.dumps(payload, ensure_ascii=False, separators=(",", ":")).encode()


def decode(data: bytes, encoding: Encoding = JSON) -> dict[str, Any]:
    """A request body as a dict; anything else is a 400 saying what was wrong."""
    try:
        value = _decode_any(data, encoding)
    except (ValueError, msgpack.UnpackException) as exc:
        kind = "msgpack" if encoding == MSGPACK else "JSON"
        detail = str(exc) or type(exc).__name__
        raise DcodexError(BAD_REQUEST, f"the request is not valid {kind}: {detail}") from exc
    except RecursionError as exc:  # the JSON parser recurses once per level of nesting
        raise DcodexError(BAD_REQUEST, "the request is nested too deeply") from exc
    if not isinstance(value, dict):
        raise DcodexError(BAD_REQUEST, f"the request must be an object, not {type(value).__name__}")
    return value


def _decode_any(data: bytes, encoding: Encoding) -> Any:
    if encoding == MSGPACK:
        return msgpack.unpackb(data, raw=False, strict_map_key=True)
    return json.loads(data.decode("utf-8"))
