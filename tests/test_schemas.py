"""`proto_schemas/` is current, well formed and consistent with the contract."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from click.testing import CliRunner
from pydantic import BaseModel

from dcodex.shared import contract
from dcodex.shared.service.schemas import MODELS, file_name, generate, schemas, stale, write

SCHEMA_DIR = Path(__file__).parent.parent / "proto_schemas"

# docs/protocol.md, subjects.
SUBJECTS = (
    "dcodex.execute",
    "dcodex.run",
    "dcodex.compile",
    "dcodex.languages",
    "dcodex.cache.stats",
    "dcodex.cache.purge",
    "dcodex.output.{execution_id}",
    "dcodex.input.{execution_id}",
)
# docs/protocol.md, requests and results.
EXECUTE_REQUEST_FIELDS = {
    "language",
    "code",
    "stdin",
    "args",
    "limits",
    "execution_id",
    "stream",
    "interactive",
    "cache",
    # Compile options (docs/protocol.md).
    "std",
    "optimization",
}
EXECUTION_RESULT_FIELDS = {
    "execution_id",
    "status",
    "exit_code",
    "signal",
    "stdout",
    "stderr",
    "compile_output",
    "output_truncated",
    "wall_clock_timeout",
    "cpu_time_ms",
    "wall_time_ms",
    "compile_time_ms",
    "peak_memory_bytes",
    "cache_hit",
    "language",
    "language_version",
    "cache_key",  # lets a client purge one result (docs/cache.md)
}


def load(name: str) -> Any:
    return json.loads((SCHEMA_DIR / name).read_text(encoding="utf-8"))


def refs(node: Any) -> Iterator[str]:
    if isinstance(node, dict):
        for key, value in node.items():
            if key == "$ref" and isinstance(value, str):
                yield value
            else:
                yield from refs(value)
    elif isinstance(node, list):
        for item in node:
            yield from refs(item)


def resolve(document: Any, pointer: str) -> Any:
    node = document
    for part in pointer.removeprefix("#/").split("/"):
        part = part.replace("~1", "/").replace("~0", "~")
        node = node[int(part)] if isinstance(node, list) else node[part]
    return node


def test_committed_schemas_are_current() -> None:
    names = stale(SCHEMA_DIR)
    assert not names, f"proto_schemas/ is stale ({', '.join(names)}): run `dcodex schemas`"


def test_generation_is_deterministic() -> None:
    assert generate() == generate()
    for text in generate().values():
        assert text.endswith("}\n")


@pytest.mark.parametrize("model", MODELS, ids=lambda model: model.__name__)
def test_schema_file_describes_its_model(model: type[BaseModel]) -> None:
    name = file_name(model)
    schema = load(name)
    assert schema["$schema"] == "https://json-schema.org/draft/2020-12/schema"
    assert schema["$id"] == f"https://dcodex.dev/schemas/{name}"
    assert schema["title"] == model.__name__
    assert schema["type"] == "object"
    assert set(schema["properties"]) == set(model.model_fields)
    assert set(schema.get("required", [])) <= set(schema["properties"])
    for ref in refs(schema):
        assert ref.startswith("#/"), ref
        resolve(schema, ref)


def test_schema_file_names() -> None:
    assert file_name(contract.ExecuteRequest) == "execute_request.schema.json"
    assert file_name(contract.EofEvent) == "eof_event.schema.json"
    expected = {file_name(model) for model in MODELS} | {"asyncapi.json"}
    assert {path.name for path in SCHEMA_DIR.glob("*.json")} == expected


def test_execute_request_and_result_have_the_design_fields() -> None:
    request = load("execute_request.schema.json")
    assert set(request["properties"]) == EXECUTE_REQUEST_FIELDS
    assert set(request["required"]) == {"language", "code"}
    assert request["additionalProperties"] is False
    result = load("execution_result.schema.json")
    assert set(result["properties"]) == EXECUTION_RESULT_FIELDS
    assert set(result["properties"]["status"]["enum"]) == set(contract.STATUSES)
    error = load("error_reply.schema.json")
    detail = resolve(error, error["properties"]["error"]["$ref"])
    assert set(detail["properties"]) == {"code", "message", "field"}


def test_asyncapi_names_every_subject() -> None:
    document = load("asyncapi.json")
    assert document["asyncapi"] == "3.0.0"
    addresses = {channel["address"] for channel in document["channels"].values()}
    assert set(SUBJECTS) <= addresses
    # and the tenants' (docs/tenancy.md)
    assert {"dcodex.execute.{tenant}", "dcodex.run.{tenant}"} <= addresses
    assert "dcodex.output.{tenant}.{execution_id}" in addresses
    for channel in document["channels"].values():
        address = channel["address"] or ""
        named = {name for name in ("tenant", "execution_id") if f"{{{name}}}" in address}
        if named:  # every parameter of an address is described, and only those
            assert set(channel["parameters"]) == named
    text = json.dumps(document)
    for name in ("dcodex-cache", "dcodex-runner", "dcodex-compiler"):
        assert name in text
    for header in (
        "Nats-Service-Error",
        "Nats-Service-Error-Code",
        "Dcodex-Request-Id",
        "Content-Type",
        "application/msgpack",
    ):
        assert header in text
    server = document["servers"]["local"]
    assert (server["protocol"], server["host"]) == ("nats", "127.0.0.1:4222")


def test_asyncapi_refs_resolve() -> None:
    document = load("asyncapi.json")
    found = list(refs(document))
    assert found
    for ref in found:
        if ref.startswith("#/"):
            resolve(document, ref)
        else:
            assert ref.startswith("./"), ref
            assert (SCHEMA_DIR / ref.removeprefix("./")).is_file(), ref
    files = {ref.removeprefix("./") for ref in found if ref.startswith("./")}
    assert files == {file_name(model) for model in MODELS}


def test_asyncapi_operations() -> None:
    document = load("asyncapi.json")
    operations = document["operations"]
    by_address = {
        resolve(document, op["channel"]["$ref"])["address"]: op for op in operations.values()
    }
    for subject in SUBJECTS[:6]:
        operation = by_address[subject]
        assert operation["action"] == "receive"
        replies = [ref["$ref"].rsplit("/", 1)[1] for ref in operation["reply"]["messages"]]
        assert "ErrorReply" in replies
    assert by_address["dcodex.output.{execution_id}"]["action"] == "send"
    assert by_address["dcodex.input.{execution_id}"]["action"] == "receive"
    execute_replies = by_address["dcodex.execute"]["reply"]["messages"]
    assert {"$ref": "#/channels/reply/messages/ExecutionResult"} in execute_replies


def test_cli_writes_and_checks(tmp_path: Path) -> None:
    runner = CliRunner()
    directory = tmp_path / "out"
    result = runner.invoke(schemas, ["--dir", str(directory), "--check"])
    assert result.exit_code == 1
    assert runner.invoke(schemas, ["--dir", str(directory)]).exit_code == 0
    assert stale(directory) == []
    assert runner.invoke(schemas, ["--dir", str(directory), "--check"]).exit_code == 0

    (directory / "cache_stats.schema.json").write_text("{}\n", encoding="utf-8")
    (directory / "old.schema.json").write_text("{}\n", encoding="utf-8")
    (directory / "eof_event.schema.json").unlink()
    result = runner.invoke(schemas, ["--dir", str(directory), "--check"])
    assert result.exit_code == 1
    assert stale(directory) == [
        "cache_stats.schema.json",
        "eof_event.schema.json",
        "old.schema.json",
    ]
    assert "run `dcodex schemas`" in result.output

    assert len(write(directory)) == len(generate())
    assert stale(directory) == ["old.schema.json"]
