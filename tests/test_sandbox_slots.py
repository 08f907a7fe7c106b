"""Sandbox slots: a bound on concurrent runs, and a wait for fewer runs under way."""

from __future__ import annotations

import asyncio

from dcodex.shared.sandbox.slots import SlotPool


async def test_waiting_for_fewer_runs_ends_when_enough_runs_end() -> None:
    slots = SlotPool(3, None)
    first_done, second_done = asyncio.Event(), asyncio.Event()
    holding = asyncio.Semaphore(0)

    async def hold(done: asyncio.Event) -> None:
        async with slots.acquire():
            holding.release()
            await done.wait()

    holders = [asyncio.create_task(hold(first_done)), asyncio.create_task(hold(second_done))]
    await holding.acquire()
    await holding.acquire()
    assert slots.running == 2
    waiting = asyncio.create_task(slots.until_fewer_running(than=1))
    fewer_than_two = asyncio.create_task(slots.until_fewer_running(than=2))
    await asyncio.sleep(0.01)
    assert not waiting.done() and not fewer_than_two.done()
    first_done.set()
    await asyncio.wait_for(fewer_than_two, timeout=5)
    assert slots.running == 1 and not waiting.done()
    second_done.set()
    await asyncio.wait_for(waiting, timeout=5)
    assert slots.running == 0
    await asyncio.gather(*holders)
    # Already fewer: no wait at all.
    await asyncio.wait_for(slots.until_fewer_running(than=1), timeout=0.01)
