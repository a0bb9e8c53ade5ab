"""KafkaBroker against a real Apache Kafka broker: the protocol, piece by piece."""

from __future__ import annotations

import asyncio
import itertools
import os
import signal
import subprocess
import sys
import textwrap
import time

import pytest

from agentflow import _native
from agentflow.brokers import BrokerError, OutMessage, PublishError, from_url
from agentflow.brokers.kafka import KafkaBroker
from agentflow.brokers.kafka_delivery import KafkaDelivery
from tests.kafka.support import (
    committed,
    committed_one,
    connected,
    fast,
    fetch_n,
    name,
    quiet,
    read_topic,
)

pytestmark = pytest.mark.kafka


def msgs(topic: str, n: int, keys: int = 4, prefix: str = "m") -> list[OutMessage]:
    return [
        OutMessage(
            topic, f"{prefix}{i}".encode(), {"af-id": f"{prefix}-{topic}-{i}"}, f"k{i % keys}"
        )
        for i in range(n)
    ]


async def test_round_trip_keys_order_headers_and_commit(kafka_url: str) -> None:
    broker = await connected(fast(kafka_url))
    topic, group = name(), name("g")
    try:
        await broker.ensure_topics([topic])
        await broker.publish(msgs(topic, 60))
        sub = await broker.subscribe(topic, group, ack_wait=30, max_in_flight=100, max_deliver=5)
        got = await fetch_n(sub, 60)
        by_key: dict[str | None, list[int]] = {}
        partitions: dict[str | None, set[str]] = {}
        for d in got:
            assert isinstance(d, KafkaDelivery)
            assert d.delivery_count == 1 and d.topic == topic
            n = int(d.payload[1:])
            assert d.key == f"k{n % 4}"
            assert d.headers == {"af-id": f"m-{topic}-{n}"}
            assert d.position["topic"] == topic
            assert d.fallback_id == f"{topic}:{d.position['partition']}:{d.position['offset']}"
            by_key.setdefault(d.key, []).append(n)
            partitions.setdefault(d.key, set()).add(d.position["partition"])
            await d.ack()
        for key, ns in by_key.items():
            assert ns == sorted(ns), f"key {key} out of order"
            assert len(partitions[key]) == 1, "one key, one partition"
        await sub.close()
        offsets = await committed(broker, group)
        assert sum(o for (t, _), (o, _) in offsets.items() if t == topic) == 60
        # Companions were created explicitly with the topic.
        topics = set(await broker.admin.list_topics())
        assert {
            f"{topic}.retry.1",
            f"{topic}.retry.2",
            f"{topic}.retry.3",
            f"{topic}.dlq",
        } <= topics
    finally:
        await broker.close()


async def test_out_of_order_acks_commit_contiguously_and_done_ones_are_skipped(
    kafka_url: str,
) -> None:
    url = fast(kafka_url, partitions=1)
    broker = await connected(url)
    topic, group = name(), name("g")
    try:
        await broker.ensure_topics([topic])
        await broker.publish(msgs(topic, 10, keys=10))
        sub = await broker.subscribe(topic, group, ack_wait=30, max_in_flight=50, max_deliver=9)
        got = sorted(await fetch_n(sub, 10), key=lambda d: int(d.position["offset"]))
        for d in got[1:]:
            await d.ack()  # everything but the first
        await sub.close()
        ((offset, meta),) = [
            v for (t, _), v in (await committed(broker, group)).items() if t == topic
        ]
        assert offset == 0, "never past the unfinished offset 0"
        assert meta == "af1 0:1 1-9:d", meta
        again = await broker.subscribe(topic, group, ack_wait=30, max_in_flight=50, max_deliver=9)
        redo = await fetch_n(again, 1)
        assert redo[0].payload == b"m0" and redo[0].delivery_count == 2
        assert await quiet(again, 1.5) == [], "the finished ones are not redelivered"
        await redo[0].ack()
        await again.close()
        ((offset, meta),) = [
            v for (t, _), v in (await committed(broker, group)).items() if t == topic
        ]
        assert (offset, meta) == (10, "")
    finally:
        await broker.close()


