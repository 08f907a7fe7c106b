"""`proto_schemas/`: JSON Schema of every message and an AsyncAPI document of every subject.

Both are generated from the pydantic models of `dcodex.shared.contract`, so they cannot
drift from what the services really accept and send. `dcodex schemas` writes them;
`dcodex schemas --check` (and the test suite) fails when the committed files are stale.
"""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any

import click
from pydantic import BaseModel
from pydantic.json_schema import JsonSchemaMode

from dcodex.shared.codec import CONTENT_TYPE_HEADER, JSON, MSGPACK, REQUEST_ID_HEADER
from dcodex.shared.contract import (
    EXECUTION_ID_PATTERN,
    CacheStats,
    CaseEvent,
    CompileRequest,
    CompileResult,
    EofEvent,
    ErrorReply,
    ExecuteRequest,
    ExecutionResult,
    JudgedEvent,
    JudgeRequest,
    JudgeResult,
    LanguagesReply,
    OutputEvent,
    PurgeReply,
    PurgeRequest,
    Request,
    ResultEvent,
    RunStatus,
    RunStatusRequest,
    SignalEvent,
    StdinEvent,
)
from dcodex.shared.errors import ERROR_CODE_HEADER, ERROR_HEADER
from dcodex.shared.service.config import Settings
from dcodex.shared.subjects import (
    RUNNER,
    SERVICES,
    SUBJECTS,
    TENANT_PATTERN,
    input_subject,
    output_subject,
)

DEFAULT_DIR = Path("proto_schemas")
SCHEMA_DIALECT = "https://json-schema.org/draft/2020-12/schema"
ID_BASE = "https://dcodex.dev/schemas/"
ASYNCAPI_FILE = "asyncapi.json"
# The version of the wire contract (docs/protocol.md), not of the package.
CONTRACT_VERSION = "0.1.0"
ERROR_CODES = ("400", "404", "413", "500", "503", "504")

MODELS: tuple[type[BaseModel], ...] = (
    ExecuteRequest,
    ExecutionResult,
    CompileRequest,
    CompileResult,
    LanguagesReply,
    CacheStats,
    PurgeRequest,
    PurgeReply,
    RunStatusRequest,
    RunStatus,
    ErrorReply,
    OutputEvent,
    ResultEvent,
    StdinEvent,
    EofEvent,
    SignalEvent,
    JudgeRequest,
    JudgeResult,
    CaseEvent,
    JudgedEvent,
)
# What the output channel carries: a run's events, then a judge's (docs/judge.md).
OUTPUT_EVENTS = ("OutputEvent", "ResultEvent", "CaseEvent", "JudgedEvent")


def file_name(model: type[BaseModel]) -> str:
    """`ExecuteRequest` -> `execute_request.schema.json`."""
    snake = re.sub(r"(?<!^)(?=[A-Z])", "_", model.__name__).lower()
    return f"{snake}.schema.json"


def json_schema(model: type[BaseModel]) -> dict[str, Any]:
    """What a client sends is described as it is validated, what a service sends as it
    is serialised."""
    mode: JsonSchemaMode = "validation" if issubclass(model, Request) else "serialization"
    schema = model.model_json_schema(mode=mode)
    name = file_name(model)
    return {
        "$schema": SCHEMA_DIALECT,
        "$id": ID_BASE + name,
        **schema,
        "title": model.__name__,
    }


def _ref(pointer: str) -> dict[str, str]:
    return {"$ref": pointer}


