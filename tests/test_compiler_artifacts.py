"""Artifacts: keyed by everything that shapes the binary, shared by compiler replicas,
kept in a bounded cache by runners."""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import Iterator
from pathlib import Path

import nats.js.errors
import pytest
from nats.js.object_store import ObjectStore

from dcodex.services.runner.artifact_cache import ArtifactCache
from dcodex.shared import bus
from dcodex.shared.client import DcodexClient, DcodexError
from dcodex.shared.contract import CompileResult
from dcodex.shared.languages.registry import Registry
from dcodex.shared.service.artifacts import compile_digest, open_artifact_store
from dcodex.shared.service.nats_server import EmbeddedNats
from tests.conftest import ServiceProcesses, free_port, metric, until, wait_for_subject

pytestmark = pytest.mark.bus


async def compile_on(url: str, prefix: str, **request: str) -> CompileResult:
    async with await DcodexClient.connect(url) as client:
        reply = await bus.request(
            client.nc, f"{prefix}.compile", request, request_id=bus.new_id(), timeout=60
        )
    return CompileResult.model_validate(reply)


def test_digest_covers_toolchain_flags_and_source() -> None:
    cpp = Registry.load().resolve("cpp")
    code = "int main() {}"
    default = compile_digest(cpp, code)
    assert compile_digest(cpp, code, cpp.options("c++17", "O2")) == default, "defaults spelt out"
    others = {
        compile_digest(cpp, code, cpp.options("c++20", None)),
        compile_digest(cpp, code, cpp.options(None, "O0")),
        compile_digest(cpp, code + "\n"),
        compile_digest(Registry.load().resolve("c"), code),
    }
    assert default not in others and len(others) == 4


def test_runner_artifact_cache_is_bounded_least_recently_used_out() -> None:
    cache = ArtifactCache(max_bytes=10)
    cache.put("a", b"aaaa")
    cache.put("b", b"bbbb")
    assert cache.get("a") == b"aaaa"  # a is now the most recent
    cache.put("c", b"cccc")  # 12 bytes: b goes
    assert cache.get("b") is None and cache.get("a") == b"aaaa" and cache.get("c") == b"cccc"
    cache.put("huge", b"x" * 11)
    assert cache.get("huge") is None, "an artifact larger than the whole cache is not kept"


@pytest.fixture
def replicas(nats_url: str, tmp_path: Path) -> Iterator[ServiceProcesses]:
    services = ServiceProcesses(nats_url, tmp_path, ("--subject-prefix", "replica"))
    yield services
    services.stop_all()


async def test_a_second_replica_finds_the_first_ones_artifact(
    replicas: ServiceProcesses,
) -> None:
    code = f'#include <stdio.h>\nint main(void) {{ puts("{time.time_ns()}"); }}\n'
    first_replica = replicas.start("compiler")
    await wait_for_subject(replicas.url, "replica.compile")
    first = await compile_on(replicas.url, "replica", language="c", code=code)
    assert first.status == "ok" and first.cached is False and first.artifact is not None
    assert first.binary is None, "a JSON reply carries no bytes"
    replicas.stop(first_replica)

    second_replica = replicas.start("compiler")
    await wait_for_subject(replicas.url, "replica.compile")
    await asyncio.sleep(2)  # its warm compile sandboxes are up
    sandboxes = descendants(second_replica.pid)
    second = await compile_on(replicas.url, "replica", language="c", code=code)
    assert second.cached is True and second.compile_time_ms is None
    assert second.artifact == first.artifact and second.digest == first.digest
    # Each lookup has a compile started alongside (for a new program it would not wait
    # for the lookup); the stored program ends it unfinished, and nothing of it is left.
    again = await asyncio.gather(
        *(compile_on(replicas.url, "replica", language="c", code=code) for _ in range(10))
    )
    assert {(result.cached, result.compile_time_ms) for result in again} == {(True, None)}
    assert await until(lambda: len(descendants(second_replica.pid)) == len(sandboxes), 10), (
        f"sandbox processes left: {descendants(second_replica.pid)} against {sandboxes}"
    )
    # Other flags are another artifact: compiled, not found.
    other = await compile_on(replicas.url, "replica", language="c", code=code, optimization="O0")
    assert other.cached is False and other.digest != first.digest
    async with await DcodexClient.connect(replicas.url) as client:
        store = await open_artifact_store(client.nc.jetstream())
        stored = (await store.get(first.artifact.name)).data or b""
    assert stored.startswith(b"\x7fELF") and len(stored) == first.artifact.size


def descendants(pid: int) -> list[int]:
    """The processes `pid` started, and theirs (a warm sandbox is a helper and a reaper)."""
    parents: dict[int, int] = {}
    for stat in Path("/proc").glob("[0-9]*/stat"):
        with contextlib.suppress(OSError):
            parents[int(stat.parent.name)] = int(stat.read_text().rsplit(")", 1)[1].split()[1])
    found, frontier = [], [pid]
    while frontier:
        children = [child for child, parent in parents.items() if parent in frontier]
        found += children
        frontier = children
    return sorted(found)


