"""The public contract: every message on the bus, as pydantic models (docs/protocol.md).

Field names here are the wire names. Requests forbid unknown fields, so a typo such as
`limits.cpu_time` is a 400 naming it rather than a silently ignored limit.
"""

from __future__ import annotations

from typing import Annotated, Literal

from pydantic import AfterValidator, BaseModel, ConfigDict, Field

from dcodex.shared.errors import BAD_REQUEST, DcodexError, unknown_language

EXECUTION_ID_PATTERN = r"^[A-Za-z0-9_-]{1,64}$"

Status = Literal[
    "ok",
    "runtime_error",
    "signaled",
    "compile_error",
    "cpu_time_limit",
    "wall_time_limit",
    "memory_limit",
    "output_limit",
    "internal_error",
]
STATUSES: tuple[Status, ...] = Status.__args__  # type: ignore[attr-defined]
# Results that say more about the moment than about the program are never cached.
UNCACHEABLE_STATUSES: frozenset[Status] = frozenset({"wall_time_limit", "internal_error"})
# The sandbox layers that keep one run from reaching the next (its processes, files,
# IPC): a result produced without every one of them is never cached (docs/security.md).
RUN_SEPARATING_LAYERS: frozenset[str] = frozenset({"pid", "mount", "ipc", "tmpfs_workdir"})


class Request(BaseModel):
    """Base of messages a client sends: strict types, no unknown fields."""

    model_config = ConfigDict(extra="forbid", strict=True)


class Reply(BaseModel):
    """Base of messages a service sends; tolerant so old clients read new replies."""

    model_config = ConfigDict(extra="ignore")


def _normalise_language(value: str) -> str:
    if not value.strip():
        raise ValueError("language must not be empty")
    return value.strip().lower()


LanguageName = Annotated[str, AfterValidator(_normalise_language)]
PositiveSeconds = Annotated[float, Field(gt=0)]
PositiveBytes = Annotated[int, Field(gt=0)]


class Limits(Request):
    """Per-request limits; any left out take the server default."""

    cpu_time_s: PositiveSeconds | None = Field(None, description="CPU seconds (user+system)")
    wall_time_s: PositiveSeconds | None = Field(None, description="wall-clock seconds")
    memory_bytes: PositiveBytes | None = Field(None, description="address space in bytes")
    output_bytes: PositiveBytes | None = Field(None, description="stdout+stderr in bytes")
    processes: Annotated[int, Field(ge=1)] | None = Field(None, description="processes")
    file_size_bytes: Annotated[int, Field(ge=0)] | None = Field(
        None, description="largest file the program may write"
    )


class EffectiveLimits(Reply):
    """Limits with every value resolved: what a run is really held to."""

    cpu_time_s: float
    wall_time_s: float
    memory_bytes: int
    output_bytes: int
    processes: int
    file_size_bytes: int

    def apply(self, requested: Limits, ceilings: EffectiveLimits) -> EffectiveLimits:
        """These defaults overridden by `requested`, each bounded by `ceilings` (else 400)."""
        values = self.model_dump()
        for name, value in requested.model_dump(exclude_none=True).items():
            ceiling = getattr(ceilings, name)
            if value > ceiling:
                raise DcodexError(
                    BAD_REQUEST,
                    f"limits.{name} is {value}, above the server's ceiling of {ceiling}",
                    f"limits.{name}",
                )
            values[name] = value
        return EffectiveLimits(**values)


class ExecuteRequest(Request):
    """`dcodex.execute` and `dcodex.run` (docs/protocol.md)."""

    language: LanguageName = Field(description="c, cpp (c++, cxx), python (py, python3); any case")
    code: str = Field(description="source text")
    stdin: str = ""
    args: list[str] = Field(default_factory=list)
    limits: Limits = Field(default_factory=Limits)
    execution_id: str | None = Field(None, pattern=EXECUTION_ID_PATTERN)
    stream: bool = False
    interactive: bool = False
    cache: bool = True
    std: str | None = Field(None, description="language standard, e.g. c++20 (compiled only)")
    optimization: str | None = Field(None, description="optimisation level, e.g. O3")