async def test_nak_goes_through_retry_tiers_with_count_and_delay(kafka_url: str) -> None:
    broker = await connected(fast(kafka_url, retry_delays="1s,10s,60s"))
    topic, group = name(), name("g")
    try:
        await broker.ensure_topics([topic])
        await broker.publish([OutMessage(topic, b"x", {"af-id": "X1", "h": "v"}, "k")])
        sub = await broker.subscribe(topic, group, ack_wait=30, max_in_flight=10, max_deliver=9)
        first = (await fetch_n(sub, 1))[0]
        original = dict(first.position)
        t0 = time.monotonic()
        await first.nak(0.6)
        second = (await fetch_n(sub, 1))[0]
        waited = time.monotonic() - t0
        assert 0.5 <= waited < 4.0, waited
        assert second.delivery_count == 2
        assert second.topic == topic, "a tier delivery shows the original topic"
        assert second.position == original and second.fallback_id == first.fallback_id
        assert second.headers == {"af-id": "X1", "h": "v", "af-attempt": "2"}
        assert second.key == "k" and second.payload == b"x"
        await second.nak(5.0)  # > 1 s: tier 2
        tier2 = await read_topic(broker, f"{topic}.retry.2")
        assert len(tier2) == 1
        headers = {k: v.decode() for k, v in tier2[0].headers}
        assert headers["af-retry-group"] == group and headers["af-attempt"] == "3"
        assert int(headers["af-not-before"]) >= int(time.time() * 1000) + 3000
        assert await quiet(sub, 2.0) == [], "not before it is due"
        third = (await fetch_n(sub, 1, timeout=10))[0]
        assert third.delivery_count == 3 and third.position == original
        await third.term()
        assert await quiet(sub, 1.5) == [], "term ends it"
        await sub.close()
        offsets = await committed(broker, group)
        assert offsets[(f"{topic}.retry.2", tier2[0].partition)][0] == tier2[0].offset + 1
    finally:
        await broker.close()


async def test_tier_copies_belong_to_the_group_that_asked(kafka_url: str) -> None:
    broker = await connected(fast(kafka_url))
    topic = name()
    try:
        await broker.ensure_topics([topic])
        await broker.publish([OutMessage(topic, b"x", {"af-id": "S1"}, "k")])
        a = await broker.subscribe(
            topic, "ga" + topic, ack_wait=30, max_in_flight=10, max_deliver=9
        )
        b = await broker.subscribe(
            topic, "gb" + topic, ack_wait=30, max_in_flight=10, max_deliver=9
        )
        da, db = (await fetch_n(a, 1))[0], (await fetch_n(b, 1))[0]
        await da.nak(0)
        await db.ack()
        assert (await fetch_n(a, 1))[0].delivery_count == 2
        assert await quiet(b, 1.5) == [], "group b does not see group a's retry"
        await a.close()
        await b.close()
    finally:
        await broker.close()


async def test_max_in_flight_pauses_and_the_poll_loop_keeps_the_member(kafka_url: str) -> None:
    broker = await connected(fast(kafka_url, max_poll_interval_ms=2000))
    topic, group = name(), name("g")
    try:
        await broker.ensure_topics([topic])
        await broker.publish(msgs(topic, 30))
        sub = await broker.subscribe(topic, group, ack_wait=60, max_in_flight=5, max_deliver=9)
        held = await fetch_n(sub, 5)
        assert await quiet(sub, 1.0) == [], "nothing beyond max_in_flight"
        consumer = sub.consumer  # type: ignore[attr-defined]
        assigned = set(consumer.assignment())
        assert set(consumer.paused()) == assigned
        await asyncio.sleep(4.0)  # a "long handler": twice max_poll_interval without fetch()
        assert set(consumer.assignment()) == assigned, "still a member"
        for d in held:
            await d.ack()
        for _ in range(5):  # the rest, five at a time
            more = await fetch_n(sub, 5)
            assert await sub.fetch(5, 0.3) == []
            for d in more:
                await d.ack()
        await sub.close()
        offsets = await committed(broker, group)
        assert sum(o for (t, _), (o, _) in offsets.items() if t == topic) == 30
    finally:
        await broker.close()


