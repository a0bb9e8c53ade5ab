"""Handler timeouts through the runners' clocks: the call past its deadline is cancelled
(and only it), from its own start, and a swallowed cancellation does not leak."""

from __future__ import annotations

import asyncio
import time

from agentflow import App, RetryPolicy
from agentflow.brokers.memory import MemoryBroker
from agentflow.deadlines import Deadlines
from tests.conformance.support import eventually


async def test_the_timer_cancels_only_the_call_past_its_deadline() -> None:
    deadlines = Deadlines(0.05, asyncio.get_running_loop())
    outcomes: dict[str, str] = {}

    async def runner(name: str, wait: float) -> None:
        task = asyncio.current_task()
        assert task is not None
        clock = deadlines.clock(task)
        try:
            clock.begin()
            try:
                await asyncio.sleep(wait)
                outcomes[name] = "finished"
            except asyncio.CancelledError:
                outcomes[name] = "timed out" if clock.timed_out() else "cancelled"
            finally:
                clock.end()
            # Later awaits of the same task are not hit by the expired call's cancellation.
            await asyncio.sleep(0.01)
        finally:
            deadlines.release(clock)

    await asyncio.gather(runner("slow", 1.0), runner("quick", 0.01))
    deadlines.close()
    assert outcomes == {"slow": "timed out", "quick": "finished"}


async def test_a_call_after_an_idle_spell_is_timed_from_its_own_start() -> None:
    deadlines = Deadlines(0.1, asyncio.get_running_loop())
    task = asyncio.current_task()
    assert task is not None
    clock = deadlines.clock(task)
    await asyncio.sleep(0.25)  # idle: the timer fired and looked again, twice
    clock.begin()
    started = time.monotonic()
    try:
        await asyncio.sleep(5)
    except asyncio.CancelledError:
        assert clock.timed_out(), "the timer's cancellation, and nobody else's"
    finally:
        clock.end()
    elapsed = time.monotonic() - started
    assert 0.09 <= elapsed < 0.5, elapsed
    deadlines.release(clock)
    deadlines.close()


async def test_a_handler_that_swallows_its_timeout_leaves_the_runner_usable() -> None:
    app = App("steps", broker=MemoryBroker())
    seen: list[str] = []

    @app.agent(consumes="steps.swallow", timeout=0.1, concurrency=1)
    async def swallow(msg: dict[str, int]) -> None:
        if msg["n"] == 0:
            try:
                await asyncio.sleep(2)
            except asyncio.CancelledError:
                seen.append("swallowed")  # and returns normally
                return
        await asyncio.sleep(0.01)  # not hit by the first call's cancellation
        task = asyncio.current_task()
        assert task is not None
        seen.append(f"ran {msg['n']}, cancelling={task.cancelling()}")

    await app.publish("steps.swallow", {"n": 0})
    await app.publish("steps.swallow", {"n": 1})
    async with app:
        await eventually(lambda: app.stats["swallow"].succeeded == 2, what="both acked")
    assert seen == ["swallowed", "ran 1, cancelling=0"], "the expired request was taken back"


async def test_a_timeout_inside_the_handler_still_works() -> None:
    app = App("steps", broker=MemoryBroker())
    out: list[str] = []

    @app.agent(consumes="steps.inner", timeout=5.0)
    async def inner(msg: dict[str, int]) -> None:
        try:
            async with asyncio.timeout(0.05):  # the task's own cancellation, not the worker's
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
