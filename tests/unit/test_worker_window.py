"""The worker's fetch window: one batch runs while the one before it is being published."""

from __future__ import annotations

import asyncio
from collections.abc import Sequence

from agentflow import App
from agentflow.brokers.base import Delivery, OutMessage, Subscription
from agentflow.brokers.memory import MemoryBroker
from tests.conformance.support import eventually


class GatedPublish(MemoryBroker):
    """A memory broker whose publishes wait until the test opens the gate."""

    def __init__(self) -> None:
        super().__init__()
        self.gate = asyncio.Event()

    async def publish(self, messages: Sequence[OutMessage]) -> None:
        if any(m.topic == "window.out" for m in messages):
            await self.gate.wait()
        await super().publish(messages)


async def test_the_next_batch_runs_while_the_first_waits_for_its_publish() -> None:
    broker = GatedPublish()
    app = App("window", broker=broker)
    calls: list[int] = []

    @app.agent(consumes="window.in", produces="window.out", concurrency=4)
    async def work(msg: dict[str, int]) -> dict[str, int]:
        calls.append(msg["n"])
        return msg

    for n in range(100):  # retained: fetched in batches of 32 (the floor of 2 x concurrency)
        await app.publish("window.in", {"n": n})
    async with app:
        # The first batch's outputs cannot be published; a second batch runs meanwhile,
        # then the window (two batches) is full and the worker fetches no more.
        await eventually(lambda: len(calls) == 64, timeout=5.0, what="two batches run")
        await asyncio.sleep(0.1)
        assert len(calls) == 64
        assert app.stats["work"].succeeded == 0, "nothing acked before its output was accepted"
        broker.gate.set()
        await eventually(lambda: app.stats["work"].succeeded == 100, what="all hundred done")
    assert calls == list(range(100))


class HookedFetch(MemoryBroker):
    """A memory broker whose subscriptions call ``before_fetch`` and ``after_fetch``."""

    async def subscribe(self, pattern: str, group: str, **kw: int | float) -> Subscription:
        sub = await super().subscribe(pattern, group, **kw)  # type: ignore[arg-type]
        fetch = sub.fetch

        async def hooked(max_messages: int, timeout: float) -> list[Delivery]:
            self.before_fetch()
            batch = await fetch(max_messages, timeout)
            self.after_fetch(batch)
            return batch

        sub.fetch = hooked  # type: ignore[method-assign]
        return sub

    def before_fetch(self) -> None:
        """A fetch starts."""

    def after_fetch(self, batch: list[Delivery]) -> None:
        """A fetch returned ``batch``."""


class MarkedFetch(HookedFetch):
    """A memory broker that notes, per fetched batch, how many loop turns pass until later."""

    def __init__(self) -> None:
        super().__init__()
        self.turns: list[str] = []

    def after_fetch(self, batch: list[Delivery]) -> None:
        if batch:
            # Turn 1 runs the callbacks queued now; turn 2 those queued during turn 1.
            loop = asyncio.get_running_loop()
            loop.call_soon(self._one, loop)

    def _one(self, loop: asyncio.AbstractEventLoop) -> None:
        self.turns.append("turn 1")
        loop.call_soon(self._two)

    def _two(self) -> None:
        self.turns.append("turn 2")


async def test_an_idle_worker_starts_the_handler_within_one_loop_turn_of_the_fetch() -> None:
    broker = MarkedFetch()
    app = App("turns", broker=broker)

    @app.agent(consumes="turns.in", concurrency=4)
    async def work(msg: dict[str, int]) -> None:
        broker.turns.append("handler")

    async with app:
        await app.publish("turns.in", {"n": 1})
        await eventually(lambda: "handler" in broker.turns, what="the handler ran")
        await eventually(lambda: "turn 2" in broker.turns, what="two loop turns passed")
    # No runner was alive: the one started for the message must not wait for a callback
    # that only creates it a turn later (a loop turn per message at low rates).
    assert broker.turns.index("handler") < broker.turns.index("turn 2"), broker.turns


class NotedFetch(HookedFetch):
    """A memory broker that notes when each fetch starts."""

    def __init__(self) -> None:
        super().__init__()
        self.events: list[str] = []

    def before_fetch(self) -> None:
        self.events.append("fetch")


async def test_a_lone_message_starts_before_the_next_fetch_is_prepared() -> None:
    broker = NotedFetch()
    app = App("lone", broker=broker)

    @app.agent(consumes="lone.in", concurrency=4)
    async def work(msg: dict[str, int]) -> None:
        broker.events.append("handler")

    async with app:
        await eventually(lambda: "fetch" in broker.events, what="the worker fetches")
        broker.events.clear()  # the fetch now waiting gets the message
        await app.publish("lone.in", {"n": 1})
        await eventually(lambda: broker.events.count("fetch") >= 1, what="the next fetch")
        await eventually(lambda: "handler" in broker.events, what="the handler ran")
    # The next fetch's work (a pull request to top up, on NATS) waits behind the handler.
    assert broker.events[:2] == ["handler", "fetch"], broker.events