async def test_restart_resumes_from_the_committed_offset(kafka_url: str) -> None:
    broker = await connected(fast(kafka_url, partitions=1))
    topic, group = name(), name("g")
    try:
        await broker.ensure_topics([topic])
        await broker.publish(msgs(topic, 20))
        sub = await broker.subscribe(topic, group, ack_wait=30, max_in_flight=10, max_deliver=9)
        first = await fetch_n(sub, 10)
        for d in first:
            await d.ack()
        await sub.close()
        sub = await broker.subscribe(topic, group, ack_wait=30, max_in_flight=50, max_deliver=9)
        rest = await fetch_n(sub, 10)
        assert [d.payload for d in rest] == [f"m{i}".encode() for i in range(10, 20)]
        assert all(d.delivery_count == 1 for d in rest)
        assert await quiet(sub, 1.0) == []
        await sub.close()
    finally:
        await broker.close()


async def test_ack_wait_hands_a_silent_delivery_out_again(kafka_url: str) -> None:
    broker = await connected(fast(kafka_url))
    topic, group = name(), name("g")
    try:
        await broker.ensure_topics([topic])
        await broker.publish(msgs(topic, 1))
        sub = await broker.subscribe(topic, group, ack_wait=1.0, max_in_flight=10, max_deliver=3)
        d1 = (await fetch_n(sub, 1))[0]
        await asyncio.sleep(0.6)
        await d1.in_progress()  # extends the deadline
        assert await quiet(sub, 0.6) == []
        d2 = (await fetch_n(sub, 1, timeout=5))[0]
        assert d2.delivery_count == 2 and d2.payload == d1.payload
        d3 = (await fetch_n(sub, 1, timeout=5))[0]
        assert d3.delivery_count == 3
        assert await quiet(sub, 2.0) == [], "max_deliver=3 reached: not delivered again"
        await sub.close()
    finally:
        await broker.close()


_CRASHER = textwrap.dedent(
    """
    import asyncio, os, signal, sys
    from agentflow.brokers import from_url

    async def main() -> None:
        url, topic, group = sys.argv[1:4]
        broker = from_url(url)
        await broker.connect()
        sub = await broker.subscribe(topic, group, ack_wait=30, max_in_flight=10, max_deliver=50)
        while True:
            got = await sub.fetch(10, 1.0)
            if got:
                print("count", got[0].delivery_count, flush=True)
                os.kill(os.getpid(), signal.SIGKILL)  # dies mid-handler, every time

    asyncio.run(main())
    """
)


async def test_attempt_record_counts_deliveries_that_killed_the_worker(kafka_url: str) -> None:
    url = fast(kafka_url, partitions=1, session_timeout_ms=1500, heartbeat_interval_ms=300)
    broker = await connected(url)
    topic, group = name(), name("g")
    try:
        await broker.ensure_topics([topic])
        await broker.publish(msgs(topic, 3))
        counts = []
        for _ in range(3):
            proc = await asyncio.create_subprocess_exec(
                sys.executable,
                "-c",
                _CRASHER,
                url,
                topic,
                group,
                stdout=subprocess.PIPE,
                cwd=os.getcwd(),
            )
            out, _ = await asyncio.wait_for(proc.communicate(), 60)
            assert proc.returncode == -signal.SIGKILL
            counts.append(int(out.decode().split()[-1]))
        assert counts == [1, 2, 3], "each crash raised the delivery count"
        offset, meta = await committed_one(broker, group, topic)
        # The whole first batch was in flight at the first crash; after it the suspects went
        # out one at a time, so the later crashes counted against the first record only.
        assert offset == 0 and meta == "af1 0:3 1-2:1", meta
        sub = await broker.subscribe(topic, group, ack_wait=30, max_in_flight=10, max_deliver=50)
        delivered: list[tuple[bytes, int]] = []
        for _ in range(3):
            d = (await fetch_n(sub, 1, timeout=30))[0]
            assert await sub.fetch(10, 0.3) == [], "a suspect runs alone"
            delivered.append((d.payload, d.delivery_count))
            await d.ack()
        assert delivered == [(b"m0", 4), (b"m1", 2), (b"m2", 2)]
        await sub.close()
    finally:
        await broker.close()


