"""The worker's fetch window: one batch runs while the one before it is being published."""

from __future__ import annotations

import asyncio
from collections.abc import Sequence

from agentflow import App
from agentflow.brokers.base import OutMessage
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