class ExecutionResult(Reply):
    """The result of one execution (docs/protocol.md)."""

    execution_id: str
    status: Status
    exit_code: int | None = None
    signal: int | None = None
    stdout: str = ""
    stderr: str = ""
    compile_output: str = ""
    output_truncated: bool = False
    wall_clock_timeout: bool = False
    cpu_time_ms: float = 0.0
    wall_time_ms: float = 0.0
    compile_time_ms: float | None = None
    peak_memory_bytes: int = 0
    cache_hit: bool = False
    language: str
    language_version: str = ""
    cache_key: str | None = Field(
        None, description="the request's key in the result cache; null when it bypassed the cache"
    )
    isolation: list[str] = Field(
        default_factory=list,
        description="the sandbox layers the run had (docs/security.md); a result produced "
        "without pid, mount, ipc and tmpfs_workdir isolation is never cached",
    )

    def separated_from_other_runs(self) -> bool:
        return set(self.isolation) >= RUN_SEPARATING_LAYERS


class JudgeFile(Request):
    """An extra file put read-only in the working directory of the program (and its compile)."""

    name: str = Field(description="a plain file name: no `/`, not `.` or `..`, no NUL")
    content: str = Field(description="the file's text, or its bytes in base64")
    encoding: Literal["utf-8", "base64"] = "utf-8"


class CompileRequest(Request):
    """`dcodex.compile`: compile only."""

    language: LanguageName
    code: str
    std: str | None = Field(None, description="language standard, e.g. c++20")
    optimization: str | None = Field(None, description="optimisation level, e.g. O3")
    files: list[JudgeFile] = Field(
        default_factory=list, description="extra files beside the source (headers, modules)"
    )
    compile_id: str | None = Field(
        None,
        pattern=EXECUTION_ID_PATTERN,
        description="names this compile for dcodex.status.compile while it runs",
    )


class ArtifactRef(Reply):
    """Where a compiled program lies in the Object Store."""

    bucket: str
    name: str = Field(description="object name: the compile digest")
    size: int


class CompileResult(Reply):
    status: Literal["ok", "compile_error"]
    language: str
    language_version: str
    digest: str = Field(description="SHA-256 of language, toolchain, flags and source")
    compile_output: str = ""
    compile_time_ms: float | None = Field(None, description="null when the artifact was reused")
    artifact: ArtifactRef | None = None
    cached: bool = Field(False, description="the artifact was found, not compiled")
    binary: bytes | None = Field(
        None,
        description="the program just compiled, when small enough to travel in the reply "
        "(MessagePack replies only): the runner then needs no Object Store read",
    )


class LanguageInfo(Reply):
    id: str
    aliases: list[str]
    version: str
    compiled: bool
    extensions: list[str] = Field(default_factory=list)
    std: list[str] = Field(default_factory=list, description="the `std` choices")
    default_std: str | None = None
    optimization: list[str] = Field(default_factory=list, description="the `optimization` choices")
    default_optimization: str | None = None


class LimitsInfo(Reply):
    defaults: EffectiveLimits
    ceilings: EffectiveLimits


class LanguagesReply(Reply):
    """`dcodex.languages`."""

    languages: list[LanguageInfo]
    limits: LimitsInfo
    isolation: list[str]
    max_code_bytes: int
    max_stdin_bytes: int

    def language(self, name: str) -> LanguageInfo:
        """The language a request names (id or alias, normalised); else 404."""
        for language in self.languages:
            if name == language.id or name in language.aliases:
                return language
        raise unknown_language(
            name, (n for lang in self.languages for n in (lang.id, *lang.aliases))
        )


