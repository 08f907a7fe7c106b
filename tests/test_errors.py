"""Bad input of every kind gets an error in the contract's format; the services keep serving.

These talk raw NATS (as `nats request` or another language would), not the client.
"""

from __future__ import annotations

import json
import os
from typing import Any

import msgpack
import pytest

from dcodex.shared.client import DcodexClient

pytestmark = pytest.mark.bus


MSGPACK = {"Content-Type": "application/msgpack"}


async def raw(
    client: DcodexClient, subject: str, data: bytes, headers: dict[str, str] | None = None
) -> tuple[dict[str, str], Any]:
    msg = await client.nc.request(subject, data, timeout=30, headers=headers)
    reply_headers = msg.headers or {}
    if reply_headers.get("Content-Type") == "application/msgpack":
        return reply_headers, msgpack.unpackb(msg.data)
    return reply_headers, json.loads(msg.data)


async def still_serves(client: DcodexClient, subject: str = "dcodex.execute") -> None:
    body = json.dumps({"language": "python", "code": "print('alive')", "cache": False})
    headers, reply = await raw(client, subject, body.encode())
    assert "Nats-Service-Error-Code" not in headers
    assert reply["stdout"] == "alive\n"


def assert_error(headers: dict[str, str], body: Any, code: int, field: str | None = None) -> None:
    assert headers["Nats-Service-Error-Code"] == str(code)
    assert headers["Nats-Service-Error"] == body["error"]["message"]
    assert body["error"]["code"] == code
    assert body["error"]["message"]
    if field is not None:
        assert body["error"]["field"] == field


CASES: list[tuple[str, bytes, dict[str, str] | None, int, str | None]] = [
    ("not json", b"{print(1)", None, 400, None),
    ("not utf-8", b'{"language": "py\xff"}', None, 400, None),
    ("not an object", b"[1, 2, 3]", None, 400, None),
    ("empty", b"", None, 400, "language"),
    ("missing code", b'{"language": "python"}', None, 400, "code"),
    ("code is a number", b'{"language": "python", "code": 5}', None, 400, "code"),
    ("args not strings", b'{"language": "python", "code": "", "args": [1]}', None, 400, "args.0"),
    ("stream not bool", b'{"language": "python", "code": "", "stream": "yes"}', None, 400, "stream"),
    ("unknown field", b'{"language": "python", "code": "", "colour": 1}', None, 400, "colour"),
    ("bad execution id", b'{"language": "c", "code": "", "execution_id": "a b"}', None, 400, "execution_id"),
    ("negative limit", b'{"language": "c", "code": "", "limits": {"cpu_time_s": -1}}', None, 400, "limits.cpu_time_s"),
    ("unknown limit", b'{"language": "c", "code": "", "limits": {"cpu": 1}}', None, 400, "limits.cpu"),
    ("limit over ceiling", b'{"language": "c", "code": "", "limits": {"wall_time_s": 9999}}', None, 400, "limits.wall_time_s"),
    ("unknown language", b'{"language": "cobol", "code": "x"}', None, 404, "language"),
    ("not msgpack", b"\xc1\xc1\xc1", MSGPACK, 400, None),
    ("msgpack not a map", msgpack.packb([1, 2]), MSGPACK, 400, None),
    ("msgpack code is bytes", msgpack.packb({"language": "c", "code": b"x"}, use_bin_type=True), MSGPACK, 400, "code"),
]  # fmt: skip


@pytest.mark.parametrize("subject", ["dcodex.execute", "dcodex.run"])
@pytest.mark.parametrize(
    ("name", "data", "headers", "code", "field"), CASES, ids=[case[0] for case in CASES]
)
async def test_bad_request_is_answered_in_the_error_format(
    client: DcodexClient,
    subject: str,
    name: str,
    data: bytes,
    headers: dict[str, str] | None,
    code: int,
    field: str | None,
) -> None:
    reply_headers, body = await raw(client, subject, data, headers)
    assert_error(reply_headers, body, code, field)
    assert reply_headers["Dcodex-Request-Id"]


async def test_oversized_code_is_413(client: DcodexClient) -> None:
    body = json.dumps({"language": "python", "code": "#" * (300 * 1024)}).encode()
    headers, reply = await raw(client, "dcodex.execute", body)
    assert_error(headers, reply, 413, "code")
    await still_serves(client)


async def test_oversized_stdin_is_413(client: DcodexClient) -> None:
    body = json.dumps({"language": "python", "code": "", "stdin": "x" * (300 * 1024)}).encode()
    headers, reply = await raw(client, "dcodex.run", body)
    assert_error(headers, reply, 413, "stdin")
    await still_serves(client, "dcodex.run")