def _headers(*, reply: bool, error: bool = False) -> dict[str, Any]:
    properties: dict[str, Any] = {
        CONTENT_TYPE_HEADER: {
            "type": "string",
            "enum": [JSON, MSGPACK],
            "default": JSON,
            "description": (
                "Encoding of the body; the reply and stream events use the request's."
                if not reply
                else "Encoding of the body: that of the request."
            ),
        },
        REQUEST_ID_HEADER: {
            "type": "string",
            "description": (
                "Correlates logs and downstream calls; made by the service when absent."
                if not reply
                else "The request's id (or the one the service made)."
            ),
        },
    }
    schema: dict[str, Any] = {"type": "object", "properties": properties}
    if reply:
        schema["required"] = [CONTENT_TYPE_HEADER, REQUEST_ID_HEADER]
    if error:
        properties[ERROR_HEADER] = {"type": "string", "description": "The error message."}
        properties[ERROR_CODE_HEADER] = {
            "type": "string",
            "enum": list(ERROR_CODES),
            "description": (
                "400 bad request, 404 unknown language, 413 too large, "
                "503 overloaded or a dependency is down, 504 a dependency timed out, "
                "500 internal."
            ),
        }
        schema["required"] = [*schema["required"], ERROR_HEADER, ERROR_CODE_HEADER]
    return schema


def _message(model: type[BaseModel] | None, summary: str, headers: str | None) -> dict[str, Any]:
    message: dict[str, Any] = {
        "name": model.__name__ if model else "EmptyRequest",
        "summary": summary,
    }
    if headers:
        message["headers"] = _ref(f"#/components/schemas/{headers}")
    if model is None:
        message["payload"] = {
            "type": "object",
            "description": "Ignored: send an empty body or {}.",
        }
    else:
        message["payload"] = _ref(f"./{file_name(model)}")
    return message


