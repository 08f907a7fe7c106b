"""The one table of DCodeX's services and subjects.

Every subject is `<prefix>.<suffix>` (prefix `dcodex` by default). The services, the
client, the CLI and the AsyncAPI generator all read this table, so a subject or a
service is named in exactly one place.
"""

from __future__ import annotations

from dataclasses import dataclass

from pydantic import BaseModel

from dcodex.shared.contract import (
    CacheStats,
    CompileRequest,
    CompileResult,
    ExecuteRequest,
    ExecutionResult,
    JudgeRequest,
    JudgeResult,
    LanguagesReply,
    PurgeReply,
    PurgeRequest,
    RunStatus,
    RunStatusRequest,
)

DEFAULT_PREFIX = "dcodex"


@dataclass(frozen=True)
class ServiceInfo:
    """One of the services: its short name (`dcodex service NAME`), what it does, and the
    port of its /metrics, /healthz and /readyz when `--metrics-port` is not given."""

    name: str
    summary: str
    metrics_port: int

    @property
    def micro_name(self) -> str:
        """Its NATS micro service name, as `$SRV.INFO` and `dcodex bus ping` show it."""
        return f"dcodex-{self.name}"


COMPILER = ServiceInfo("compiler", "Compiles; artifacts go to the Object Store.", 9103)
RUNNER = ServiceInfo("runner", "Runs programs in sandboxes; publishes live events.", 9102)
CACHE = ServiceInfo("cache", "Read-through result cache, the front door.", 9101)

# In start order: each service needs the one before it.
SERVICES: tuple[ServiceInfo, ...] = (COMPILER, RUNNER, CACHE)


@dataclass(frozen=True)
class Subject:
    """A request-reply subject: who serves it, and the models of its request and reply.

    `request` is None for subjects that take an empty body (or `{}`).
    """

    key: str  # the AsyncAPI channel and operation id
    suffix: str  # after the prefix
    endpoint: str  # the micro endpoint's name
    service: ServiceInfo
    summary: str
    request: type[BaseModel] | None
    reply: type[BaseModel]
    # Also served per tenant on `<prefix>.<suffix>.<tenant>` (docs/tenancy.md): the
    # subjects that start runs, whose live subjects then belong to that tenant, and the
    # status subjects that watch them (answering only for that tenant's executions).
    per_tenant: bool = False
    # Heard by every instance of the service (not one of a queue group); only the one
    # concerned answers, the others stay silent.
    broadcast: bool = False

    def on(self, prefix: str) -> str:
        return f"{prefix}.{self.suffix}"

    def for_tenant(self, prefix: str, tenant: str | None) -> str:
        """The subject a tenant sends to (the plain one without a tenant)."""
        return self.on(prefix) if tenant is None else f"{self.on(prefix)}.{tenant}"

    @property
    def tenant_endpoint(self) -> str:
        """The micro endpoint name of the per-tenant subjects `<prefix>.<suffix>.*`."""
        return f"{self.endpoint}-tenant"


