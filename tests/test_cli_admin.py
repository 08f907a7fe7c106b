"""`dcodex bus ping | stats | cache purge | languages` as a user runs them."""

from __future__ import annotations

import asyncio
import re
import time
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest

from dcodex.shared.client import DcodexClient
from dcodex.shared.version import version
from tests.conftest import ServiceProcesses
from tests.test_cli import (
    HELLO,
    NOWHERE,
    assert_no_traceback,
    bus,
    flat,
    json_documents,
    shown,
    table_rows,
    unique_program,
)

pytestmark = pytest.mark.bus

DCODEX_SERVICES = {"dcodex-cache", "dcodex-runner", "dcodex-compiler"}


@pytest.fixture
def second_runner(stack: ServiceProcesses, tmp_path: Path) -> Iterator[ServiceProcesses]:
    """One more runner beside the session's stack (same subjects, so it shares the load)."""
    extra = ServiceProcesses(stack.url, tmp_path)
    extra.start("runner")
    try:
        # The stack's runner answers $SRV.PING by the same name: wait for two of them.
        for _ in range(300):
            if asyncio.run(runners_answering(stack.url)) >= 2:
                break
            time.sleep(0.1)
        yield extra
    finally:
        extra.stop_all()


async def runners_answering(url: str) -> int:
    async with await DcodexClient.connect(url) as client:
        return sum(a["name"] == "dcodex-runner" for a in await client.ping(wait_s=0.3))


def dcodex_instances(stdout: str) -> list[dict[str, object]]:
    return [d for d in json_documents(stdout) if str(d.get("name", "")).startswith("dcodex-")]


def test_ping_lists_every_instance_with_version_and_uptime(
    stack: ServiceProcesses, second_runner: ServiceProcesses
) -> None:
    completed = bus(stack.url, "ping", "--json")
    assert completed.returncode == 0, shown(completed)
    instances = dcodex_instances(completed.stdout)
    assert {i["name"] for i in instances} >= DCODEX_SERVICES
    runners = [i for i in instances if i["name"] == "dcodex-runner"]
    assert len(runners) >= 2 and len({r["id"] for r in runners}) == len(runners), runners
    for instance in instances:
        assert instance["version"] == version(), instance
        uptime = instance["uptime_s"]
        assert isinstance(uptime, float) and uptime >= 0, instance
    cache = next(i for i in instances if i["name"] == "dcodex-cache")
    endpoints = cache["endpoints"]
    assert isinstance(endpoints, list)
    assert {"dcodex.execute", "dcodex.cache.stats", "dcodex.cache.purge"} <= {
        e["subject"] for e in endpoints
    }

    table = bus(stack.url, "ping")
    assert table.returncode == 0, shown(table)
    for runner in runners:
        assert str(runner["id"]) in table.stdout, "the table shows each instance's full id"
    rows = table_rows(table.stdout)
    assert rows["dcodex-runner"][2] == version()
    assert re.fullmatch(r"(\d+m )?\d+s", rows["dcodex-runner"][3]), rows["dcodex-runner"]


def test_stats_counts_requests_per_endpoint_and_the_cache(
    stack: ServiceProcesses, tmp_path: Path
) -> None:
    def execute_requests_and_cache() -> tuple[int, dict[str, object]]:
        completed = bus(stack.url, "stats", "--json")
        assert completed.returncode == 0, shown(completed)
        documents = json_documents(completed.stdout)
        cache = next(d["cache"] for d in documents if "cache" in d)
        assert isinstance(cache, dict)
        count = sum(
            endpoint["num_requests"]
            for document in documents
            if document.get("name") == "dcodex-cache"
            for endpoint in document["endpoints"]
            if endpoint["subject"] == "dcodex.execute"
        )
        return count, cache

    before, cache_before = execute_requests_and_cache()
    program = unique_program(tmp_path)
    ran = bus(stack.url, "run", "-c", "-f", program.name, cwd=tmp_path)
    assert ran.returncode == 0, shown(ran)
    after, cache_after = execute_requests_and_cache()
    assert after == before + 2, "both runs of the cache demo reached dcodex.execute"
    assert cache_after["misses"] == cache_before["misses"] + 1  # type: ignore[operator]
    assert cache_after["hits"] == cache_before["hits"] + 1  # type: ignore[operator]

    table = bus(stack.url, "stats")
    assert table.returncode == 0, shown(table)
    rows = table_rows(table.stdout)
    assert rows["dcodex-cache"][2] == "dcodex.execute", rows
    for name in ("entries", "bytes", "hits", "misses", "coalesced"):
        assert rows[name][1].isdigit(), rows
    assert re.fullmatch(r"\d+%", rows["hit ratio"][1]), rows


def test_cache_purge_drops_results_and_a_key_drops_only_its_own(
    stack: ServiceProcesses, tmp_path: Path
) -> None:
    program = unique_program(tmp_path)
    for _ in range(2):
        cached = bus(stack.url, "run", "-f", program.name, cwd=tmp_path)
        assert cached.returncode == 0, shown(cached)
    assert "cache hit" in flat(cached.stdout)

    other_key = uuid.uuid4().hex * 2  # a well-formed key that nothing is stored under
    one = bus(stack.url, "cache", "purge", "--key", other_key)
    assert one.returncode == 0, shown(one)
    assert f"purged 0 cached results under key {other_key}" in flat(one.stdout)
    still = bus(stack.url, "run", "-f", program.name, cwd=tmp_path)
    assert "cache hit" in flat(still.stdout), "purging another key kept this result"

    purged = bus(stack.url, "cache", "purge")
    assert purged.returncode == 0, shown(purged)
    match = re.search(r"purged (\d+) cached results? in the cache", flat(purged.stdout))
    assert match and int(match.group(1)) >= 1, shown(purged)
    again = bus(stack.url, "run", "-f", program.name, cwd=tmp_path)
    assert again.returncode == 0, shown(again)
    assert "cache miss" in flat(again.stdout), "the purge dropped the stored result"


def test_purge_with_a_malformed_key_is_a_clear_error(stack: ServiceProcesses) -> None:
    completed = bus(stack.url, "cache", "purge", "--key", "not-a-key")
    assert completed.returncode == 2, shown(completed)
    err = flat(completed.stderr)
    assert "error 400:" in err and "key" in err, shown(completed)
    assert_no_traceback(completed)


def test_languages_json_is_the_reply(stack: ServiceProcesses) -> None:
    completed = bus(stack.url, "languages", "--json")
    assert completed.returncode == 0, shown(completed)
    (reply,) = json_documents(completed.stdout)
    ids = {language["id"] for language in reply["languages"]}
    assert {"c", "cpp", "python"} <= ids
    assert reply["limits"]["ceilings"]["wall_time_s"] >= reply["limits"]["defaults"]["wall_time_s"]


@pytest.mark.parametrize(
    ("args", "service"),
    [
        (("languages",), "DCodeX runner service"),
        (("ping",), "DCodeX service"),
        (("stats",), "DCodeX service"),
        (("cache", "purge"), "DCodeX cache service"),
        (("run", "-f", HELLO), "DCodeX cache service"),
    ],
)
def test_every_command_says_clearly_when_nothing_answers(
    args: tuple[str, ...], service: str
) -> None:

    completed = bus(NOWHERE, *args)
    assert completed.returncode == 2, shown(completed)
    err = flat(completed.stderr)
    assert f"no {service} is reachable at {NOWHERE}: start one with `dcodex up`" in err, shown(
        completed
    )
    assert completed.stdout == ""
    assert_no_traceback(completed)