class CacheStats(Reply):
    """`dcodex.cache.stats`."""

    entries: int
    bytes: int
    hits: int
    misses: int
    coalesced: int
    passthrough: int = Field(0, description="requests run while the result bucket was unavailable")
    replicas: int = Field(1, description="cache replicas whose counts are summed here")


class PurgeRequest(Request):
    """`dcodex.cache.purge`: all results, or the one under `key`."""

    key: str | None = Field(
        None,
        pattern=r"^([A-Za-z0-9_-]{1,64}\.)?[0-9a-f]{64}$",
        description="a cache key: a SHA-256 hex digest, a tenant's after its tenant and a dot",
    )


class PurgeReply(Reply):
    purged: int


class RunStatusRequest(Request):
    """`dcodex.status.run`: what became of a run, asked of every runner at once."""

    execution_id: str = Field(pattern=EXECUTION_ID_PATTERN)
    tenant: str | None = Field(
        None,
        pattern=EXECUTION_ID_PATTERN,
        description=(
            "the tenant whose run it is (the services ask, on dcodex.status.run); on a "
            "tenant's status subject the tenant is the subject's, and another gets silence"
        ),
    )


class RunStatus(Reply):
    """The answer of the runner that has the run; runners that don't know it stay silent.

    `running` while it is queued, compiling or running; `finished` with its result for
    a while after it ended (a reply lost in a NATS restart can be fetched again).
    """

    execution_id: str
    state: Literal["running", "finished"]
    result: ExecutionResult | None = None


class ErrorDetail(Reply):
    code: int
    message: str
    field: str | None = None


class ErrorReply(Reply):
    """The body of every error reply (docs/protocol.md)."""

    error: ErrorDetail


# Live events on `dcodex.output.<execution_id>` (docs/protocol.md, live events).
class OutputEvent(Reply):
    seq: int
    type: Literal["compile", "started", "stdout", "stderr"]
    data: str = ""


class ResultEvent(Reply):
    seq: int
    type: Literal["result"] = "result"
    result: ExecutionResult


# Input of an interactive run on `dcodex.input.<execution_id>`.
class InputMessage(Request):
    """Base of the input events; `seq` makes sending one again harmless."""

    seq: Annotated[int, Field(ge=1)] | None = Field(
        None,
        description="1, 2, 3... per run: an event whose seq the run has had is acknowledged "
        "and not applied again, so a client may send it again when no acknowledgement came",
    )


class StdinEvent(InputMessage):
    type: Literal["stdin"]
    data: str


class EofEvent(InputMessage):
    type: Literal["eof"]


class SignalEvent(InputMessage):
    type: Literal["signal"]
    signal: Literal["SIGINT", "SIGTERM", "SIGKILL"]


# Judge mode (docs/judge.md): one submission, many test cases, one verdict per case.
CheckerType = Literal["exact", "lines", "tokens", "float", "program"]
# A case's verdict: a run that did not end `ok` keeps its status; one that did is
# compared (`accepted`...), or stays `ok` when there is nothing to compare it with.
Verdict = Literal[
    "ok",
    "accepted",
    "wrong_answer",
    "presentation_error",
    "checker_error",
    "skipped",
    "runtime_error",
    "signaled",
    "compile_error",
    "cpu_time_limit",
    "wall_time_limit",
    "memory_limit",
    "output_limit",
    "internal_error",
]
VERDICTS: tuple[Verdict, ...] = Verdict.__args__  # type: ignore[attr-defined]
# Verdicts that pass a case; every other one (but `skipped`) fails it.
PASSING_VERDICTS: frozenset[Verdict] = frozenset({"ok", "accepted"})


class Checker(Request):
    """How a case's output is compared with its expected output (docs/judge.md, checkers)."""

    type: CheckerType = "lines"
    abs_epsilon: Annotated[float, Field(ge=0)] | None = Field(
        None, description="float: largest absolute difference accepted (default 1e-6)"
    )
    rel_epsilon: Annotated[float, Field(ge=0)] | None = Field(
        None, description="float: largest relative difference accepted (default 1e-6)"
    )
    language: LanguageName | None = Field(None, description="program: the checker's language")
    code: str | None = Field(None, description="program: the checker's source (testlib convention)")


