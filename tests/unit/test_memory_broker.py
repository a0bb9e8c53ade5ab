"""Semantics of the embedded ``memory://`` broker."""

from __future__ import annotations

import asyncio
import time
import uuid
from collections.abc import AsyncIterator

import pytest

from agentflow.brokers.base import BrokerError, Delivery, OutMessage, PublishError, Subscription
from agentflow.brokers.memory import MemoryBroker, MemorySubscription, reset_memory_brokers
from agentflow.brokers.memory_group import subject_matches


@pytest.fixture
async def broker() -> AsyncIterator[MemoryBroker]:
    """A broker with a fresh, uniquely named state."""
    name = f"t{uuid.uuid4().hex}"
    b = MemoryBroker(f"memory://{name}")
    await b.connect()
    yield b
    await b.close()
    reset_memory_brokers(name)


def msg(topic: str, body: str, *, key: str | None = None, mid: str | None = None) -> OutMessage:
    """An OutMessage with a unique af-id unless one is given."""
    headers = {"af-id": mid or uuid.uuid4().hex, "x-body": body}
    return OutMessage(topic=topic, payload=body.encode(), headers=headers, key=key)


def bodies(ds: list[Delivery]) -> list[str]:
    """Payloads as strings."""
    return [d.payload.decode() for d in ds]


async def sub_of(
    broker: MemoryBroker,
    pattern: str,
    group: str,
    *,
    ack_wait: float = 30.0,
    max_in_flight: int = 1000,
    max_deliver: int = 0,
) -> Subscription:
    """Subscribe with roomy defaults."""
    return await broker.subscribe(
        pattern,
        group,
        ack_wait=ack_wait,
        max_in_flight=max_in_flight,
        max_deliver=max_deliver,
    )


@pytest.mark.parametrize(
    ("pattern", "subject", "expected"),
    [
        ("a.b", "a.b", True),
        ("a.b", "a.c", False),
        ("a.*", "a.b", True),
        ("a.*", "a.b.c", False),
        ("a.*.c", "a.x.c", True),
        ("a.>", "a.b", True),
        ("a.>", "a.b.c.d", True),
        ("a.>", "a", False),
        (">", "x.y", True),
        ("*", "x", True),
        ("*", "x.y", False),
        ("a.b", "a.b.c", False),
    ],
)
def test_subject_matches(pattern: str, subject: str, expected: bool) -> None:
    assert subject_matches(pattern, subject) is expected


@pytest.mark.parametrize("pattern", ["a.>.b", "a..b", "", "a.b*"])
def test_bad_pattern_rejected(pattern: str) -> None:
    with pytest.raises(BrokerError):
        subject_matches(pattern, "a.b")


async def test_wildcard_subscription_routes_topics(broker: MemoryBroker) -> None:
    star = await sub_of(broker, "orders.*", "g1")
    tail = await sub_of(broker, "orders.>", "g2")
    await broker.publish([msg("orders.new", "1"), msg("orders.eu.new", "2"), msg("other", "3")])
    assert bodies(await star.fetch(10, 0.1)) == ["1"]
    assert bodies(await tail.fetch(10, 0.1)) == ["1", "2"]


async def test_publish_rejects_wildcard_topic(broker: MemoryBroker) -> None:
    with pytest.raises(PublishError):
        await broker.publish([msg("a.*", "x")])


async def test_competing_consumers_each_message_once(broker: MemoryBroker) -> None:
    s1 = await sub_of(broker, "jobs", "workers")
    s2 = await sub_of(broker, "jobs", "workers")
    seen: list[str] = []

    async def work(sub: Subscription) -> int:
        got = 0
        while True:
            batch = await sub.fetch(7, 0.1)
            if not batch:
                return got
            for d in batch:
                seen.append(d.payload.decode())
                await d.ack()
                got += 1
            await asyncio.sleep(0)

    await broker.publish([msg("jobs", str(i)) for i in range(200)])
    n1, n2 = await asyncio.gather(work(s1), work(s2))
    assert sorted(seen, key=int) == [str(i) for i in range(200)]
    assert n1 > 0 and n2 > 0


async def test_two_groups_each_see_all(broker: MemoryBroker) -> None:
    a = await sub_of(broker, "t", "a")
    b = await sub_of(broker, "t", "b")
    await broker.publish([msg("t", str(i)) for i in range(5)])
    assert bodies(await a.fetch(10, 0.1)) == ["0", "1", "2", "3", "4"]
    assert bodies(await b.fetch(10, 0.1)) == ["0", "1", "2", "3", "4"]