async def test_a_flush_goes_out_as_record_batches_where_send_would_put_each(
    kafka_url: str,
) -> None:
    # 16 KB batches (the Java client's default): the flush below needs several per partition.
    broker = await connected(fast(kafka_url, partitions=3, max_batch_size=16384))
    topic = name()
    producer = broker.publisher.producer
    calls = {"send": 0, "send_batch": 0}
    for method in calls:
        original = getattr(producer, method)

        def counting(*a: object, _m: str = method, _f: object = original, **kw: object) -> object:
            calls[_m] += 1
            return _f(*a, **kw)  # type: ignore[operator]

        setattr(producer, method, counting)
    try:
        await broker.ensure_topics([topic])
        pad = b"x" * 400  # 300 records of ~0.5 KB: more than one 16 KB batch per partition
        keyed = [
            OutMessage(topic, b"%d:" % i + pad, {"af-id": f"{topic}-{i}"}, f"k{i % 7}")
            for i in range(300)
        ]
        keyless = [
            OutMessage(topic, b"n%d:" % i + pad, {"af-id": f"{topic}-n{i}"}, None)
            for i in range(20)
        ]
        await broker.publish(keyed + keyless)
        assert calls["send"] == 0, "no record sent alone"
        assert 3 < calls["send_batch"] < 40, calls
        records = await read_topic(broker, topic)
        assert len(records) == 320, "each record exactly once"
        by_key: dict[str, list[int]] = {}
        keyless_partitions = set()
        for r in records:
            head = r.value.split(b":")[0].decode()
            if r.key is None:
                keyless_partitions.add(r.partition)
                continue
            key = r.key.decode()
            assert r.partition == _native.murmur2_partition(r.key, 3), "the Java client's choice"
            by_key.setdefault(key, []).append(int(head))
        assert all(ns == sorted(ns) for ns in by_key.values()), "each key in order"
        assert len(keyless_partitions) == 1, "a flush's keyless records stay together"
    finally:
        await broker.close()


async def test_a_flush_larger_than_16kb_per_partition_is_one_produce_request(
    kafka_url: str,
) -> None:
    # aiokafka keeps one produce request in flight per broker and puts one batch per
    # partition in it: a second batch of a partition would wait for the first's round trip.
    broker = await connected(fast(kafka_url, partitions=2))
    topic = name()
    client = broker.publisher.producer.client
    original = client.send
    produce_requests: list[int] = []

    async def counting(node_id: int, request: object, **kw: object) -> object:
        if type(request).__name__.startswith("ProduceRequest"):
            produce_requests.append(node_id)
        return await original(node_id, request, **kw)

    try:
        await broker.ensure_topics([topic])
        # Warm every partition the flush writes to: a partition whose leader is not ready
        # yet answers NotLeaderForPartition, and the retry is a second produce request.
        await broker.publish(
            [OutMessage(topic, b"warm", {"af-id": f"{topic}-w{k}"}, f"k{k}") for k in range(5)]
        )
        client.send = counting
        pad = b"x" * 500  # 400 records of ~0.5 KB: ~100 KB per partition
        await broker.publish(
            [
                OutMessage(topic, b"%d:" % i + pad, {"af-id": f"{topic}-{i}"}, f"k{i % 5}")
                for i in range(400)
            ]
        )
        assert len(produce_requests) == 1, f"{len(produce_requests)} produce requests"
        assert len(await read_topic(broker, topic)) == 405
    finally:
        client.send = original
        await broker.close()


def key_for(partition: int, partitions: int) -> str:
    """A message key the producer's partitioner sends to ``partition``."""
    for i in itertools.count():
        key = f"k{i}"
        if _native.murmur2_partition(key.encode(), partitions) == partition:
            return key
    raise AssertionError("unreachable")


async def test_a_suspect_goes_out_only_after_finished_work_is_recorded(kafka_url: str) -> None:
    # Periodic commits out of the way: only the hand-out commit can record the ack.
    url = fast(kafka_url, partitions=2, commit_interval="60s")
    broker = await connected(url)
    topic, group = name(), name("g")
    try:
        await broker.ensure_topics([topic])
        # An earlier owner of partition 1 was handed offset 0 once and died: a suspect.
        await commit_record(url, group, topic, partition=1, metadata="af1 0:1")
        await broker.publish([OutMessage(topic, b"a", {"af-id": f"{topic}-a"}, key_for(0, 2))])
        sub = await broker.subscribe(topic, group, ack_wait=30, max_in_flight=10, max_deliver=9)
        a = (await fetch_n(sub, 1))[0]
        assert a.payload == b"a" and a.delivery_count == 1
        await a.ack()
        await broker.publish([OutMessage(topic, b"s", {"af-id": f"{topic}-s"}, key_for(1, 2))])
        s = (await fetch_n(sub, 1))[0]
        assert s.payload == b"s" and s.delivery_count == 2
        # The suspect may crash its worker now; the finished message must not be charged.
        offsets = await committed(broker, group)
        assert offsets[(topic, 0)][0] == 1, f"the ack of partition 0 was recorded: {offsets}"
        assert offsets[(topic, 1)] == (0, "af1 0:2"), offsets
        await s.ack()
        await sub.close()
    finally:
        await broker.close()


