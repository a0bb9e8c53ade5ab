"""Claims of idempotent agents: messages about to start are claimed together, no more."""

from __future__ import annotations

import asyncio
from collections.abc import Sequence

import pytest

from agentflow import App
from agentflow.brokers.base import OutMessage
from agentflow.brokers.memory import MemoryBroker
from agentflow.idempotency.base import Claim
from agentflow.idempotency.memory import MemoryStore
from agentflow.intake import Prepared
from tests.conformance.support import eventually


class RecordingStore(MemoryStore):
    """A memory store that records which keys were claimed, and how."""

    def __init__(self) -> None:
        super().__init__()
        self.groups: list[list[str]] = []
        self.single: list[str] = []
        self.released: list[str] = []

    async def claim_many(self, keys: Sequence[str], lease: float) -> list[Claim | Exception]:
        self.groups.append(list(keys))
        return await super().claim_many(keys, lease)

    async def claim(self, key: str, lease: float) -> Claim:
        if not any(key in g for g in self.groups):
            self.single.append(key)
        return await super().claim(key, lease)

    async def release(self, key: str) -> None:
        self.released.append(key)
        await super().release(key)

    def claimed(self) -> int:
        return sum(len(g) for g in self.groups) + len(self.single)


async def test_ready_messages_are_claimed_together_up_to_the_free_slots() -> None:
    store = RecordingStore()
    app = App("claims", broker=MemoryBroker(), store=store)
    gate = asyncio.Event()
    running: list[int] = []

    @app.agent(consumes="in", concurrency=4, idempotency_key="n")
    async def work(msg: dict[str, int]) -> None:
        running.append(msg["n"])
        await gate.wait()

    for n in range(12):  # retained: the agent's first fetch takes all twelve
        await app.publish("in", {"n": n})
    async with app:
        await eventually(lambda: len(running) == 4, what="four calls running")
        await asyncio.sleep(0.1)
        # Twelve fetched, four slots: only the four that started hold a claim.
        assert store.claimed() == 4
        assert store.groups[0] == [f"work:{n}" for n in range(4)], "one store call for four"
        gate.set()
        await eventually(lambda: app.stats["work"].succeeded == 12, what="all twelve done")
    assert store.single == [], "no message claimed on its own"
    assert sorted(k for g in store.groups for k in g) == sorted(f"work:{n}" for n in range(12))
    assert running == list(range(12))


async def test_claims_of_messages_that_never_started_are_given_back_on_stop() -> None:
    store = RecordingStore()
    app = App("claims", broker=MemoryBroker(), store=store)

    @app.agent(consumes="in", idempotency_key="n")
    async def work(msg: dict[str, int]) -> None:
        return None

    async with app:
        (claim,) = await store.claim_many(["work:7"], 30)
        prepared = Prepared(None, "m7", None, "m7", {"n": 7}, "work:7")
        prepared.claim = claim
        # A claimed delivery that no runner took before the worker stopped.
        app._workers[0]._claimed.append((_FakeDelivery(), None, prepared))  # type: ignore[arg-type]
    assert store.released == ["work:7"]
    assert (await store.claim("work:7", 30)).attempts == 2, "free again, the attempt counted"


class _FakeDelivery:
    """Just enough of a delivery for the worker's stop bookkeeping."""

    topic = "in"


# The memory broker's state is shared in-process by name: the tests below use topics of
# their own.


class SlowClaims(MemoryStore):
    """A memory store whose group claims take a round trip, as SQLite's or NATS KV's do."""

    async def claim_many(self, keys: Sequence[str], lease: float) -> list[Claim | Exception]:
        await asyncio.sleep(0.02)
        return await super().claim_many(keys, lease)


class CountingBroker(MemoryBroker):
    """A memory broker that records how many messages each publish call carried.

    It asks for coalesced publishes, as Kafka does.
    """

    coalesce_publishes = True

    def __init__(self) -> None:
        super().__init__()
        self.calls: list[int] = []

    async def publish(self, messages: Sequence[OutMessage]) -> None:
        self.calls.append(len(messages))
        await super().publish(messages)


@pytest.mark.parametrize(
    ("coalesce", "publishes"),
    [
        # The second group's claim is in flight when the first group finishes: one publish
        # carries both, instead of a round trip per group (Kafka).
        (True, [8, 4]),
        # Without it (NATS) each group's flush overlaps the next group's claim.
        (False, [4, 4, 4]),
    ],
)
async def test_a_flush_waits_for_the_group_being_claimed_where_the_broker_asks(
    coalesce: bool, publishes: list[int]
) -> None:
    broker = CountingBroker()
    broker.coalesce_publishes = coalesce
    app = App("claims", broker=broker, store=SlowClaims())
    topic = f"coalesce-{coalesce}.in"

    @app.agent(consumes=topic, produces="coalesce.out", concurrency=4, idempotency_key="n")
    async def work(msg: dict[str, int]) -> dict[str, int]:
        return msg  # finishes without waiting: groups follow each other back to back

    for n in range(12):  # retained: one fetch takes all twelve, three groups of four
        await app.publish(topic, {"n": n})
    broker.calls.clear()
    async with app:
        await eventually(lambda: app.stats["work"].succeeded == 12, what="all twelve done")
    assert broker.calls == publishes


class GatedClaims(MemoryStore):
    """A memory store whose second group claim waits until the test opens the gate."""

    def __init__(self) -> None:
        super().__init__()
        self.gate = asyncio.Event()
        self.groups = 0

    async def claim_many(self, keys: Sequence[str], lease: float) -> list[Claim | Exception]:
        self.groups += 1
        if self.groups == 2:
            await self.gate.wait()
        return await super().claim_many(keys, lease)


async def test_a_slow_claim_does_not_hold_back_finished_calls() -> None:
    broker = CountingBroker()
    store = GatedClaims()
    app = App("claims", broker=broker, store=store)

    @app.agent(consumes="slow.in", produces="coalesce.out", concurrency=1, idempotency_key="n")
    async def work(msg: dict[str, int]) -> dict[str, int]:
        return msg

    for n in range(2):
        await app.publish("slow.in", {"n": n})
    broker.calls.clear()
    async with app:
        # The second claim hangs: the first call's output goes out anyway, and is acked.
        await eventually(
            lambda: app.stats["work"].succeeded == 1, timeout=2.0, what="the first call acked"
        )
        assert store.groups == 2 and not store.gate.is_set()
        assert broker.calls == [1]
        store.gate.set()
        await eventually(lambda: app.stats["work"].succeeded == 2, what="the second call acked")
