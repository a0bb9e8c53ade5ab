"""The outbox: coalesced flushes, one at a time, in order; cancelled work is given back."""

from __future__ import annotations

import asyncio
from collections.abc import Coroutine
from typing import Any

import pytest

from agentflow.outbox import Outbox


class Flushes:
    """Records flushes; each flush waits for ``release`` when one is given."""

    def __init__(self) -> None:
        self.batches: list[list[int]] = []
        self.abandoned: list[int] = []
        self.running = 0
        self.most_running = 0
        self.release: asyncio.Event | None = None

    async def flush(self, batch: list[int]) -> None:
        self.running += 1
        self.most_running = max(self.most_running, self.running)
        try:
            self.batches.append(list(batch))
            if self.release is not None:
                await self.release.wait()
            await asyncio.sleep(0)
        finally:
            self.running -= 1

    async def abandon(self, batch: list[int]) -> None:
        self.abandoned.extend(batch)


async def test_items_queued_in_one_step_are_flushed_together() -> None:
    f = Flushes()
    box: Outbox[int] = Outbox(f.flush, f.abandon, asyncio.create_task)
    for i in range(5):
        box.put(i)
    assert f.batches == [], "nothing is flushed before the current step yields"
    await asyncio.sleep(0.01)
    assert f.batches == [[0, 1, 2, 3, 4]]


async def test_items_queued_during_a_flush_go_in_the_next_one_in_order() -> None:
    f = Flushes()
    f.release = asyncio.Event()
    box: Outbox[int] = Outbox(f.flush, f.abandon, asyncio.create_task)
    box.put(0)
    await asyncio.sleep(0.01)
    for i in range(1, 4):
        box.put(i)
    assert len(box) == 3
    f.release.set()
    await asyncio.sleep(0.05)
    assert f.batches == [[0], [1, 2, 3]]
    assert f.most_running == 1, "flushes never overlap"
    box.put(9)  # the flusher ended when the queue emptied: a new one starts
    await asyncio.sleep(0.01)
    assert f.batches[-1] == [9]


async def test_a_cancelled_flusher_gives_back_what_it_did_not_flush() -> None:
    f = Flushes()
    f.release = asyncio.Event()  # never set: the first flush hangs
    tasks: list[asyncio.Task[None]] = []

    def spawn(coro: Coroutine[Any, Any, None]) -> asyncio.Task[None]:
        task = asyncio.create_task(coro)
        tasks.append(task)
        return task

    box: Outbox[int] = Outbox(f.flush, f.abandon, spawn)
    box.put(1)
    await asyncio.sleep(0.01)
    box.put(2)
    box.put(3)
    tasks[0].cancel()
    with pytest.raises(asyncio.CancelledError):
        await tasks[0]
    assert f.abandoned == [2, 3], "queued items are given back; the flush in progress owns its own"
    box.put(4)
    assert len(tasks) == 2, "a new flusher starts after a cancelled one"
    tasks[1].cancel()


async def test_a_held_flush_waits_for_release_and_takes_what_came_meanwhile() -> None:
    f = Flushes()
    box: Outbox[int] = Outbox(f.flush, f.abandon, asyncio.create_task)
    box.put(0)
    box.hold()
    await asyncio.sleep(0.01)
    assert f.batches == [], "held: no flush yet"
    box.put(1)
    box.release()
    await asyncio.sleep(0.01)
    assert f.batches == [[0, 1]]


async def test_a_hold_never_released_delays_a_flush_only_briefly() -> None:
    f = Flushes()
    box: Outbox[int] = Outbox(f.flush, f.abandon, asyncio.create_task)
    box.put(0)
    box.hold()
    await asyncio.sleep(0.2)  # four times the hold limit
    assert f.batches == [[0]]