async def commit_record(url: str, group: str, topic: str, partition: int, metadata: str) -> None:
    """Commit offset 0 with ``metadata`` for a partition, as a member that then died would."""
    from aiokafka import AIOKafkaConsumer, TopicPartition
    from aiokafka.structs import OffsetAndMetadata

    settings = KafkaBroker(url).settings
    consumer = AIOKafkaConsumer(
        **settings.client_kwargs(), group_id=group, enable_auto_commit=False
    )
    await consumer.start()
    try:
        tp = TopicPartition(topic, partition)
        consumer.assign([tp])
        await consumer.commit({tp: OffsetAndMetadata(0, metadata)})
    finally:
        await consumer.stop()


async def test_dlq_browse_remove_purge(kafka_url: str) -> None:
    broker = await connected(fast(kafka_url))
    dlq = name() + ".dlq"
    try:
        await broker.ensure_topics([dlq])
        assert await broker.browse(name() + ".dlq") == [], "a missing topic browses empty"
        await broker.publish(msgs(dlq, 6, keys=1))  # one key: one partition, in order
        listed = await broker.browse(dlq)
        assert [m.payload for m in listed] == [f"m{i}".encode() for i in range(6)]
        assert listed[0].headers["af-id"] == f"m-{dlq}-0" and listed[0].key == "k0"
        assert set(listed[0].position) == {"topic", "partition", "offset"}
        assert [m.payload for m in await broker.browse(dlq, limit=2)] == [b"m0", b"m1"]
        await broker.remove(dlq, [listed[0], listed[3]])  # one at the front, one in the middle
        assert [m.payload for m in await broker.browse(dlq)] == [b"m1", b"m2", b"m4", b"m5"]
        await broker.remove(dlq, [listed[1], listed[2]])
        assert [m.payload for m in await broker.browse(dlq)] == [b"m4", b"m5"]
        await broker.publish(msgs(dlq, 2, keys=1, prefix="n"))
        assert await broker.purge(dlq) == 4
        assert await broker.browse(dlq) == []
        assert await broker.purge(dlq) == 0
    finally:
        await broker.close()


async def test_unreachable_broker_and_bad_urls_fail_clearly(kafka_url: str) -> None:
    url = "kafka://someone:secret@127.0.0.1:1?connect_timeout=3s"
    broker = from_url(url)
    t0 = time.monotonic()
    with pytest.raises(BrokerError) as err:
        await broker.connect()
    assert time.monotonic() - t0 < 5
    assert "127.0.0.1:1" in str(err.value) and "secret" not in str(err.value)
    with pytest.raises(BrokerError, match="unknown option"):
        from_url(kafka_url + "?no_such_knob=1")
    with pytest.raises(BrokerError, match="not connected"):
        await KafkaBroker(kafka_url).ensure_topics(["x"])


async def test_oversized_message_is_refused_before_anything_is_sent(kafka_url: str) -> None:
    broker = await connected(fast(kafka_url, max_request_size=100_000))
    topic = name()
    try:
        await broker.ensure_topics([topic])
        batch = [OutMessage(topic, b"small", {"af-id": "a"}), OutMessage(topic, b"x" * 200_000, {})]
        with pytest.raises(PublishError) as err:
            await broker.publish(batch)
        assert topic in str(err.value) and "bytes" in str(err.value)
        assert await read_topic(broker, topic) == [], "nothing of the batch was written"
        with pytest.raises(PublishError, match="invalid Kafka topic"):
            await broker.publish([OutMessage("bad topic", b"", {})])
    finally:
        await broker.close()


