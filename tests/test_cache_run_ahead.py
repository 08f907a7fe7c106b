"""A miss's run sent with its lookup (`services/cache/run_ahead.py`): the gate that
allows it, and on a real NATS server what a requester gets when the run ahead was not
the replica's to use (a hit from the bucket, or another replica's lead)."""

from __future__ import annotations

import asyncio
import time
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest

from dcodex.services.cache.run_ahead import LED_MISSES_TO_OPEN, RunAheadGate
from dcodex.shared.client import DcodexClient
from dcodex.shared.contract import ExecutionResult
from tests.conftest import metric
from tests.test_cache_coalescing import connect, leases, stdout_of
from tests.test_cache_service import Stack, replica_counts


def test_the_gate_opens_after_misses_in_a_row_and_closes_at_the_first_other() -> None:
    gate = RunAheadGate()
    assert not gate.open, "a fresh replica waits for its lookups first"
    for _ in range(LED_MISSES_TO_OPEN - 1):
        gate.record(led=True)
    assert not gate.open
    gate.record(led=True)
    assert gate.open
    gate.record(led=False)  # a hit from the bucket, or a run another replica led
    assert not gate.open
    for _ in range(LED_MISSES_TO_OPEN):
        gate.record(led=True)
    assert gate.open


def test_runs_ahead_still_open_ask_for_more_misses_first() -> None:
    """A burst of misses arriving together: each run ahead whose fate is open raises
    the streak the next one needs, so one streak cannot send the whole burst ahead."""
    gate = RunAheadGate()
    for _ in range(2 * LED_MISSES_TO_OPEN):
        gate.record(led=True)
    assert gate.open
    gate.sent()
    assert gate.open, "two streaks' worth: room for a second"
    gate.sent()
    assert not gate.open
    gate.settled(used=True)  # this replica led it: the streak stands
    assert gate.open
    gate.settled(used=False)  # dropped: not this replica's to run
    assert not gate.open


def test_a_gate_turned_off_never_opens() -> None:
    gate = RunAheadGate(enabled=False)
    for _ in range(10 * LED_MISSES_TO_OPEN):
        gate.record(led=True)
    assert not gate.open


def echo_request(tag: str, stdin: str) -> dict[str, object]:
    """A Python program that prints its stdin: a new key for each stdin."""
    return {
        "language": "python",
        "code": f"import sys\nprint(sys.stdin.read())  # {tag}",
        "stdin": stdin,
    }


def run_ahead(stack: Stack, outcome: str) -> float:
    return sum(
        metric(port, "dcodex_cache_run_ahead_total", outcome=outcome) for port in stack.cache_ports
    )


def lookups(port: int) -> float:
    """Requests a cache replica answered through the cache (its lookups, any outcome)."""
    return metric(port, "dcodex_cache_lookups_total")


async def wait_for_executions(stack: Stack, count: float, timeout: float = 30.0) -> None:
    deadline = time.monotonic() + timeout
    while stack.executions() < count:
        assert time.monotonic() < deadline, f"the runner ran {stack.executions()}, not {count}"
        await asyncio.sleep(0.05)


def started(stack: Stack, caches: int = 1) -> Iterator[Stack]:
    """`stack` with its runner and `caches` cache replicas, all stopped after the test."""
    stack.start_runner()
    for _ in range(caches):
        stack.start_cache()
    try:
        yield stack
    finally:
        stack.services.stop_all()


@pytest.fixture
def memoryless(nats_url: str, tmp_path: Path) -> Iterator[Stack]:
    """A runner and one cache replica whose memory tier is off: a result it stored is
    found only in the bucket, as another replica's would be."""
    yield from started(
        Stack(nats_url, tmp_path, f"ahead{uuid.uuid4().hex[:8]}", "--cache-memory-bytes", "0")
    )