async def test_group_created_later_delivers_all_retained(broker: MemoryBroker) -> None:
    await broker.publish([msg("early", "before")])
    sub = await sub_of(broker, "early", "late")
    await broker.publish([msg("early", "after")])
    assert bodies(await sub.fetch(10, 0.1)) == ["before", "after"]


async def test_fetch_waits_for_publish(broker: MemoryBroker) -> None:
    sub = await sub_of(broker, "w", "g")

    async def later() -> None:
        await asyncio.sleep(0.05)
        await broker.publish([msg("w", "hi")])

    task = asyncio.create_task(later())
    start = time.monotonic()
    got = await sub.fetch(5, 2.0)
    await task
    assert bodies(got) == ["hi"]
    assert time.monotonic() - start < 1.0


async def test_fetch_times_out_empty(broker: MemoryBroker) -> None:
    sub = await sub_of(broker, "empty", "g")
    start = time.monotonic()
    assert await sub.fetch(5, 0.1) == []
    assert 0.08 <= time.monotonic() - start < 0.5


async def test_ack_deadline_redelivers_with_count(broker: MemoryBroker) -> None:
    sub = await sub_of(broker, "d", "g", ack_wait=0.1, max_in_flight=10, max_deliver=0)
    await broker.publish([msg("d", "x")])
    first = await sub.fetch(1, 0.1)
    assert [d.delivery_count for d in first] == [1]
    assert await sub.fetch(1, 0.02) == []  # not yet expired
    second = await sub.fetch(1, 1.0)
    assert bodies(second) == ["x"] and second[0].delivery_count == 2
    await second[0].ack()
    assert await sub.fetch(1, 0.25) == []


async def test_in_progress_extends_deadline(broker: MemoryBroker) -> None:
    sub = await sub_of(broker, "ip", "g", ack_wait=0.15, max_in_flight=10, max_deliver=0)
    await broker.publish([msg("ip", "x")])
    (d,) = await sub.fetch(1, 0.1)
    for _ in range(3):
        await asyncio.sleep(0.08)
        await d.in_progress()
    assert await sub.fetch(1, 0.05) == []  # 0.29 s after delivery, still not redelivered
    again = await sub.fetch(1, 1.0)
    assert again and again[0].delivery_count == 2


async def test_nak_delay_timing(broker: MemoryBroker) -> None:
    sub = await sub_of(broker, "n", "g")
    await broker.publish([msg("n", "x")])
    (d,) = await sub.fetch(1, 0.1)
    start = time.monotonic()
    await d.nak(0.2)
    again = await sub.fetch(1, 2.0)
    elapsed = time.monotonic() - start
    assert bodies(again) == ["x"] and again[0].delivery_count == 2
    assert 0.18 <= elapsed < 0.6


async def test_term_stops_redelivery(broker: MemoryBroker) -> None:
    sub = await sub_of(broker, "tm", "g", ack_wait=0.05, max_in_flight=10, max_deliver=0)
    await broker.publish([msg("tm", "x")])
    (d,) = await sub.fetch(1, 0.1)
    await d.term()
    assert await sub.fetch(1, 0.2) == []


async def test_max_deliver_stops_redelivery(broker: MemoryBroker) -> None:
    sub = await sub_of(broker, "md", "g", ack_wait=30.0, max_in_flight=10, max_deliver=3)
    await broker.publish([msg("md", "x")])
    counts = []
    for _ in range(3):
        (d,) = await sub.fetch(1, 0.2)
        counts.append(d.delivery_count)
        await d.nak()
    assert counts == [1, 2, 3]
    assert await sub.fetch(1, 0.1) == []


async def test_stale_nak_is_ignored_but_late_ack_counts(broker: MemoryBroker) -> None:
    sub = await sub_of(broker, "st", "g", ack_wait=0.05, max_in_flight=10, max_deliver=0)
    await broker.publish([msg("st", "x")])
    (old,) = await sub.fetch(1, 0.1)
    (new,) = await sub.fetch(1, 1.0)  # redelivered after the deadline
    await old.nak()  # stale delivery: must not hand the message out a third time now
    assert new.delivery_count == 2
    assert isinstance(sub, MemorySubscription) and sub.in_flight == 1
    await old.ack()  # the work was done after all: the message is finished
    assert await sub.fetch(1, 0.15) == []