async def test_wildcards_consume_matching_topics_and_their_retries(kafka_url: str) -> None:
    broker = await connected(fast(kafka_url))
    base, group = name(), name("g")
    try:
        await broker.ensure_topics([f"{base}.a", f"{base}.b", f"{base}.a.deeper"])
        await broker.publish(
            [
                OutMessage(f"{base}.a", b"a", {"af-id": "A"}, "k"),
                OutMessage(f"{base}.b", b"b", {"af-id": "B"}, "k"),
                OutMessage(f"{base}.a.deeper", b"deep", {"af-id": "D"}, "k"),
                OutMessage(f"{base}.a.dlq", b"dead", {"af-id": "Z"}, "k"),
            ]
        )
        sub = await broker.subscribe(
            f"{base}.*", group, ack_wait=30, max_in_flight=10, max_deliver=9
        )
        got = await fetch_n(sub, 2)
        assert sorted(d.payload for d in got) == [b"a", b"b"]
        a = next(d for d in got if d.payload == b"a")
        await a.nak(0.2)
        again = (await fetch_n(sub, 1))[0]
        assert again.payload == b"a" and again.topic == f"{base}.a" and again.delivery_count == 2
        for d in [*got, again]:
            await d.ack()
        assert await quiet(sub, 1.0) == [], "no deeper topic, no DLQ, no duplicate"
        await sub.close()
    finally:
        await broker.close()


async def test_a_wildcard_picks_up_a_topic_created_after_it_subscribed(kafka_url: str) -> None:
    broker = await connected(fast(kafka_url))
    base, group = name(), name("g")
    try:
        await broker.ensure_topics([f"{base}.first"])
        sub = await broker.subscribe(
            f"{base}.>", group, ack_wait=30, max_in_flight=10, max_deliver=9
        )
        await broker.publish([OutMessage(f"{base}.later.x", b"new", {"af-id": "N"}, "k")])
        got = (await fetch_n(sub, 1, timeout=30))[0]
        assert got.topic == f"{base}.later.x"
        await got.nak(0.1)  # its retry tier was created when the topic was assigned
        again = (await fetch_n(sub, 1, timeout=30))[0]
        assert (again.topic, again.delivery_count) == (f"{base}.later.x", 2)
        await again.ack()
        await sub.close()
    finally:
        await broker.close()


async def test_a_group_skips_a_message_id_it_already_acknowledged(kafka_url: str) -> None:
    topic, group = name(), name("g")
    first, second = await connected(fast(kafka_url)), await connected(fast(kafka_url))
    try:
        await first.ensure_topics([topic])
        await first.publish([OutMessage(topic, b"1", {"af-id": "SAME"}, "k")])
        sub = await first.subscribe(topic, group, ack_wait=30, max_in_flight=10, max_deliver=9)
        await (await fetch_n(sub, 1))[0].ack()
        # Another producer (say, restarted after a crash) publishes the same id again.
        await second.publish([OutMessage(topic, b"1", {"af-id": "SAME"}, "k")])
        await second.publish([OutMessage(topic, b"2", {"af-id": "OTHER"}, "k")])
        got = await fetch_n(sub, 1)
        assert got[0].payload == b"2"
        await got[0].ack()
        assert await quiet(sub, 1.0) == []
        await sub.close()
    finally:
        await first.close()
        await second.close()


async def test_rebalance_drains_held_deliveries_before_handing_over(kafka_url: str) -> None:
    broker = await connected(fast(kafka_url, partitions=2))
    topic, group = name(), name("g")
    try:
        await broker.ensure_topics([topic])
        await broker.publish(msgs(topic, 20, keys=2))
        one = await broker.subscribe(topic, group, ack_wait=30, max_in_flight=50, max_deliver=9)
        held = await fetch_n(one, 20)

        async def finish_slowly() -> None:
            await asyncio.sleep(1.5)  # the rebalance waits for these
            for d in held:
                await d.ack()

        task = asyncio.create_task(finish_slowly())
        two = await broker.subscribe(topic, group, ack_wait=30, max_in_flight=50, max_deliver=9)
        assert await quiet(two, 3.0) == [], "nothing handed over twice"
        await task
        await broker.publish(msgs(topic, 10, keys=10, prefix="n"))
        got_one, got_two = await quiet(one, 3.0), await quiet(two, 0.1)
        got_two += await quiet(two, 2.0)
        assert sorted(d.payload for d in got_one + got_two) == sorted(
            f"n{i}".encode() for i in range(10)
        )
        assert got_one and got_two, "both members got a partition"
        for d in got_one + got_two:
            await d.ack()
        await one.close()
        await two.close()
    finally:
        await broker.close()
