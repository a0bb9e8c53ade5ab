"""A flush acks its inputs together; an ack that fails fails its own message only."""

from __future__ import annotations

import pytest

from agentflow import App, RetryPolicy
from agentflow.brokers.memory import MemoryBroker, MemoryDelivery
from tests.conformance.support import eventually


async def test_a_failed_ack_in_a_batch_retries_that_message_alone(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    batches: list[int] = []
    failed_once: list[bytes] = []
    real_ack = MemoryDelivery.ack

    async def ack(self: MemoryDelivery) -> None:
        if b'"n":1' in self.payload and not failed_once:
            failed_once.append(self.payload)
            raise ConnectionError("ack lost")
        await real_ack(self)

    real_many = MemoryDelivery.ack_many.__func__  # type: ignore[attr-defined]

    async def ack_many(cls: type[MemoryDelivery], deliveries: list[MemoryDelivery]) -> object:
        batches.append(len(deliveries))
        return await real_many(cls, deliveries)

    monkeypatch.setattr(MemoryDelivery, "ack", ack)
    monkeypatch.setattr(MemoryDelivery, "ack_many", classmethod(ack_many))
    app = App("acks", broker=MemoryBroker())
    seen: list[int] = []

    @app.agent(
        consumes="acks.in",
        produces="acks.out",
        retry=RetryPolicy(max_attempts=3, backoff=[0.01]),
    )
    async def echo(msg: dict[str, int]) -> dict[str, int]:
        seen.append(msg["n"])
        return msg

    for n in range(4):
        await app.publish("acks.in", {"n": n})
    async with app:
        await eventually(lambda: app.stats["echo"].succeeded == 4, what="all four acked")
    stats = app.stats["echo"]
    assert failed_once and stats.retried == 1 and stats.dead_lettered == 0
    assert sorted(seen) == [0, 1, 1, 2, 3], "only the message whose ack failed ran again"
    assert batches[0] == 4, "the first flush acked its four inputs in one call"