@pytest.mark.bus
async def test_a_hit_from_the_bucket_answers_and_the_run_ahead_goes_unused(
    memoryless: Stack,
) -> None:
    stack, tag = memoryless, uuid.uuid4().hex
    async with await DcodexClient.connect(stack.services.url, prefix=stack.prefix) as client:
        for index in range(LED_MISSES_TO_OPEN):
            result = await client.execute(echo_request(tag, f"miss {index}"))
            assert (result.status, result.stdout) == ("ok", f"miss {index}\n")
        assert run_ahead(stack, "used") == 0, "no run ahead before the misses in a row"

        # The gate is open: the next miss runs ahead and answers as any miss does.
        ahead = await client.execute(echo_request(tag, "ahead"))
        assert (ahead.status, ahead.stdout, ahead.cache_hit) == ("ok", "ahead\n", False)
        assert run_ahead(stack, "used") == 1
        assert stack.executions() == LED_MISSES_TO_OPEN + 1

        # A request that streams waits for its lookup: its live events could not be
        # taken back.
        async with client.live(echo_request(tag, "streamed")) as run:
            events = [event async for event in run.events()]
        assert (events[0].type, events[-1].type) == ("started", "result")
        assert stdout_of(events) == "streamed\n"
        assert run_ahead(stack, "used") == 1
        assert stack.executions() == LED_MISSES_TO_OPEN + 2

        # A stored result: it is the answer, and the run sent ahead of the lookup ends
        # on the runner unused.
        again = await client.execute(echo_request(tag, "miss 0"))
        assert (again.status, again.stdout, again.cache_hit) == ("ok", "miss 0\n", True)
        assert run_ahead(stack, "unused") == 1
        await wait_for_executions(stack, LED_MISSES_TO_OPEN + 3)

        # That closed the gate: the next hits and misses wait for their lookups.
        for index in range(1, 4):
            hit = await client.execute(echo_request(tag, f"miss {index}"))
            assert (hit.stdout, hit.cache_hit) == (f"miss {index}\n", True)
        fresh = await client.execute(echo_request(tag, "fresh"))
        assert (fresh.stdout, fresh.cache_hit) == ("fresh\n", False)
        await asyncio.sleep(0.5)  # a run sent ahead would have reached the runner
        assert run_ahead(stack, "unused") == 1 and run_ahead(stack, "used") == 1
        assert stack.executions() == LED_MISSES_TO_OPEN + 4


@pytest.fixture
def pair(nats_url: str, tmp_path: Path) -> Iterator[Stack]:
    yield from started(Stack(nats_url, tmp_path, f"aheadpair{uuid.uuid4().hex[:8]}"), caches=2)


@pytest.mark.bus
async def test_replicas_running_ahead_still_give_every_requester_one_runs_result(
    pair: Stack,
) -> None:
    tag = uuid.uuid4().hex
    async with await connect(pair) as client:
        # Enough misses that each replica has had its misses in a row (the queue group
        # spreads them at random; each replica's lookups are counted in the stats).
        index = 0
        while min(each.get("miss", 0) for each in await replica_counts(client)) < (
            LED_MISSES_TO_OPEN
        ):
            await client.execute(echo_request(tag, f"warm {index}"))
            index += 1
        before, used_before = pair.executions(), run_ahead(pair, "used")
        adopted_before = leases(pair, "adopted")
        lookups_before = [lookups(port) for port in pair.cache_ports]
        assert run_ahead(pair, "unused") == 0

        # Identical requests at once on both replicas, of a program whose every run
        # prints something new: each replica runs it ahead, one leads.
        code = f"import time, uuid\nprint(uuid.uuid4())\ntime.sleep(1)  # {tag}"
        request = {"language": "python", "code": code}
        results: list[ExecutionResult] = await asyncio.gather(
            *(client.execute(request) for _ in range(20))
        )
        stats = await client.cache_stats()

    assert [r.status for r in results] == ["ok"] * 20
    assert len({r.stdout for r in results}) == 1, "every requester got the one run's output"
    assert sorted(r.cache_hit for r in results) == [False] + [True] * 19
    assert stats.coalesced == 19
    # The run every requester shared was a run ahead: taken by the replica that led, or
    # (when a replica's second request got the lease first) adopted from its runner.
    adopted = leases(pair, "adopted") - adopted_before
    assert run_ahead(pair, "used") - used_before + adopted == 1
    # Each replica that got some of the requests ran one ahead; all but the shared one
    # ended unused.
    replicas = sum(lookups(port) > lookups_before[i] for i, port in enumerate(pair.cache_ports))
    unused = run_ahead(pair, "unused")
    assert replicas - 1 <= unused <= replicas
    runs = 1 + unused - adopted
    await wait_for_executions(pair, before + runs)
    await asyncio.sleep(0.5)
    assert pair.executions() == before + runs
    assert runs <= 2, "at most one run per replica"


@pytest.fixture
def without_run_ahead(nats_url: str, tmp_path: Path) -> Iterator[Stack]:
    yield from started(
        Stack(nats_url, tmp_path, f"noahead{uuid.uuid4().hex[:8]}", "--no-cache-run-ahead")
    )


@pytest.mark.bus
async def test_no_cache_run_ahead_keeps_every_miss_waiting_for_its_lookup(
    without_run_ahead: Stack,
) -> None:
    stack, tag = without_run_ahead, uuid.uuid4().hex
    async with await DcodexClient.connect(stack.services.url, prefix=stack.prefix) as client:
        for index in range(2 * LED_MISSES_TO_OPEN):
            result = await client.execute(echo_request(tag, f"miss {index}"))
            assert (result.stdout, result.cache_hit) == (f"miss {index}\n", False)
    assert run_ahead(stack, "used") == run_ahead(stack, "unused") == 0
    assert stack.executions() == 2 * LED_MISSES_TO_OPEN