async def test_per_key_order_across_subscribers(broker: MemoryBroker) -> None:
    subs = [await sub_of(broker, "k", "g") for _ in range(2)]
    keys = ["a", "b", "c"]
    await broker.publish([msg("k", f"{keys[i % 3]}:{i}", key=keys[i % 3]) for i in range(60)])
    processed: dict[str, list[int]] = {k: [] for k in keys}
    active: set[str] = set()
    naked: set[int] = set()

    async def work(sub: Subscription) -> None:
        while True:
            batch = await sub.fetch(4, 0.2)
            if not batch:
                return
            for d in batch:
                key, num = d.payload.decode().split(":")
                assert key not in active, "two messages of one key in flight at once"
                active.add(key)
                await asyncio.sleep(0.001)
                active.discard(key)
                if int(num) % 7 == 0 and int(num) not in naked:
                    naked.add(int(num))  # one failure: the key must wait for its retry
                    await d.nak(0.01)
                    continue
                processed[key].append(int(num))
                await d.ack()

    await asyncio.gather(*(work(s) for s in subs))
    for i, k in enumerate(keys):
        assert processed[k] == list(range(i, 60, 3))


async def test_keyless_messages_not_blocked_by_keys(broker: MemoryBroker) -> None:
    sub = await sub_of(broker, "kl", "g")
    await broker.publish([msg("kl", "k1", key="k"), msg("kl", "k2", key="k"), msg("kl", "free")])
    assert bodies(await sub.fetch(10, 0.1)) == ["k1", "free"]


async def test_max_in_flight_back_pressure(broker: MemoryBroker) -> None:
    sub = await sub_of(broker, "mf", "g", ack_wait=30.0, max_in_flight=3, max_deliver=0)
    await broker.publish([msg("mf", str(i)) for i in range(10)])
    first = await sub.fetch(10, 0.1)
    assert len(first) == 3
    assert await sub.fetch(10, 0.05) == []

    async def ack_later() -> None:
        await asyncio.sleep(0.05)
        await first[0].ack()

    task = asyncio.create_task(ack_later())
    more = await sub.fetch(10, 1.0)  # woken by the ack, not by polling
    await task
    assert bodies(more) == ["3"]


async def test_close_hands_back(broker: MemoryBroker) -> None:
    s1 = await sub_of(broker, "cl", "g")
    await broker.publish([msg("cl", "a"), msg("cl", "b")])
    got = await s1.fetch(10, 0.1)
    assert len(got) == 2
    await s1.close()
    with pytest.raises(BrokerError, match="closed"):
        await s1.fetch(10, 0.0)
    s2 = await sub_of(broker, "cl", "g")
    again = await s2.fetch(10, 0.1)
    assert bodies(again) == ["a", "b"]
    assert [d.delivery_count for d in again] == [2, 2]


async def test_dedup_window(broker: MemoryBroker) -> None:
    sub = await sub_of(broker, "dd", "g")
    await broker.publish([msg("dd", "1", mid="same"), msg("dd", "2", mid="same")])
    await broker.publish([msg("dd", "3", mid="same")])
    out = OutMessage(topic="dd", payload=b"4", headers={"af-id": "other"}, dedup_id="dk")
    dup = OutMessage(topic="dd", payload=b"5", headers={"af-id": "third"}, dedup_id="dk")
    await broker.publish([out, dup])
    assert bodies(await sub.fetch(10, 0.1)) == ["1", "4"]
    # The window is per topic: a DLQ copy or replay may carry the id of a message elsewhere.
    other = await sub_of(broker, "dd2", "g")
    await broker.publish([msg("dd2", "6", mid="same")])
    assert bodies(await other.fetch(10, 0.1)) == ["6"]


async def test_dedup_window_expires() -> None:
    name = f"t{uuid.uuid4().hex}"
    b = MemoryBroker(f"memory://{name}?dedup_window=0.05")
    try:
        sub = await sub_of(b, "de", "g")
        await b.publish([msg("de", "1", mid="m")])
        await asyncio.sleep(0.08)
        await b.publish([msg("de", "2", mid="m")])
        assert bodies(await sub.fetch(10, 0.1)) == ["1", "2"]
    finally:
        reset_memory_brokers(name)


