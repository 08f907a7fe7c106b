"""Metrics, logs and `$SRV.STATS` after real runs, on services of their own.

The three services run under their own subject prefix with metrics on free ports, so
the counters read here move only by this module's requests. Each test reads a counter
before and after its runs and checks the exact difference.
"""

from __future__ import annotations

import asyncio
import json
import re
import time
import urllib.error
import urllib.request
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
from prometheus_client.parser import text_string_to_metric_families

from dcodex.shared.bus.discovery import EndpointStats, discover
from dcodex.shared.client import DcodexClient
from dcodex.shared.contract import ExecutionResult
from dcodex.shared.errors import DcodexError
from tests.conftest import ServiceProcesses, free_port, metric, scrape_text, until

pytestmark = pytest.mark.bus

PREFIX = "obs"
MiB = 1024 * 1024


def probe(port: int, path: str) -> tuple[int, str]:
    """Status and body of GET `path` on a service's metrics port."""
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}{path}", timeout=10) as response:
            return response.status, response.read().decode()
    except urllib.error.HTTPError as exc:
        return exc.code, exc.read().decode()


def wait_ready(port: int, timeout: float = 60.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            if probe(port, "/readyz")[0] == 200:
                return
        except OSError:
            pass  # not listening yet
        time.sleep(0.1)
    raise TimeoutError(f"the service on port {port} was not ready within {timeout} s")


class Observed:
    """Compiler, runner and cache under one prefix, each with its metrics port."""

    def __init__(self, url: str, log_dir: Path, prefix: str, *cache_args: str) -> None:
        self.services = ServiceProcesses(url, log_dir, ("--subject-prefix", prefix))
        self.prefix = prefix
        self.ports: dict[str, int] = {}
        self.cache_args = cache_args

    def start(self, *names: str) -> None:
        for name in names:
            self.ports[name] = free_port()
            extra = self.cache_args if name == "cache" else ()
            self.services.start(name, "--metrics-port", str(self.ports[name]), *extra)
            wait_ready(self.ports[name])

    def metric(self, of: str, name: str, **labels: str) -> float:
        return metric(self.ports[of], name, **labels)

    def log_lines(self, service: str) -> list[dict[str, object]]:
        lines = self.services.log(service).splitlines()
        return [json.loads(line) for line in lines if line.startswith("{")]


@pytest.fixture(scope="module")
def observed(nats_url: str, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Observed]:
    stack = Observed(nats_url, tmp_path_factory.mktemp("observed"), PREFIX)
    try:
        stack.start("compiler", "runner", "cache")
        yield stack
    finally:
        stack.services.stop_all()


def unique(code: str, comment: str = "#") -> str:
    return f"{code}\n{comment} {uuid.uuid4().hex}\n"


async def execute(
    stack: Observed, language: str, code: str, request_id: str | None = None, **fields: object
) -> ExecutionResult:
    async with await DcodexClient.connect(stack.services.url, prefix=stack.prefix) as client:
        request = {"language": language, "code": code, **fields}
        return await client.execute(request, request_id=request_id)


def limit_hits(stack: Observed) -> dict[str, float]:
    limits = ("cpu_time", "wall_time", "memory", "output", "processes", "file_size")
    return {
        limit: stack.metric("runner", "dcodex_limit_hits_total", limit=limit) for limit in limits
    }


def moved(before: dict[str, float], after: dict[str, float]) -> dict[str, float]:
    return {key: after[key] - before[key] for key in before if after[key] != before[key]}


def settled(read: Callable[[], float], at_least: float, timeout: float = 5.0) -> float:
    """`read()` once it reaches `at_least` (or the timeout passes). A request is counted
    once its reply has gone: a scrape right after the reply may come first."""
    deadline = time.monotonic() + timeout
    while (value := read()) < at_least and time.monotonic() < deadline:
        time.sleep(0.02)
    return value


@pytest.mark.parametrize(
    ("code", "limits", "status", "limit"),
    [
        ("import time\ntime.sleep(10)", {"wall_time_s": 0.5}, "wall_time_limit", "wall_time"),
        ("while True:\n    pass", {"cpu_time_s": 0.5}, "cpu_time_limit", "cpu_time"),
        (
            "blocks = []\nwhile True:\n    blocks.append(b'x' * (8 * 1024 * 1024))",
            {"memory_bytes": 128 * MiB},
            "memory_limit",
            "memory",
        ),
        ("while True:\n    print('x' * 1000)", {"output_bytes": 2000}, "output_limit", "output"),
    ],
    ids=["wall_time", "cpu_time", "memory", "output"],
)
async def test_a_limit_verdict_moves_exactly_its_counters(
    observed: Observed, code: str, limits: dict[str, float], status: str, limit: str
) -> None:
    executions = {"language": "python", "status": status}
    runs_before = observed.metric("runner", "dcodex_executions_total", **executions)
    hits_before = limit_hits(observed)

    result = await execute(observed, "python", unique(code), limits=limits)

    assert result.status == status
    assert observed.metric("runner", "dcodex_executions_total", **executions) - runs_before == 1
    assert moved(hits_before, limit_hits(observed)) == {limit: 1}


async def test_python_runs_are_counted_by_how_they_started(observed: Observed) -> None:
    # Limits of their own: no warm sandbox takes them, the zygote forks them.
    before = {how: observed.metric("runner", "dcodex_sandbox_starts_total", how=how)
              for how in ("zygote", "exec")}  # fmt: skip
    for _ in range(3):
        result = await execute(observed, "python", unique("print(1)"), limits={"processes": 9})
        assert result.stdout == "1\n"
    started = await execute(observed, "bash", unique("echo 1"))
    assert started.stdout == "1\n"
    after = {how: observed.metric("runner", "dcodex_sandbox_starts_total", how=how)
             for how in ("zygote", "exec")}  # fmt: skip
    assert after["zygote"] - before["zygote"] >= 1  # the zygote may still have been starting
    assert after["exec"] - before["exec"] >= 1  # bash
    assert sum(after.values()) - sum(before.values()) == 4


async def test_a_fork_past_the_process_limit_counts_processes(observed: Observed) -> None:
    code = """
import os, time

try:
    while True:
        if os.fork() == 0:
            time.sleep(3)
            os._exit(0)
except OSError:
    print("refused")
"""
    before = limit_hits(observed)
    result = await execute(observed, "python", unique(code), limits={"processes": 8})
    assert result.stdout == "refused\n", result
    assert moved(before, limit_hits(observed)) == {"processes": 1}


async def test_a_write_past_the_file_size_limit_counts_file_size(observed: Observed) -> None:
    # The run's own process must die of SIGXFSZ (Python ignores it; a shell would only
    # report its child's death as exit code 153), so bash becomes `head`.
    code = "exec head -c 3000000 /dev/zero > big"
    before = limit_hits(observed)
    result = await execute(observed, "bash", unique(code), limits={"file_size_bytes": MiB})
    assert result.signal == 25, result  # SIGXFSZ
    assert moved(before, limit_hits(observed)) == {"file_size": 1}


async def test_a_cache_hit_is_counted_by_the_cache_and_never_reaches_the_runner(
    observed: Observed,
) -> None:
    lookups = ("hit", "miss", "coalesced", "bypass")

    def cache_counts() -> dict[str, float]:
        return {
            outcome: observed.metric("cache", "dcodex_cache_lookups_total", outcome=outcome)
            for outcome in lookups
        }

    before = cache_counts()
    runs_before = observed.metric("runner", "dcodex_executions_total")
    answered_before = observed.metric(
        "cache", "dcodex_request_duration_seconds_count", endpoint="execute"
    )

    code = unique("print('cache me')")
    first = await execute(observed, "python", code)
    second = await execute(observed, "python", code)

    assert (first.cache_hit, second.cache_hit) == (False, True)
    assert moved(before, cache_counts()) == {"hit": 1, "miss": 1}
    assert observed.metric("runner", "dcodex_executions_total") - runs_before == 1
    answered = settled(
        lambda: observed.metric(
            "cache", "dcodex_request_duration_seconds_count", endpoint="execute"
        ),
        answered_before + 2,
    )
    assert answered - answered_before == 2


async def test_a_compiled_run_counts_the_compile_and_the_artifact_lookups(
    observed: Observed,
) -> None:
    def counts() -> dict[str, float]:
        return {
            "compiles": observed.metric(
                "compiler", "dcodex_compiles_total", language="c", outcome="ok"
            ),
            "artifact_misses": observed.metric(
                "compiler", "dcodex_artifact_lookups_total", outcome="miss"
            ),
            "compiles_timed": observed.metric(
                "compiler", "dcodex_compile_duration_seconds_count", language="c"
            ),
            "runner_fetches": observed.metric(
                "runner", "dcodex_runner_artifact_lookups_total", outcome="miss"
            ),
        }

    before = counts()
    code = unique('#include <stdio.h>\nint main(void) { puts("hi"); return 0; }', "//")
    result = await execute(observed, "c", code, cache=False)
    assert result.status == "ok"
    # Compiled once; the binary came in the compile's reply: the runner fetched nothing.
    assert moved(before, counts()) == {"compiles": 1, "artifact_misses": 1, "compiles_timed": 1}


async def test_one_request_id_in_the_log_lines_of_all_three_services(observed: Observed) -> None:
    request_id = uuid.uuid4().hex
    code = unique('#include <stdio.h>\nint main(void) { puts("traced"); return 0; }', "//")
    result = await execute(observed, "c", code, request_id=request_id)
    assert result.status == "ok"

    expected = {"cache": "execute", "runner": "run", "compiler": "compile"}

    def traced(service: str) -> list[dict[str, object]]:
        lines = observed.log_lines(service)
        return [line for line in lines if line.get("request_id") == request_id]

    def summarised(service: str) -> bool:
        return any(line["event"] == "request" for line in traced(service))

    # A service logs a request's summary once its reply has gone: the reply may be first.
    await until(lambda: all(summarised(service) for service in expected), 10)
    for service, endpoint in expected.items():
        lines = traced(service)
        summaries = [line for line in lines if line["event"] == "request"]
        assert len(summaries) == 1, (service, lines)
        summary = summaries[0]
        assert summary["level"] == "info"
        assert summary["service"] == f"dcodex-{service}"
        assert summary["endpoint"] == endpoint
        assert summary["language"] == "c"
        assert summary["status"] == "ok"
        assert isinstance(summary["duration_ms"], float) and summary["instance"]
        if service != "compiler":
            assert summary["execution_id"] == result.execution_id


async def _endpoint_stats(url: str, service: str, subject: str) -> EndpointStats:
    async with await DcodexClient.connect(url) as client:
        for instance in await discover(client.nc, 0.5, service):
            for endpoint in instance.endpoints:
                if endpoint.subject == subject:
                    return endpoint
    raise AssertionError(f"no {service} answers $SRV.STATS for {subject}")


async def test_srv_stats_time_the_work_and_count_error_replies(observed: Observed) -> None:
    url, run_subject = observed.services.url, f"{PREFIX}.run"
    runner_before = await _endpoint_stats(url, "dcodex-runner", run_subject)
    cache_before = await _endpoint_stats(url, "dcodex-cache", f"{PREFIX}.execute")

    result = await execute(observed, "python", unique("import time\ntime.sleep(0.3)"))
    with pytest.raises(DcodexError) as refused:
        await execute(observed, "klingon", "Qapla'")
    assert refused.value.code == 404

    runner_after = await _endpoint_stats(url, "dcodex-runner", run_subject)
    cache_after = await _endpoint_stats(url, "dcodex-cache", f"{PREFIX}.execute")
    assert runner_after.num_requests - runner_before.num_requests == 1
    # The processing time covers the run itself (nats.micro alone would show ~0).
    total_ns = runner_after.average_processing_time * runner_after.num_requests
    assert total_ns - runner_before.average_processing_time * runner_before.num_requests >= (
        result.wall_time_ms * 1e6 * 0.99
    )
    assert cache_after.num_requests - cache_before.num_requests == 2
    assert cache_after.num_errors - cache_before.num_errors == 1
    assert cache_after.last_error is not None and cache_after.last_error.startswith("404: ")


async def test_error_replies_are_counted_by_code(observed: Observed) -> None:
    before = observed.metric("cache", "dcodex_requests_total", endpoint="execute", code="404")
    with pytest.raises(DcodexError):
        await execute(observed, "klingon", "Qapla'")
    after = settled(
        lambda: observed.metric("cache", "dcodex_requests_total", endpoint="execute", code="404"),
        before + 1,
    )
    assert after - before == 1


def test_health_and_readiness_of_running_services(observed: Observed) -> None:
    for port in observed.ports.values():
        assert probe(port, "/healthz") == (200, "ok\n")
        assert probe(port, "/readyz") == (200, "ready\n")


def test_metrics_show_the_configured_limits_and_the_toolchains(observed: Observed) -> None:
    assert observed.metric("runner", "dcodex_limit_cpu_time_seconds", bound="default") == 1.0
    assert observed.metric("runner", "dcodex_limit_cpu_time_seconds", bound="ceiling") == 10.0
    assert observed.metric("runner", "dcodex_limit_memory_bytes", bound="default") == 4 * 2**30
    assert observed.metric("runner", "dcodex_sandboxes_max") == 10
    assert observed.metric("runner", "dcodex_toolchain_info", language="python") == 1
    assert observed.metric("compiler", "dcodex_toolchain_info", language="c") == 1
    for service in ("cache", "runner", "compiler"):
        assert observed.metric(service, "dcodex_build_info", service=service) == 1
        assert observed.metric(service, "dcodex_nats_connected") == 1


def test_a_downstream_timeout_is_counted_by_subject(
    nats_url: str, tmp_path_factory: pytest.TempPathFactory
) -> None:
    """A cache that waits 1 s for a runner whose program sleeps 3 s."""
    prefix = "obsslow"
    stack = Observed(
        nats_url, tmp_path_factory.mktemp("slow"), prefix, "--request-timeout-seconds", "1"
    )
    try:
        stack.start("runner", "cache")
        subject = f"{prefix}.run"
        assert stack.metric("cache", "dcodex_downstream_timeouts_total", subject=subject) == 0
        code = unique("import time\ntime.sleep(3)")
        with pytest.raises(DcodexError) as timed_out:
            asyncio.run(execute(stack, "python", code, limits={"wall_time_s": 5}))
        assert timed_out.value.code == 504
        assert stack.metric("cache", "dcodex_downstream_timeouts_total", subject=subject) == 1
        timed_out_requests = settled(
            lambda: stack.metric("cache", "dcodex_requests_total", endpoint="execute", code="504"),
            1,
        )
        assert timed_out_requests == 1
        outcome = {"subject": subject, "outcome": "timeout"}
        assert stack.metric("cache", "dcodex_downstream_requests_total", **outcome) == 1
    finally:
        stack.services.stop_all()


DEPLOY = Path(__file__).resolve().parent.parent / "deploy"
# Sample names of each metric type, from its family name.
SUFFIXES = {
    "counter": ("_total", "_created"),
    "histogram": ("_bucket", "_sum", "_count", "_created"),
    "info": ("_info",),
    "gauge": ("",),
}


def exported_names(stack: Observed) -> set[str]:
    """Every sample name the three services export, labelled ones never observed included."""
    names: set[str] = set()
    for port in stack.ports.values():
        for family in text_string_to_metric_families(scrape_text(port)):
            names.update(family.name + suffix for suffix in SUFFIXES[family.type])
    return names


def used_names(text: str) -> set[str]:
    return set(re.findall(r"\bdcodex_[a-z0-9_]+", text))


def test_dashboard_and_alerts_use_only_exported_metrics(observed: Observed) -> None:
    exported = exported_names(observed)
    dashboard = json.loads((DEPLOY / "grafana" / "dcodex-dashboard.json").read_text())
    expressions = [
        target["expr"] for panel in dashboard["panels"] for target in panel.get("targets", [])
    ]
    assert len(expressions) >= 10
    alerts = (DEPLOY / "prometheus" / "alerts.yml").read_text()
    assert alerts.count("- alert:") == alerts.count("expr:") >= 3

    used = used_names("\n".join(expressions)) | used_names(alerts)
    assert used, "the dashboard and the rules name no DCodeX metric"
    assert used - exported == set()
