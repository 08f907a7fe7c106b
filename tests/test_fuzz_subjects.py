"""Property-based: anything sent to any subject of shared/subjects.py gets a result
or a contract error, never a 500 or silence, and the services keep serving.

Random and malformed JSON and msgpack, wrong types in the right fields, huge and
deeply nested values, invalid UTF-8, random headers. Example counts stay modest so the
suite stays fast; the services are the session's real ones.
"""

from __future__ import annotations

import asyncio
import json

import msgpack
import nats
import nats.errors
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from nats.aio.msg import Msg

from dcodex.shared.client import DcodexClient
from dcodex.shared.codec import CONTENT_TYPE_HEADER, JSON, MSGPACK, decode, encoding_of
from dcodex.shared.contract import ErrorReply, ExecuteRequest, RunStatusRequest
from dcodex.shared.errors import ERROR_CODE_HEADER, INTERNAL
from dcodex.shared.subjects import CACHE_PURGE, SUBJECTS, Subject
from tests.conftest import ServiceProcesses

pytestmark = pytest.mark.bus

# Purging is what any payload it accepts does: fuzzing it would empty the shared cache.
FUZZED = [s for s in SUBJECTS if s is not CACHE_PURGE]
EXAMPLES = 25


def values(smallest: int, largest: int) -> st.SearchStrategy[object]:
    """Any JSON-like value, with integers in [smallest, largest]."""
    return st.recursive(
        st.none()
        | st.booleans()
        | st.integers(min_value=smallest, max_value=largest)
        | st.floats(allow_nan=False)
        | st.text(max_size=40),
        lambda inner: (
            st.lists(inner, max_size=5) | st.dictionaries(st.text(max_size=10), inner, max_size=5)
        ),
        max_leaves=20,
    )


json_values = values(-(2**70), 2**70)  # JSON has no integer bounds
msgpack_values = values(-(2**63), 2**64 - 1)  # msgpack's own
# Objects with the request's own field names, holding values of any type.
FIELDS = sorted({*ExecuteRequest.model_fields, "limits", "key", "execution_id", "compile_id"})
shaped = st.dictionaries(st.sampled_from(FIELDS), json_values, max_size=6)
shaped_msgpack = st.dictionaries(st.sampled_from(FIELDS), msgpack_values, max_size=6)


def deep(depth: int) -> bytes:
    return b"[" * depth + b"]" * depth


special = st.sampled_from(
    [
        deep(100_000),  # far deeper than any parser's recursion (once a 500)
        b'{"language": "python", "code": "' + b"x" * 900_000 + b'"}',  # near max payload
        b"\xff\xfe\xfa invalid utf-8 \xc3\x28",
        b'{"language": "\xed\xa0\x80", "code": "print(1)"}',  # a lone surrogate, in UTF-8
        b'{"language": 1e999, "code": []}',
        b"",
        b"null",
        b'"just a string"',
        b"\x81\xa4code\xc1",  # msgpack with a never-used byte
        b"\x91" * 100_000 + b"\xc0",  # msgpack nested as deep
    ]
)
bodies = st.one_of(
    st.binary(max_size=300),
    json_values.map(lambda v: json.dumps(v).encode()),
    shaped.map(lambda v: json.dumps(v).encode()),
    msgpack_values.map(lambda v: msgpack.packb(v)),
    shaped_msgpack.map(lambda v: msgpack.packb(v)),
    special,
)
header_text = st.text(
    st.characters(min_codepoint=33, max_codepoint=126, exclude_characters=":"),
    min_size=1,
    max_size=20,
)
headers = st.fixed_dictionaries(
    {},
    optional={
        CONTENT_TYPE_HEADER: st.sampled_from([JSON, MSGPACK, "text/plain", "application/json; x"]),
        "Dcodex-Request-Id": header_text,
        "X-Random": header_text,
    },
)


async def ask(url: str, subject: str, body: bytes, sent_headers: dict[str, str]) -> Msg:
    nc = await nats.connect(url)
    try:
        return await nc.request(subject, body, timeout=30, headers=sent_headers or None)
    finally:
        await nc.close()


def silent_is_right(subject: Subject, body: bytes, sent_headers: dict[str, str]) -> bool:
    """A status subject stays silent for a well-formed question about an unknown run."""
    if not subject.broadcast:
        return False
    try:
        RunStatusRequest.model_validate(decode(body, encoding_of(sent_headers)))
    except Exception:
        return False
    return True


@pytest.mark.parametrize("subject", FUZZED, ids=lambda s: s.key)
def test_any_bytes_get_a_result_or_a_contract_error(
    stack: ServiceProcesses, subject: Subject
) -> None:
    address = subject.on("dcodex")

    @settings(max_examples=EXAMPLES, deadline=None, suppress_health_check=list(HealthCheck))
    @given(body=bodies, sent_headers=headers)
    def check(body: bytes, sent_headers: dict[str, str]) -> None:
        try:
            msg = asyncio.run(ask(stack.url, address, body, sent_headers))
        except nats.errors.TimeoutError:
            assert silent_is_right(subject, body, sent_headers), f"no answer on {address}"
            return
        reply = decode(msg.data, encoding_of(msg.headers))
        if msg.headers and ERROR_CODE_HEADER in msg.headers:
            error = ErrorReply.model_validate(reply).error
            assert str(error.code) == msg.headers[ERROR_CODE_HEADER]
            assert error.code != INTERNAL, error.message
        else:
            subject.reply.model_validate(reply)

    check()
    asyncio.run(still_serving(stack.url))


async def still_serving(url: str) -> None:
    async with await DcodexClient.connect(url, timeout=60) as client:
        result = await client.execute({"language": "python", "code": "print('still here')"})
    assert (result.status, result.stdout) == ("ok", "still here\n")
