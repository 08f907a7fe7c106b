"""Service settings: flags, then `DCODEX_*` environment variables, then these defaults.

`Settings` is the single list of knobs. The CLI turns every field into a flag
(`--max-concurrent-sandboxes`) and an environment variable
(`DCODEX_MAX_CONCURRENT_SANDBOXES`), so the two can never drift apart.
"""

from __future__ import annotations

from pathlib import Path
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field

from dcodex.shared.bus.connect import DEFAULT_URL, ConnectOptions
from dcodex.shared.contract import EffectiveLimits
from dcodex.shared.errors import TOO_LARGE, DcodexError
from dcodex.shared.judge.plan import JudgeCaps
from dcodex.shared.sandbox.isolation import IsolationMode
from dcodex.shared.subjects import DEFAULT_PREFIX, Subject, input_subject, output_subject

ENV_PREFIX = "DCODEX_"
GiB = 1024**3
MiB = 1024**2
KiB = 1024


class Settings(BaseModel):
    model_config = ConfigDict(frozen=True)

    nats_url: str = Field(
        DEFAULT_URL, description="NATS server URL (several of a cluster: comma-separated)"
    )
    # How a service logs in: the same options (and DCODEX_NATS_* variables) as a client.
    nats_user: str | None = Field(None, description="NATS user name")
    nats_password: str | None = Field(None, description="NATS password")
    nats_token: str | None = Field(None, description="NATS token")
    nats_nkey: str | None = Field(None, description="file of an NKey seed to log in with")
    nats_creds: str | None = Field(None, description="file of NATS JWT user credentials")
    nats_tls_ca: str | None = Field(None, description="CA bundle of the NATS server's certificate")
    nats_tls_cert: str | None = Field(None, description="client certificate for NATS TLS")
    nats_tls_key: str | None = Field(None, description="key of the client certificate")
    nats_connect_timeout_seconds: float = Field(
        5.0, gt=0, description="how long the first connection may take"
    )
    subject_prefix: str = Field(DEFAULT_PREFIX, description="prefix of every DCodeX subject")

    # Per-run defaults and the ceilings a request may ask for.
    max_concurrent_sandboxes: int = Field(
        10, ge=1, le=1000, description="sandboxes one runner runs at once"
    )
    sandbox_cpu_time_limit_seconds: float = Field(1.0, gt=0, description="default CPU time")
    sandbox_wall_clock_timeout_seconds: float = Field(2.0, gt=0, description="default wall clock")
    sandbox_memory_limit_bytes: int = Field(4 * GiB, gt=0, description="default address space")
    sandbox_max_output_bytes: int = Field(10 * KiB, gt=0, description="default stdout+stderr cap")
    sandbox_max_processes: int = Field(64, ge=1, description="default process count")
    sandbox_max_file_size_bytes: int = Field(16 * MiB, ge=0, description="default file size cap")
    ceiling_cpu_time_seconds: float = Field(10.0, gt=0, description="most CPU a request may ask")
    ceiling_wall_clock_seconds: float = Field(30.0, gt=0, description="most wall a request may ask")
    ceiling_memory_bytes: int = Field(4 * GiB, gt=0, description="most memory a request may ask")
    ceiling_output_bytes: int = Field(256 * KiB, gt=0, description="most output a request may ask")
    ceiling_processes: int = Field(256, ge=1, description="most processes a request may ask")
    ceiling_file_size_bytes: int = Field(64 * MiB, ge=0, description="largest file a run may ask")
    max_code_bytes: int = Field(256 * KiB, gt=0, description="largest accepted source")
    max_stdin_bytes: int = Field(256 * KiB, gt=0, description="largest accepted stdin")

    # Judge mode (docs/judge.md): bounds of one judge request.
    judge_max_cases: int = Field(500, ge=1, description="most test cases in one judge request")
    judge_max_tests_bytes: int = Field(
        16 * MiB, gt=0, description="most bytes of stdin and expected output in one test set"
    )
    judge_max_files: int = Field(32, ge=0, description="most extra files in one judge request")
    judge_max_files_bytes: int = Field(
        512 * KiB, ge=0, description="most bytes of extra files in one judge request"
    )
    judge_checker_cpu_time_seconds: float = Field(
        5.0, gt=0, description="CPU time of one run of a checker program"
    )

    # Sandbox identity: each concurrent slot runs as uid/gid base+slot when root.
    sandbox_uid_base: int = Field(61000, ge=1000, description="first uid of the sandbox slots")
    isolation: IsolationMode = Field(
        "strict",
        description="sandbox layers: strict (all, or refuse to start), best (what the host "
        "offers; the default of `dcodex up`), rlimits (hosts without namespaces)",
    )
    sandbox_disk_bytes: int = Field(
        64 * MiB, ge=MiB, description="size of a run's only writable place (its dir and /tmp)"
    )
    warm_interpreters: int = Field(
        2,
        ge=0,
        le=64,
        description="Python sandboxes a runner keeps started ahead of their runs, besides "
        "--max-concurrent-sandboxes (needs namespaces); 0 turns them off",
    )
    warm_native: int = Field(
        2,
        ge=0,
        le=64,
        description="sandboxes for compiled C and C++ programs a runner keeps set up ahead "
        "of their runs, besides --max-concurrent-sandboxes (needs namespaces); 0 turns them off",
    )
    warm_compiles: int = Field(
        2,
        ge=0,
        le=64,
        description="sandboxes for C and C++ compiles (without a precompiled header) a compiler "
        "keeps set up ahead of them (needs namespaces); 0 turns them off",
    )
    python_zygote: bool = Field(
        True,
        description="fork Python runs from a pre-initialised interpreter into fresh "
        "sandboxes, every layer on (needs namespaces); --no-python-zygote starts each cold",
    )
    sandbox_cpu_cores: float = Field(
        1.0,
        ge=0,
        description="CPUs one run (or compile) may use at once, by the kernel's CPU bandwidth "
        "control (needs the cgroup cpu controller; 0: no cap)",
    )
    max_queued_executions: int = Field(
        100, ge=0, description="runs that may wait for a sandbox; past it: 503 overloaded"
    )

    # Compiler.
    compile_timeout_seconds: float = Field(30.0, gt=0, description="wall clock of one compile")
    compile_memory_limit_bytes: int = Field(2 * GiB, gt=0, description="address space of a compile")
    max_compile_output_bytes: int = Field(64 * KiB, gt=0, description="diagnostics kept")
    runner_artifact_cache_bytes: int = Field(
        256 * MiB, ge=0, description="artifacts a runner keeps in memory"
    )
    max_artifact_bytes: int = Field(64 * MiB, gt=0, description="largest binary stored")
    precompiled_headers: int = Field(
        8, ge=0, description="C++ precompiled headers a compiler keeps; 0 turns them off"
    )
    languages_file: Path | None = Field(
        None, description="a TOML file of languages that add to or replace the shipped ones"
    )

    # Cache and timeouts between services.
    cache_ttl_seconds: float = Field(3600, gt=0, description="how long results stay cached")
    languages_refresh_seconds: float = Field(
        30.0, gt=0, description="how often the cache re-reads the runners' languages and limits"
    )
    cache_max_bytes: int = Field(256 * MiB, gt=0, description="byte bound of the result bucket")
    cache_max_result_bytes: int = Field(
        512 * KiB, gt=0, description="largest stored result; bigger ones are not cached"
    )
    cache_memory_bytes: int = Field(
        32 * MiB,
        ge=0,
        description="results each cache replica also keeps in memory, for hits without a "
        "JetStream read; 0 turns the memory tier off",
    )
    cache_run_ahead: bool = Field(
        True,
        description="once a cache replica's lookups keep missing, send a miss's run with "
        "its lookup rather than after it; --no-cache-run-ahead waits for the lookup",
    )
    request_timeout_seconds: float = Field(
        90.0, gt=0, description="how long the cache waits for a runner"
    )
    cache_lease_seconds: float | None = Field(
        None,
        gt=0,
        description="how long a cache replica's hold on a run lasts unless renewed (it renews "
        "it every third of that while the run goes on; a dead replica's hold ends within "
        "it); default: 10",
    )

    metrics_port: int | None = Field(None, ge=0, description="Prometheus port; 0 turns it off")
    shutdown_grace_seconds: float = Field(
        10.0, ge=0, description="on SIGTERM, how long requests under way may take to finish"
    )
    log_level: Literal["debug", "info", "warning", "error"] = Field("info", description="log level")
    log_format: Literal["json", "console"] = Field("json", description="log line format")

    def default_limits(self) -> EffectiveLimits:
        return EffectiveLimits(
            cpu_time_s=self.sandbox_cpu_time_limit_seconds,
            wall_time_s=self.sandbox_wall_clock_timeout_seconds,
            memory_bytes=self.sandbox_memory_limit_bytes,
            output_bytes=self.sandbox_max_output_bytes,
            processes=self.sandbox_max_processes,
            file_size_bytes=self.sandbox_max_file_size_bytes,
        )

    def ceiling_limits(self) -> EffectiveLimits:
        return EffectiveLimits(
            cpu_time_s=self.ceiling_cpu_time_seconds,
            wall_time_s=self.ceiling_wall_clock_seconds,
            memory_bytes=self.ceiling_memory_bytes,
            output_bytes=self.ceiling_output_bytes,
            processes=self.ceiling_processes,
            file_size_bytes=self.ceiling_file_size_bytes,
        )

    def judge_caps(self) -> JudgeCaps:
        return JudgeCaps(
            max_cases=self.judge_max_cases,
            max_tests_bytes=self.judge_max_tests_bytes,
            max_files=self.judge_max_files,
            max_files_bytes=self.judge_max_files_bytes,
            max_code_bytes=self.max_code_bytes,
            max_stdin_bytes=self.max_stdin_bytes,
        )

    def checker_limits(self) -> EffectiveLimits:
        """A checker program's limits: the defaults, with its own CPU time (and wall clock)."""
        cpu = min(self.judge_checker_cpu_time_seconds, self.ceiling_cpu_time_seconds)
        return self.default_limits().model_copy(
            update={"cpu_time_s": cpu, "wall_time_s": min(2 * cpu, self.ceiling_wall_clock_seconds)}
        )

    def subject(self, which: Subject) -> str:
        return which.on(self.subject_prefix)

    def output_subject(self, execution_id: str, tenant: str | None = None) -> str:
        return output_subject(self.subject_prefix, execution_id, tenant)

    def input_subject(self, execution_id: str, tenant: str | None = None) -> str:
        return input_subject(self.subject_prefix, execution_id, tenant)

    def connect_options(self) -> ConnectOptions:
        """How this service logs in to NATS: every option a client has, from settings."""
        return ConnectOptions(
            url=self.nats_url,
            user=self.nats_user,
            password=self.nats_password,
            token=self.nats_token,
            nkey=self.nats_nkey,
            creds=self.nats_creds,
            tls_ca=self.nats_tls_ca,
            tls_cert=self.nats_tls_cert,
            tls_key=self.nats_tls_key,
            connect_timeout_s=self.nats_connect_timeout_seconds,
        )


def env_var(field_name: str) -> str:
    return ENV_PREFIX + field_name.upper()


def flag(field_name: str) -> str:
    return "--" + field_name.replace("_", "-")


def check_sizes(code: str, stdin: str, settings: Settings) -> None:
    """413 naming the field when the source or stdin is over the server's cap."""
    for field, text, cap in (
        ("code", code, settings.max_code_bytes),
        ("stdin", stdin, settings.max_stdin_bytes),
    ):
        if len(text.encode()) > cap:
            raise DcodexError(TOO_LARGE, f"{field} is larger than {cap} bytes", field)
