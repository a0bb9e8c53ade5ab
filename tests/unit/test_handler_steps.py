"""Handlers whose first step runs outside the deadline bookkeeping still time out, cancel and
return as if they had been awaited directly."""

from __future__ import annotations

import asyncio
import time

import pytest

from agentflow import App, RetryPolicy
from agentflow.brokers.memory import MemoryBroker
from agentflow.deadlines import Resumed
from tests.conformance.support import eventually


async def _started(coro: object) -> tuple[object, object]:
    """Run a coroutine's first step by hand, as the pipeline does."""
    first = coro.send(None)  # type: ignore[attr-defined]
    return coro, first


async def test_resumed_returns_what_the_coroutine_returns() -> None:
    async def two_steps() -> int:
        await asyncio.sleep(0.01)
        await asyncio.sleep(0)
        return 7

    coro, first = await _started(two_steps())
    assert await Resumed(coro, first) == 7  # type: ignore[arg-type]


async def test_resumed_passes_a_cancellation_to_the_coroutine() -> None:
    seen: list[str] = []

    async def waits() -> None:
        try:
            await asyncio.sleep(10)
        except asyncio.CancelledError:
            seen.append("cancelled")
            raise

    async def runner() -> None:
        coro, first = await _started(waits())
        await Resumed(coro, first)  # type: ignore[arg-type]

    task = asyncio.create_task(runner())
    await asyncio.sleep(0.01)
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    assert seen == ["cancelled"]


async def test_a_timeout_inside_the_handler_still_works() -> None:
    app = App("steps", broker=MemoryBroker())
    out: list[str] = []

    @app.agent(consumes="steps.inner", timeout=5.0)
    async def inner(msg: dict[str, int]) -> None:
        try:
            async with asyncio.timeout(0.05):  # the task's own cancellation, through Resumed
                await asyncio.sleep(2)
        except TimeoutError:
            out.append("inner timeout")

    await app.publish("steps.inner", {"n": 1})
    async with app:
        await eventually(lambda: app.stats["inner"].succeeded == 1, what="the call acked")
    assert out == ["inner timeout"]


async def test_a_call_is_timed_from_its_start_not_from_its_first_wait() -> None:
    app = App("steps", broker=MemoryBroker())
    attempts: list[float] = []

    @app.agent(
        consumes="steps.busy",
        timeout=0.3,
        retry=RetryPolicy(max_attempts=2, backoff=[0.05]),
    )
    async def busy(msg: dict[str, int]) -> None:
        started = time.monotonic()
        attempts.append(started)
        if len(attempts) == 1:
            time.sleep(0.4)  # noqa: ASYNC251 - CPU-bound past the timeout before any await
            await asyncio.sleep(0.25)  # within a timeout counted from here
            attempts.append(-1.0)  # never reached

    await app.publish("steps.busy", {"n": 1})
    async with app:
        await eventually(lambda: app.stats["busy"].succeeded == 1, what="the retry acked")
    assert -1.0 not in attempts, "the first attempt went on past its timeout"
    assert len(attempts) == 2
    assert app.stats["busy"].retried == 1