EXECUTE = Subject(
    "execute",
    "execute",
    "execute",
    CACHE,
    "Execute with the result cache (the normal entry).",
    ExecuteRequest,
    ExecutionResult,
    per_tenant=True,
)
EXECUTE_STATUS = Subject(
    "executeStatus",
    "status.execute",
    "status",
    CACHE,
    "What became of an execution (every cache replica hears it; the one that has it answers).",
    RunStatusRequest,
    RunStatus,
    per_tenant=True,
    broadcast=True,
)
RUN = Subject(
    "run",
    "run",
    "run",
    RUNNER,
    "Execute, bypassing the cache.",
    ExecuteRequest,
    ExecutionResult,
    per_tenant=True,
)
RUN_STATUS = Subject(
    "runStatus",
    "status.run",
    "status",
    RUNNER,
    "What became of a run (every runner hears it; the one that has it answers).",
    RunStatusRequest,
    RunStatus,
    per_tenant=True,
    broadcast=True,
)
COMPILE = Subject(
    "compile",
    "compile",
    "compile",
    COMPILER,
    "Compile only: artifact reference and diagnostics.",
    CompileRequest,
    CompileResult,
)
COMPILE_STATUS = Subject(
    "compileStatus",
    "status.compile",
    "status",
    COMPILER,
    "Whether a compile (by compile_id) is under way (every compiler hears it; the one "
    "compiling it answers).",
    RunStatusRequest,
    RunStatus,
    broadcast=True,
)
LANGUAGES = Subject(
    "languages",
    "languages",
    "languages",
    RUNNER,
    "Languages, aliases, versions, default and maximum limits.",
    None,
    LanguagesReply,
)
CACHE_STATS = Subject(
    "cacheStats",
    "cache.stats",
    "stats",
    CACHE,
    "Entries, bytes, hits, misses, coalesced.",
    None,
    CacheStats,
)
CACHE_PURGE = Subject(
    "cachePurge",
    "cache.purge",
    "purge",
    CACHE,
    "Drop all cached results (or one key).",
    PurgeRequest,
    PurgeReply,
)
CACHE_FORGET = Subject(
    "cacheForget",
    "cache.forget",
    "forget",
    CACHE,
    "Drop results from every cache replica's memory (sent by the replica that purges; "
    "every replica hears it and answers).",
    PurgeRequest,
    PurgeReply,
    broadcast=True,
)

JUDGE = Subject(
    "judge",
    "judge",
    "judge",
    CACHE,
    "Judge a submission against test cases, with per-case results cached (docs/judge.md).",
    JudgeRequest,
    JudgeResult,
)
JUDGE_RUN = Subject(
    "judgeRun",
    "judge.run",
    "judge_run",
    RUNNER,
    "Judge, bypassing the cache: compile once, run the cases in parallel.",
    JudgeRequest,
    JudgeResult,
)

SUBJECTS: tuple[Subject, ...] = (
    EXECUTE,
    EXECUTE_STATUS,
    RUN,
    RUN_STATUS,
    COMPILE,
    COMPILE_STATUS,
    LANGUAGES,
    CACHE_STATS,
    CACHE_PURGE,
    CACHE_FORGET,
    JUDGE,
    JUDGE_RUN,
)

# Per-execution subjects: `<prefix>.output.<execution_id>` carries the live events of a
# streamed run (published by the runner, or replayed by the cache);
# `<prefix>.input.<execution_id>` the stdin, EOF and signals of an interactive run.
# A run asked for on a tenant's subject has them under the tenant:
# `<prefix>.output.<tenant>.<execution_id>`, which only that tenant may read
# (docs/tenancy.md).
OUTPUT = "output"
INPUT = "input"

# A tenant is one subject token (it is also the tenant's inbox prefix `_INBOX_<tenant>`).
TENANT_PATTERN = r"^[A-Za-z0-9_-]{1,64}$"


def execution_subjects(prefix: str, key: str, tenant: str | None = None) -> tuple[str, str]:
    """Where a client asks for an execution (`key`: "execute" or "run") and where it
    watches it (docs/reliability.md): a tenant's own subjects when it has one."""
    entry, status = {EXECUTE.key: (EXECUTE, EXECUTE_STATUS), RUN.key: (RUN, RUN_STATUS)}[key]
    return entry.for_tenant(prefix, tenant), status.for_tenant(prefix, tenant)


def output_subject(prefix: str, execution_id: str, tenant: str | None = None) -> str:
    return f"{prefix}.{OUTPUT}.{_owned(tenant, execution_id)}"


def input_subject(prefix: str, execution_id: str, tenant: str | None = None) -> str:
    return f"{prefix}.{INPUT}.{_owned(tenant, execution_id)}"


def _owned(tenant: str | None, execution_id: str) -> str:
    return execution_id if tenant is None else f"{tenant}.{execution_id}"


def inbox_prefix(tenant: str) -> str:
    """Where a tenant's replies arrive: only that tenant may subscribe under it."""
    return f"_INBOX_{tenant}"


def serving(suffix: str) -> ServiceInfo | None:
    """The service that answers `<prefix>.<suffix>`, for "no ... is reachable" messages."""
    for subject in SUBJECTS:
        if subject.suffix == suffix or subject.suffix.startswith(suffix + "."):
            return subject.service
    return None