async def test_browse_remove_purge(broker: MemoryBroker) -> None:
    await broker.publish([msg("x.dlq", str(i), key=f"k{i}") for i in range(5)])
    stored = await broker.browse("x.dlq", limit=3)
    assert [s.payload for s in stored] == [b"0", b"1", b"2"]
    assert stored[1].position == {"stream": "x.dlq", "seq": "2"}
    assert stored[1].key == "k1" and stored[1].headers["x-body"] == "1"
    await broker.remove("x.dlq", stored[:2])
    assert [s.payload for s in await broker.browse("x.dlq")] == [b"2", b"3", b"4"]
    assert await broker.purge("x.dlq") == 3
    assert await broker.browse("x.dlq") == []
    assert await broker.browse("never.used") == []


async def test_removed_messages_are_not_delivered(broker: MemoryBroker) -> None:
    await broker.publish([msg("rm", "a"), msg("rm", "b")])
    await broker.remove("rm", (await broker.browse("rm"))[:1])
    sub = await sub_of(broker, "rm", "g")
    await broker.purge("rm")
    await broker.publish([msg("rm", "c")])
    assert bodies(await sub.fetch(10, 0.1)) == ["c"]


async def test_retention_bounds_topic_log() -> None:
    name = f"t{uuid.uuid4().hex}"
    b = MemoryBroker(f"memory://{name}", retention=3)
    try:
        await b.publish([msg("r", str(i)) for i in range(5)])
        assert [s.payload for s in await b.browse("r")] == [b"2", b"3", b"4"]
    finally:
        reset_memory_brokers(name)


async def test_delivery_position_headers_and_fallback_id(broker: MemoryBroker) -> None:
    sub = await sub_of(broker, "p", "g")
    m = msg("p", "x", key="k")
    await broker.publish([m])
    (d,) = await sub.fetch(1, 0.1)
    assert d.position == {"stream": "p", "seq": "1"}
    assert d.fallback_id == f"memory:{broker.name}:p:1"
    assert d.key == "k" and d.headers == m.headers
    d.headers["af-id"] = "mutated"
    assert m.headers["af-id"] != "mutated"


async def test_shared_state_by_name(broker: MemoryBroker) -> None:
    sub = await sub_of(broker, "sh", "g")
    await broker.publish([msg("sh", "a")])
    assert len(await sub.fetch(1, 0.1)) == 1
    await broker.close()  # an App stopping: the un-acked message goes back
    other = MemoryBroker(broker.url)
    await other.connect()
    again = await (await sub_of(other, "sh", "g")).fetch(1, 0.1)
    assert bodies(again) == ["a"] and again[0].delivery_count == 2
    separate = MemoryBroker(f"memory://{uuid.uuid4().hex}")
    assert await (await sub_of(separate, "sh", "g")).fetch(1, 0.0) == []
    reset_memory_brokers(separate.name)


async def test_default_name() -> None:
    assert MemoryBroker("memory://").name == MemoryBroker("memory:///").name == "default"
    await MemoryBroker("memory://").ensure_topics(["a", "b.>", ""])


async def test_state_survives_event_loop_change(broker: MemoryBroker) -> None:
    # pytest-asyncio gives every test a new loop; a waiter must not outlive its loop.
    sub = await sub_of(broker, "loop", "g")
    assert await sub.fetch(1, 0.01) == []

    def other_loop() -> list[str]:
        async def run() -> list[str]:
            await broker.publish([msg("loop", "z")])
            return bodies(await sub.fetch(1, 0.1))

        return asyncio.run(run())

    assert await asyncio.to_thread(other_loop) == ["z"]


async def test_close_wakes_waiting_fetch(broker: MemoryBroker) -> None:
    sub = await sub_of(broker, "cw", "g")
    task = asyncio.create_task(sub.fetch(1, 5.0))
    await asyncio.sleep(0.02)
    start = time.monotonic()
    await sub.close()
    assert await asyncio.wait_for(task, 1.0) == []
    assert time.monotonic() - start < 0.5


async def test_nak_delay_longer_than_ack_wait(broker: MemoryBroker) -> None:
    # The old ack deadline must not cut a nak delay short.
    sub = await sub_of(broker, "nl", "g", ack_wait=0.05)
    await broker.publish([msg("nl", "x")])
    (d,) = await sub.fetch(1, 0.1)
    start = time.monotonic()
    await d.nak(0.25)
    again = await sub.fetch(1, 2.0)
    assert again and again[0].delivery_count == 2
    assert time.monotonic() - start >= 0.23