async def test_a_runner_holding_the_program_runs_it_without_asking_the_compiler(
    replicas: ServiceProcesses,
) -> None:
    code = (
        "#include <stdio.h>\n#warning this warning is kept\n"
        f"int main(void) {{ char line[64]; /* {time.time_ns()} */\n"
        '  if (fgets(line, sizeof line, stdin)) printf("got %s", line); }\n'
    )
    compiler = replicas.start("compiler")
    replicas.start("runner")
    await wait_for_subject(replicas.url, "replica.compile")
    await wait_for_subject(replicas.url, "replica.languages")
    async with await DcodexClient.connect(replicas.url, prefix="replica") as client:
        request = {"language": "c", "code": code, "stdin": "one\n", "limits": {}}
        first = await client.run({**request, "code": code})
        assert first.status == "ok" and first.stdout == "got one\n", first
        assert first.compile_time_ms is not None  # compiled for this run
        warnings = first.compile_output
        assert "this warning is kept" in warnings
        replicas.stop(compiler)  # no compiler answers from now on
        second = await client.run({**request, "stdin": "two\n"})
        assert second.status == "ok" and second.stdout == "got two\n", second
        # What the compiler says of a stored artifact: its warnings, no compile time.
        assert second.compile_output == warnings and second.compile_time_ms is None
        # Other flags name another artifact, which only a compiler can make.
        with pytest.raises(DcodexError) as refused:
            await client.run({**request, "optimization": "O0"})
        assert refused.value.code == 503


async def test_a_program_just_compiled_reaches_the_runner_in_the_compile_reply(
    replicas: ServiceProcesses,
) -> None:
    """The runner reads no Object Store for a binary it just had compiled; the store
    gets the binary after the reply, for other runners and later compiles."""
    code = f'#include <stdio.h>\nint main(void) {{ puts("inline {time.time_ns()}"); }}\n'
    runner_port = free_port()
    replicas.start("compiler")
    replicas.start("runner", "--metrics-port", str(runner_port))
    await wait_for_subject(replicas.url, "replica.compile")
    await wait_for_subject(replicas.url, "replica.languages")
    async with await DcodexClient.connect(replicas.url, prefix="replica") as client:
        store = await open_artifact_store(client.nc.jetstream())
        before = await stored_names(store)
        result = await client.run({"language": "c", "code": code, "limits": {}})
        assert result.status == "ok" and result.stdout.startswith("inline "), result
        assert result.compile_time_ms is not None  # compiled for this run
        lookups = "dcodex_runner_artifact_lookups_total"
        assert metric(runner_port, lookups, outcome="miss") == 0, "it read the Object Store"
        deadline = time.monotonic() + 10
        while not (new := await stored_names(store) - before):
            assert time.monotonic() < deadline, "the binary never reached the Object Store"
            await asyncio.sleep(0.1)
        (name,) = new
        assert ((await store.get(name)).data or b"").startswith(b"\x7fELF")


async def stored_names(store: ObjectStore) -> set[str]:
    try:
        return {info.name for info in await store.list()}
    except nats.js.errors.NotFoundError:  # nothing stored yet
        return set()


@pytest.fixture
def nats_without_jetstream() -> Iterator[EmbeddedNats]:
    """A nats-server whose JetStream is off: nobody answers `$JS.API`, as while a
    cluster elects its leaders."""
    with EmbeddedNats(jetstream=False) as server:  # stopped by its PID on the way out
        yield server


async def test_without_jetstream_opening_the_store_ends_in_a_503(
    nats_without_jetstream: EmbeddedNats,
) -> None:
    async with await DcodexClient.connect(nats_without_jetstream.url) as client:
        with pytest.raises(DcodexError) as refused:
            await open_artifact_store(client.nc.jetstream(), patience_s=2.5)
    assert refused.value.code == 503 and "dcodex-artifacts" in refused.value.message


def test_a_compiler_started_before_jetstream_waits_for_it(
    nats_without_jetstream: EmbeddedNats, tmp_path: Path
) -> None:
    """A compiler that starts while JetStream does not answer says so and waits; once a
    nats-server with JetStream takes the port, it opens the store and compiles."""
    url = nats_without_jetstream.url
    services = ServiceProcesses(url, tmp_path)
    try:
        compiler = services.start("compiler")
        assert asyncio.run(
            until(lambda: "artifact_store_unavailable" in services.log("compiler"), 30)
        )
        assert compiler.poll() is None, "the compiler gave up at once"
        nats_without_jetstream.stop()
        with EmbeddedNats(port=int(url.rsplit(":", 1)[1])):  # stopped by its PID on the way out
            services.wait_ready(("compiler",), timeout=60)
            code = "int main(void) { return 0; }\n"
            result = asyncio.run(compile_on(url, "dcodex", language="c", code=code))
            assert result.status == "ok" and result.artifact is not None
    finally:
        services.stop_all()