async def test_services_keep_serving_after_a_burst_of_bad_input(client: DcodexClient) -> None:
    for _, data, headers, _, _ in CASES:
        for subject in ("dcodex.execute", "dcodex.run", "dcodex.compile"):
            reply_headers, _ = await raw(client, subject, data, headers)
            assert reply_headers["Nats-Service-Error-Code"] in {"400", "404"}
    await still_serves(client)
    await still_serves(client, "dcodex.run")
    compiled = await client.compile("c", "int main(void) { return 0; }")
    assert compiled.status == "ok"


async def test_compile_rejects_interpreted_language(client: DcodexClient) -> None:
    headers, body = await raw(client, "dcodex.compile", b'{"language": "python", "code": "1"}')
    assert_error(headers, body, 400, "language")


@pytest.mark.parametrize("subject", ["dcodex.execute", "dcodex.run"])
async def test_msgpack_request_gets_msgpack_reply(client: DcodexClient, subject: str) -> None:
    request = {"language": "py", "code": "print(input() * 2)", "stdin": "ab\n", "cache": False}
    headers, body = await raw(client, subject, msgpack.packb(request), MSGPACK)
    assert headers["Content-Type"] == "application/msgpack"
    assert body["status"] == "ok" and body["stdout"] == "abab\n"


async def test_json_reply_and_request_id_round_trip(client: DcodexClient) -> None:
    request = json.dumps({"language": "python", "code": "print(3)", "cache": False}).encode()
    headers, body = await raw(
        client, "dcodex.execute", request, {"Dcodex-Request-Id": "trace-me-42"}
    )
    assert headers["Dcodex-Request-Id"] == "trace-me-42"
    assert body["status"] == "ok" and body["stdout"] == "3\n"


async def test_languages_lists_real_toolchains(client: DcodexClient) -> None:
    _, body = await raw(client, "dcodex.languages", b"")
    by_id = {lang["id"]: lang for lang in body["languages"]}
    assert {"c", "cpp", "python"} <= set(by_id)
    assert by_id["cpp"]["aliases"] == ["c++", "cxx"] and by_id["cpp"]["compiled"] is True
    assert by_id["python"]["version"].startswith("python 3.")
    assert body["limits"]["defaults"]["cpu_time_s"] == 1.0
    assert body["limits"]["defaults"]["output_bytes"] == 10240
    assert "rlimits" in body["isolation"]


async def test_request_id_is_carried_to_every_downstream_call(client: DcodexClient) -> None:
    """A plain (non-queue) subscriber sees each hop's request and its headers."""
    seen: dict[str, str] = {}

    async def watch(msg: Any) -> None:
        seen[msg.subject] = (msg.headers or {}).get("Dcodex-Request-Id", "")

    watchers = [await client.nc.subscribe(s, cb=watch) for s in ("dcodex.run", "dcodex.compile")]
    code = "int main(void) { return 0; }\n// request-id test " + os.urandom(8).hex()
    request = json.dumps({"language": "c", "code": code}).encode()
    headers, body = await raw(client, "dcodex.execute", request, {"Dcodex-Request-Id": "hop-7"})
    for watcher in watchers:
        await watcher.unsubscribe()
    assert body["status"] == "ok" and headers["Dcodex-Request-Id"] == "hop-7"
    assert seen == {"dcodex.run": "hop-7", "dcodex.compile": "hop-7"}


async def test_services_are_discoverable_with_the_micro_protocol(client: DcodexClient) -> None:
    expected = {  # with each tenant's entry and status subject (docs/tenancy.md)
        "dcodex-cache": {
            "dcodex.execute",
            "dcodex.execute.*",
            "dcodex.status.execute",
            "dcodex.status.execute.*",
            "dcodex.cache.stats",
            "dcodex.cache.purge",
            "dcodex.cache.forget",
            "dcodex.judge",
        },
        "dcodex-runner": {
            "dcodex.run",
            "dcodex.run.*",
            "dcodex.status.run",
            "dcodex.status.run.*",
            "dcodex.languages",
            "dcodex.judge.run",
        },
        "dcodex-compiler": {"dcodex.compile", "dcodex.status.compile"},
    }
    for name, subjects in expected.items():
        msg = await client.nc.request(f"$SRV.INFO.{name}", b"", timeout=5)
        info = json.loads(msg.data)
        assert info["name"] == name
        assert {endpoint["subject"] for endpoint in info["endpoints"]} == subjects
        for endpoint in info["endpoints"]:
            # A status subject (a tenant's too) and the cache's forget are heard by
            # every instance: a queue group of its own.
            subject = endpoint["subject"]
            broadcast = subject.startswith("dcodex.status.") or subject == "dcodex.cache.forget"
            assert (endpoint["queue_group"] == "q") != broadcast, endpoint
    runner = json.loads((await client.nc.request("$SRV.INFO.dcodex-runner", b"", timeout=5)).data)
    assert "rlimits" in runner["metadata"]["isolation"]