def asyncapi(prefix: str) -> dict[str, Any]:
    """The AsyncAPI 3.0.0 document of every subject in `dcodex.shared.subjects` under `prefix`."""
    services = {service.micro_name: service.summary for service in reversed(SERVICES)}
    messages = {
        "ExecuteRequest": _message(ExecuteRequest, "Run a program.", "RequestHeaders"),
        "ExecutionResult": _message(ExecutionResult, "The result of a run.", "ReplyHeaders"),
        "CompileRequest": _message(CompileRequest, "Compile a program.", "RequestHeaders"),
        "CompileResult": _message(
            CompileResult, "Artifact reference and diagnostics.", "ReplyHeaders"
        ),
        "EmptyRequest": _message(None, "A request with no parameters.", "RequestHeaders"),
        "LanguagesReply": _message(
            LanguagesReply, "Languages, versions, limits, isolation.", "ReplyHeaders"
        ),
        "CacheStats": _message(CacheStats, "Result cache counters.", "ReplyHeaders"),
        "PurgeRequest": _message(
            PurgeRequest, "Drop every cached result, or the one under key.", "RequestHeaders"
        ),
        "PurgeReply": _message(PurgeReply, "How many results were dropped.", "ReplyHeaders"),
        "RunStatusRequest": _message(
            RunStatusRequest, "Ask what became of a run.", "RequestHeaders"
        ),
        "RunStatus": _message(RunStatus, "Running, or finished with its result.", "ReplyHeaders"),
        "ErrorReply": _message(ErrorReply, "Any request failed.", "ErrorHeaders"),
        "OutputEvent": _message(OutputEvent, "compile, started, stdout or stderr.", None),
        "ResultEvent": _message(ResultEvent, "The last event: the complete result.", None),
        "StdinEvent": _message(StdinEvent, "A chunk of stdin.", None),
        "EofEvent": _message(EofEvent, "Close stdin.", None),
        "SignalEvent": _message(SignalEvent, "Send the program a signal.", None),
        "JudgeRequest": _message(
            JudgeRequest, "Judge a submission against test cases.", "RequestHeaders"
        ),
        "JudgeResult": _message(
            JudgeResult, "One result per case, the verdict and a summary.", "ReplyHeaders"
        ),
        "CaseEvent": _message(CaseEvent, "A judged case (seq is its index).", None),
        "JudgedEvent": _message(JudgedEvent, "The last event of a judge: its result.", None),
    }

    channels: dict[str, Any] = {}
    operations: dict[str, Any] = {}
    reply_messages: dict[str, Any] = {}

    tenant = {
        "description": (
            f"The tenant ({TENANT_PATTERN}); the NATS server lets only that tenant's "
            "login publish (or subscribe) here (docs/tenancy.md)."
        )
    }

    def request_reply(
        key: str,
        subject: str,
        service: str,
        summary: str,
        request: str,
        reply: str,
        per_tenant: bool = False,
        broadcast: bool = False,
    ) -> None:
        channels[key] = {
            "address": f"{prefix}.{subject}",
            "description": f"{summary} Served by {service}.",
            "messages": {request: _ref(f"#/components/messages/{request}")},
        }
        if per_tenant:
            channels[key]["parameters"] = {"tenant": tenant}
        for name in (reply, "ErrorReply"):
            reply_messages[name] = _ref(f"#/components/messages/{name}")
        operations[key] = {
            "action": "receive",
            "channel": _ref(f"#/channels/{key}"),
            "summary": summary,
            "tags": [{"name": service}],
            # A broadcast subject: each instance subscribes in a queue group of its own.
            "bindings": {
                "nats": {"bindingVersion": "0.1.0"}
                if broadcast
                else {"queue": "q", "bindingVersion": "0.1.0"}
            },
            "messages": [_ref(f"#/channels/{key}/messages/{request}")],
            "reply": {
                "channel": _ref("#/channels/reply"),
                "messages": [
                    _ref(f"#/channels/reply/messages/{reply}"),
                    _ref("#/channels/reply/messages/ErrorReply"),
                ],
            },
        }

    for subject in SUBJECTS:
        request_name = subject.request.__name__ if subject.request else "EmptyRequest"
        request_reply(
            subject.key,
            subject.suffix,
            subject.service.micro_name,
            subject.summary,
            request_name,
            subject.reply.__name__,
            broadcast=subject.broadcast,
        )
        if subject.per_tenant:
            request_reply(
                f"{subject.key}Tenant",
                f"{subject.suffix}.{{tenant}}",
                subject.service.micro_name,
                f"{subject.summary.rstrip('.')}, for one tenant: "
                + (
                    "only that tenant's executions are told."
                    if subject.broadcast
                    else "its run's live subjects are the tenant's."
                ),
                request_name,
                subject.reply.__name__,
                per_tenant=True,
                broadcast=subject.broadcast,
            )

    channels["reply"] = {
        "address": None,
        "description": "The requester's reply subject (a NATS inbox).",
        "messages": dict(sorted(reply_messages.items())),
    }
    execution_id = {
        "description": f"The request's execution_id ({EXECUTION_ID_PATTERN}).",
    }
    channels["output"] = {
        "address": output_subject(prefix, "{execution_id}"),
        "description": (
            "Live events of one execution with stream=true, numbered by seq from 0, "
            "encoded like the request; the last is the result. Published by dcodex-runner. "
            "A judge with stream=true publishes a case event per case (seq: the case's "
            "index, in the order the cases end), then a judged event (docs/judge.md)."
        ),
        "parameters": {"execution_id": execution_id},
        "messages": {name: _ref(f"#/components/messages/{name}") for name in OUTPUT_EVENTS},
    }
    channels["input"] = {
        "address": input_subject(prefix, "{execution_id}"),
        "description": (
            "Stdin chunks, EOF and signals for an execution with interactive=true. "
            "Listened to by dcodex-runner. One sent as a request is acknowledged with {} "
            "once applied; one whose seq the run has had is acknowledged, not applied again."
        ),
        "parameters": {"execution_id": execution_id},
        "messages": {
            name: _ref(f"#/components/messages/{name}")
            for name in ("StdinEvent", "EofEvent", "SignalEvent")
        },
    }
    channels["outputTenant"] = {
        **channels["output"],
        "address": output_subject(prefix, "{execution_id}", "{tenant}"),
        "description": "Live events of a tenant's execution, as on output.",
        "parameters": {"tenant": tenant, "execution_id": execution_id},
    }
    channels["inputTenant"] = {
        **channels["input"],
        "address": input_subject(prefix, "{execution_id}", "{tenant}"),
        "description": "Stdin, EOF and signals for a tenant's interactive execution.",
        "parameters": {"tenant": tenant, "execution_id": execution_id},
    }
    operations["publishOutput"] = {
        "action": "send",
        "channel": _ref("#/channels/output"),
        "summary": "Publish the live events of an execution.",
        "tags": [{"name": RUNNER.micro_name}],
        "messages": [_ref(f"#/channels/output/messages/{name}") for name in OUTPUT_EVENTS],
    }
    operations["receiveInput"] = {
        "action": "receive",
        "channel": _ref("#/channels/input"),
        "summary": "Feed an interactive execution.",
        "tags": [{"name": RUNNER.micro_name}],
        "messages": [
            _ref(f"#/channels/input/messages/{name}")
            for name in ("StdinEvent", "EofEvent", "SignalEvent")
        ],
    }

    return {
        "asyncapi": "3.0.0",
        "id": ID_BASE + ASYNCAPI_FILE,
        "info": {
            "title": "DCodeX",
            "version": CONTRACT_VERSION,
            "description": (
                "Sandboxed code execution over NATS. Every request/reply endpoint belongs "
                "to a NATS micro service (dcodex-cache, dcodex-runner, dcodex-compiler) "
                "with queue group q. Bodies are JSON, or msgpack with Content-Type: "
                f"{MSGPACK}. Subjects start with the configurable prefix `{prefix}`. "
                "Payload schemas are the JSON Schema (2020-12) files next to this one."
            ),
            "license": {"name": "MIT"},
            "tags": [{"name": name, "description": text} for name, text in services.items()],
        },
        "defaultContentType": JSON,
        "servers": {
            "local": {
                "host": "127.0.0.1:4222",
                "protocol": "nats",
                "description": "nats://127.0.0.1:4222, as started by `dcodex up`.",
            }
        },
        "channels": channels,
        "operations": operations,
        "components": {
            "schemas": {
                "RequestHeaders": _headers(reply=False),
                "ReplyHeaders": _headers(reply=True),
                "ErrorHeaders": _headers(reply=True, error=True),
            },
            "messages": messages,
        },
    }