class TestCase(Request):
    """One case: its input and what it should print."""

    __test__ = False  # not a pytest class

    name: str | None = Field(
        None, max_length=128, description="shown in results; default its number"
    )
    stdin: str = ""
    args: list[str] = Field(default_factory=list)
    expected_output: str | None = Field(None, description="compared by the checker when given")
    limits: Limits = Field(
        default_factory=Limits, description="over the request's limits, under the server's ceilings"
    )


class JudgeRequest(Request):
    """`dcodex.judge` and `dcodex.judge.run` (docs/judge.md)."""

    language: LanguageName
    code: str = Field(description="source text of the submission")
    tests: list[TestCase] = Field(description="the test set, judged in this order")
    limits: Limits = Field(default_factory=Limits, description="every case's limits")
    checker: Checker = Field(default_factory=Checker)
    files: list[JudgeFile] = Field(default_factory=list)
    stop_on_first_failure: bool = False
    std: str | None = None
    optimization: str | None = None
    execution_id: str | None = Field(None, pattern=EXECUTION_ID_PATTERN)
    stream: bool = Field(False, description="publish a `case` event per case as it ends")
    cache: bool = True
    only: list[Annotated[int, Field(ge=0)]] | None = Field(
        None,
        description="run only these case indices, the others come back `skipped`; set by the "
        "cache for the cases it does not hold (the caller then publishes the final event)",
    )


class CaseResult(Reply):
    """One case's outcome: the fields of an execution result, plus the verdict."""

    index: int
    name: str
    verdict: Verdict
    status: Status | None = Field(None, description="the run's status; null when skipped")
    checker_message: str = ""
    exit_code: int | None = None
    signal: int | None = None
    stdout: str = ""
    stderr: str = ""
    output_truncated: bool = False
    wall_clock_timeout: bool = False
    cpu_time_ms: float = 0.0
    wall_time_ms: float = 0.0
    peak_memory_bytes: int = 0
    cache_hit: bool = False


class JudgeSummary(Reply):
    total: int
    passed: int
    failed: int
    skipped: int
    checker_errors: int = Field(0, description="cases a checker could not judge")
    first_failure: int | None = Field(None, description="index of the first failed case")
    cpu_time_ms: float = 0.0
    wall_time_ms: float = Field(0.0, description="sum of the cases' wall times")
    slowest_case: int | None = None
    slowest_wall_time_ms: float = 0.0
    peak_memory_bytes: int = 0
    cache_hits: int = 0


class JudgeResult(Reply):
    """The reply of `dcodex.judge` (docs/judge.md)."""

    execution_id: str
    status: Literal["ok", "compile_error", "checker_error"] = Field(
        description="compile_error: the submission did not compile; checker_error: the "
        "checker did not; ok: the cases ran (their verdicts say how)"
    )
    verdict: Verdict = Field(
        description="accepted/ok when every case passed, else the first failure's"
    )
    language: str
    language_version: str = ""
    compile_output: str = ""
    compile_time_ms: float | None = None
    checker_compile_output: str = ""
    cases: list[CaseResult]
    summary: JudgeSummary
    isolation: list[str] = Field(
        default_factory=list,
        description="the sandbox layers the cases ran with (docs/security.md); cases run "
        "without pid, mount, ipc and tmpfs_workdir isolation are never cached",
    )

    def separated_from_other_runs(self) -> bool:
        return set(self.isolation) >= RUN_SEPARATING_LAYERS


# Live events of a streamed judge on `dcodex.output.<execution_id>`: `seq` is the case's index.
class CaseEvent(Reply):
    seq: int
    type: Literal["case"] = "case"
    case: CaseResult


class JudgedEvent(Reply):
    seq: int = Field(description="the number of cases: after every case event")
    type: Literal["judged"] = "judged"
    result: JudgeResult