async def test_max_deliver_counts_ack_deadline_expiries(broker: MemoryBroker) -> None:
    sub = await sub_of(broker, "mx", "g", ack_wait=0.03, max_deliver=2)
    await broker.publish([msg("mx", "x", key="k"), msg("mx", "y", key="k")])
    counts = [d.delivery_count for d in await sub.fetch(5, 0.1)]
    counts += [d.delivery_count for d in await sub.fetch(5, 1.0)]
    # x expires twice and is given up; only then may y (same key) go out.
    nxt = await sub.fetch(5, 1.0)
    assert counts == [1, 2]
    assert bodies(nxt) == ["y"] and nxt[0].delivery_count == 1


async def test_nak_delay_holds_key(broker: MemoryBroker) -> None:
    sub = await sub_of(broker, "hk", "g")
    await broker.publish([msg("hk", "a1", key="a"), msg("hk", "a2", key="a"), msg("hk", "b1")])
    first = await sub.fetch(10, 0.1)
    assert bodies(first) == ["a1", "b1"]
    await first[0].nak(0.1)
    await first[1].ack()
    assert await sub.fetch(10, 0.05) == []  # a2 waits behind a1's delay
    again = await sub.fetch(10, 1.0)
    assert bodies(again) == ["a1"]
    await again[0].ack()
    assert bodies(await sub.fetch(10, 0.1)) == ["a2"]


async def test_group_identity_includes_pattern(broker: MemoryBroker) -> None:
    one = await sub_of(broker, "gp.a", "same")
    other = await sub_of(broker, "gp.*", "same")
    await broker.publish([msg("gp.a", "x")])
    assert bodies(await one.fetch(5, 0.1)) == ["x"]
    assert bodies(await other.fetch(5, 0.1)) == ["x"]


async def test_fallback_id_stable_across_redelivery(broker: MemoryBroker) -> None:
    sub = await sub_of(broker, "fb", "g")
    await broker.publish([OutMessage("fb", b"raw", {})])  # no af-id: a foreign producer
    (d1,) = await sub.fetch(1, 0.1)
    await d1.nak()
    (d2,) = await sub.fetch(1, 0.1)
    assert d1.fallback_id == d2.fallback_id and d2.delivery_count == 2


async def test_publish_from_another_thread_wakes_fetch(broker: MemoryBroker) -> None:
    sub = await sub_of(broker, "th", "g")

    def publish_elsewhere() -> None:
        time.sleep(0.05)
        asyncio.run(broker.publish([msg("th", "x")]))

    start = time.monotonic()
    thread = asyncio.create_task(asyncio.to_thread(publish_elsewhere))
    got = await sub.fetch(1, 3.0)
    await thread
    assert bodies(got) == ["x"]
    assert time.monotonic() - start < 1.0


async def test_timer_heap_stays_bounded(broker: MemoryBroker) -> None:
    sub = await sub_of(broker, "hp", "g", ack_wait=60.0, max_in_flight=0)
    await broker.publish([msg("hp", str(i)) for i in range(5000)])
    for d in await sub.fetch(5000, 0.1):
        await d.in_progress()
        await d.ack()
    group = broker._state.groups[("g", "hp")]
    # Acked and extended deadlines are swept, not kept for the whole ack_wait.
    assert len(group._timers) <= 2048


async def test_stress_order_and_completeness(broker: MemoryBroker) -> None:
    subs = [await sub_of(broker, "st.>", "g", ack_wait=0.05, max_in_flight=5) for _ in range(3)]
    n, keys = 300, 7
    await broker.publish(
        [msg(f"st.{i % 2}", f"{i % keys}:{i}", key=f"k{i % keys}") for i in range(n)]
    )
    done: dict[int, list[int]] = {k: [] for k in range(keys)}
    tries: dict[int, int] = {}

    async def work(sub: Subscription) -> None:
        idle = 0
        while idle < 3:
            batch = await sub.fetch(5, 0.1)
            idle = 0 if batch else idle + 1
            for d in batch:
                k, i = map(int, d.payload.decode().split(":"))
                tries[i] = tries.get(i, 0) + 1
                if i % 11 == 0 and tries[i] == 1:
                    continue  # drop it: the ack deadline brings it back
                if i % 13 == 0 and tries[i] < 3:
                    await d.nak(0.005)
                    continue
                await d.in_progress()
                done[k].append(i)
                await d.ack()

    await asyncio.wait_for(asyncio.gather(*(work(s) for s in subs)), 20)
    for k in range(keys):
        assert done[k] == list(range(k, n, keys))
