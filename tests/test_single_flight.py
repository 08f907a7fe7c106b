"""SingleFlight: concurrent calls for one key run the work once."""

from __future__ import annotations

import asyncio

import pytest

from dcodex.shared.service.single_flight import SingleFlight


async def test_concurrent_calls_share_one_run() -> None:
    flight: SingleFlight[str, int] = SingleFlight()
    runs = 0

    async def work() -> int:
        nonlocal runs
        runs += 1
        await asyncio.sleep(0.05)
        return 42

    results = await asyncio.gather(*(flight.run("k", work) for _ in range(10)))
    assert runs == 1
    assert [value for value, _ in results] == [42] * 10
    assert sorted(shared for _, shared in results) == [False] + [True] * 9
    assert await flight.run("k", work) == (42, False) and runs == 2


async def test_a_failure_reaches_every_waiter_and_is_not_remembered() -> None:
    flight: SingleFlight[str, int] = SingleFlight()

    async def fail() -> int:
        await asyncio.sleep(0.01)
        raise ValueError("boom")

    outcomes = await asyncio.gather(
        *(flight.run("k", fail) for _ in range(3)), return_exceptions=True
    )
    assert all(isinstance(outcome, ValueError) for outcome in outcomes)

    async def succeed() -> int:
        return 1

    assert await flight.run("k", succeed) == (1, False)


async def test_different_keys_run_separately() -> None:
    flight: SingleFlight[str, str] = SingleFlight()

    async def echo(key: str) -> str:
        await asyncio.sleep(0.01)
        return key

    results = await asyncio.gather(
        flight.run("a", lambda: echo("a")), flight.run("b", lambda: echo("b"))
    )
    assert list(results) == [("a", False), ("b", False)]


async def test_cancelled_leader_cancels_followers() -> None:
    flight: SingleFlight[str, int] = SingleFlight()

    async def slow() -> int:
        await asyncio.sleep(10)
        return 0

    leader = asyncio.create_task(flight.run("k", slow))
    await asyncio.sleep(0.01)
    follower = asyncio.create_task(flight.run("k", slow))
    await asyncio.sleep(0.01)
    leader.cancel()
    with pytest.raises(asyncio.CancelledError):
        await follower