def _dump(document: dict[str, Any]) -> str:
    return json.dumps(document, indent=2, sort_keys=True, ensure_ascii=False) + "\n"


def generate() -> dict[str, str]:
    """File name -> file text of every generated file."""
    files = {file_name(model): _dump(json_schema(model)) for model in MODELS}
    files[ASYNCAPI_FILE] = _dump(asyncapi(Settings().subject_prefix))
    return dict(sorted(files.items()))


def write(directory: Path) -> list[Path]:
    """Write every generated file into `directory` (made if missing); the paths written."""
    directory.mkdir(parents=True, exist_ok=True)
    written = []
    for name, text in generate().items():
        path = directory / name
        path.write_text(text, encoding="utf-8")
        written.append(path)
    return written


def stale(directory: Path) -> list[str]:
    """Names of files missing, different from the generated ones, or not generated."""
    files = generate()
    names = [
        name
        for name, text in files.items()
        if not (directory / name).is_file()
        or (directory / name).read_text(encoding="utf-8") != text
    ]
    if directory.is_dir():
        names += [path.name for path in directory.glob("*.json") if path.name not in files]
    return sorted(names)


@click.command()
@click.option(
    "--dir",
    "directory",
    type=click.Path(path_type=Path, file_okay=False),
    default=DEFAULT_DIR,
    show_default=True,
    help="where the schema files live",
)
@click.option("--check", is_flag=True, help="only list stale files; exit 1 if there are any")
def schemas(directory: Path, check: bool) -> None:
    """Write the JSON Schemas and the AsyncAPI document generated from the contract."""
    if check:
        names = stale(directory)
        for name in names:
            click.echo(str(directory / name))
        if names:
            click.echo(f"{len(names)} stale file(s): run `dcodex schemas`", err=True)
            click.get_current_context().exit(1)
        return
    for path in write(directory):
        click.echo(str(path))
