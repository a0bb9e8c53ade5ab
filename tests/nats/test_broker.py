"""NatsBroker against a real nats-server: the broker protocol's semantics, one by one."""

from __future__ import annotations

import asyncio
import time
import uuid
from collections.abc import Callable

import nats.errors
import pytest
from nats.aio.msg import Msg
from nats.js import api
from nats.js.errors import APIError, NotFoundError

from agentflow.brokers import from_url
from agentflow.brokers.base import BrokerError, Delivery, OutMessage, PublishError, Subscription
from agentflow.brokers.nats import NatsBroker, NatsDelivery, NatsSubscription
from agentflow.brokers.nats_streams import MANAGED_DESCRIPTION

pytestmark = pytest.mark.nats

Subject = Callable[[str], str]


def msg(topic: str, body: str, *, key: str | None = None, mid: str | None = None) -> OutMessage:
    """An OutMessage with a unique af-id unless one is given."""
    return OutMessage(topic, body.encode(), {"af-id": mid or uuid.uuid4().hex}, key)


async def sub_of(
    broker: NatsBroker,
    pattern: str,
    group: str = "g",
    *,
    ack_wait: float = 30.0,
    max_in_flight: int = 100,
    max_deliver: int = 0,
) -> Subscription:
    """Subscribe with roomy defaults."""
    return await broker.subscribe(
        pattern, group, ack_wait=ack_wait, max_in_flight=max_in_flight, max_deliver=max_deliver
    )


async def drain(sub: Subscription, want: int, timeout: float = 10.0) -> list[Delivery]:
    """Fetch until ``want`` deliveries arrived or ``timeout`` passed."""
    got: list[Delivery] = []
    deadline = time.monotonic() + timeout
    while len(got) < want and time.monotonic() < deadline:
        got.extend(await sub.fetch(want - len(got), 0.5))
    return got


async def test_from_url_returns_nats_broker_for_nats_and_tls() -> None:
    assert isinstance(from_url("nats://127.0.0.1:4222"), NatsBroker)
    assert isinstance(from_url("tls://127.0.0.1:4222"), NatsBroker)


async def test_publish_then_fetch_carries_headers_key_position(
    broker: NatsBroker, subject: Subject
) -> None:
    topic = subject("in")
    await broker.ensure_topics([topic])
    await broker.publish([msg(topic, "hello", key="k1", mid="id-1")])
    sub = await sub_of(broker, topic)
    [d] = await drain(sub, 1)
    assert d.topic == topic
    assert d.payload == b"hello"
    assert d.key == "k1"
    assert d.headers["af-id"] == "id-1"
    assert d.headers["Nats-Msg-Id"] == "id-1"
    assert d.headers["af-key"] == "k1"
    assert d.delivery_count == 1
    stream = d.position["stream"]
    assert stream == f"AF_{topic.split('.')[0]}"
    assert d.position["seq"] == "1"
    assert d.fallback_id == f"{stream}:1"
    await d.ack()
    assert await sub.fetch(10, 0.3) == []
    await sub.close()


async def test_dedup_by_msg_id_and_explicit_dedup_id(broker: NatsBroker, subject: Subject) -> None:
    topic = subject("in")
    await broker.publish([msg(topic, "a", mid="same"), msg(topic, "b", mid="same")])
    await broker.publish([msg(topic, "c", mid="same")])
    # dedup_id overrides af-id as Nats-Msg-Id (used for DLQ copies and replays).
    m1 = msg(topic, "d", mid="same")
    m1.dedup_id = "same:replay:1"
    await broker.publish([m1, msg(topic, "e", mid="other")])
    sub = await sub_of(broker, topic)
    got = await drain(sub, 3)
    assert sorted(d.payload for d in got) == [b"a", b"d", b"e"]
    assert await sub.fetch(10, 0.3) == []
    info = await broker.js.stream_info(got[0].position["stream"])
    assert info.state.messages == 3


async def test_publish_many_keeps_order_and_returns_after_all_acks(
    broker: NatsBroker, subject: Subject
) -> None:
    topic = subject("bulk")
    n = 3000
    t0 = time.monotonic()
    await broker.publish([msg(topic, str(i)) for i in range(n)])
    elapsed = time.monotonic() - t0
    info = await broker.js.stream_info(f"AF_{topic.split('.')[0]}")
    assert info.state.messages == n  # all stored by the time publish returned
    sub = await sub_of(broker, topic, max_in_flight=n)
    got = await drain(sub, n, timeout=30)
    assert [int(d.payload) for d in got] == list(range(n))
    for d in got:
        await d.ack()
    assert elapsed < 10, f"publishing {n} took {elapsed:.1f}s"


async def test_a_publish_goes_out_in_window_sized_writes(nats_url: str, subject: Subject) -> None:
    narrow = NatsBroker(f"{nats_url}?publish_window=64")
    await narrow.connect()
    nc = narrow.nc
    writes: list[int] = []  # messages per write
    original = nc._send_command

    async def counting(cmd: bytes, priority: bool = False) -> None:
        writes.append(cmd.count(b"PUB "))
        await original(cmd, priority)

    try:
        topic = subject("narrow")
        await narrow.ensure_topics([topic])
        nc._send_command = counting  # type: ignore[method-assign]
        await narrow.publish([msg(topic, str(i)) for i in range(300)])
        del nc._send_command
        assert sum(writes) == 300 and max(writes) == 64, writes
        assert len(writes) < 60, "up to a window per write, not one write per message"
        sub = await sub_of(narrow, topic, max_in_flight=300)
        got = await drain(sub, 300, timeout=30)
        assert [int(d.payload) for d in got] == list(range(300))
    finally:
        await narrow.close()


async def test_pubacks_skip_nats_py_queue_but_a_status_reply_still_arrives(
    nats_url: str, subject: Subject, monkeypatch: pytest.MonkeyPatch
) -> None:
    from agentflow.brokers.nats_pubacks import PubAcks

    slow: list[str | None] = []  # replies that took nats-py's Msg + queue + callback path
    original = PubAcks._on_reply

    async def counting(self: PubAcks, reply: Msg) -> None:
        slow.append(reply.headers.get("Status") if reply.headers else None)
        await original(self, reply)

    monkeypatch.setattr(PubAcks, "_on_reply", counting)
    b = NatsBroker(nats_url)
    await b.connect()
    try:
        topic = subject("routed")
        await b.ensure_topics([topic])
        await b.publish([msg(topic, str(i)) for i in range(20)])
        assert slow == [], "plain PubAcks are resolved from the parser"
        # The stream vanishes behind the broker's back: the server answers the next publish
        # with a 503 status (a header block), which must still reach the publisher.
        js = b.nc.jetstream()
        await js.delete_stream(await js.find_stream_name_by_subject(topic))
        await b.publish([msg(topic, "after")])
        assert "503" in slow, slow
        sub = await sub_of(b, topic)
        got = await drain(sub, 1)
        assert [d.payload for d in got] == [b"after"]
    finally:
        await b.close()


async def test_competing_consumers_share_a_group_and_groups_see_everything(
    broker: NatsBroker, subject: Subject
) -> None:
    topic = subject("work")
    other = NatsBroker(broker.url)
    await other.connect()
    try:
        a = await sub_of(broker, topic, "workers")
        b = await sub_of(other, topic, "workers")
        audit = await sub_of(broker, topic, "audit")
        await broker.publish([msg(topic, str(i)) for i in range(200)])
        seen_a: list[Delivery] = []
        seen_b: list[Delivery] = []
        deadline = time.monotonic() + 15
        while len(seen_a) + len(seen_b) < 200 and time.monotonic() < deadline:
            for sub, seen in ((a, seen_a), (b, seen_b)):
                batch = await sub.fetch(10, 0.1)
                seen.extend(batch)
                for d in batch:
                    await d.ack()
        bodies = [d.payload for d in seen_a + seen_b]
        assert len(bodies) == 200 and len(set(bodies)) == 200
        assert seen_a and seen_b, "both group members got work"
        audited = await drain(audit, 200)
        assert len({d.payload for d in audited}) == 200
    finally:
        await other.close()


async def test_nak_with_delay_redelivers_later_with_higher_count(
    broker: NatsBroker, subject: Subject
) -> None:
    topic = subject("nak")
    sub = await sub_of(broker, topic)
    await broker.publish([msg(topic, "x")])
    [d] = await drain(sub, 1)
    t0 = time.monotonic()
    await d.nak(1.5)
    assert await sub.fetch(1, 0.8) == []  # not before the delay
    [again] = await drain(sub, 1, timeout=5)
    assert time.monotonic() - t0 >= 1.4
    assert again.delivery_count == 2
    await again.nak(0)  # immediate
    [third] = await drain(sub, 1, timeout=2)
    assert third.delivery_count == 3
    await third.ack()


async def test_ack_wait_expiry_redelivers_and_in_progress_extends_it(
    broker: NatsBroker, subject: Subject
) -> None:
    topic = subject("slow")
    sub = await sub_of(broker, topic, ack_wait=1.0)
    await broker.publish([msg(topic, "lost")])
    [_lost] = await drain(sub, 1)
    # Never settled: after ack_wait the server hands it out again (replacing the stale copy).
    [again] = await drain(sub, 1, timeout=3)
    assert again.payload == b"lost" and again.delivery_count == 2
    held = sub._outstanding  # type: ignore[attr-defined]
    assert list(held.values()) == [again], "the stale copy is no longer held"
    await _lost.ack()  # late, on the stale copy: the live copy of that message stays held
    assert list(held.values()) == [again]
    await again.ack()
    assert not held
    await broker.publish([msg(topic, "slow")])
    [slow] = await drain(sub, 1)
    t0 = time.monotonic()
    while time.monotonic() - t0 < 3.0:  # three ack_waits, heartbeating
        await slow.in_progress()
        assert await sub.fetch(5, 0.3) == [], "in_progress keeps it from coming back"
    await slow.ack()
    assert await sub.fetch(5, 1.5) == []


async def test_crash_suspects_go_out_alone_and_naked_retries_do_not(
    broker: NatsBroker, nats_url: str, subject: Subject
) -> None:
    topic = subject("suspects")
    sub = await sub_of(broker, topic, "grp", ack_wait=1.0)
    crashing = NatsBroker(nats_url)
    await crashing.connect()
    doomed = await sub_of(crashing, topic, "grp", ack_wait=1.0)
    await broker.publish([msg(topic, f"m{i}") for i in (1, 2, 3)])
    assert len(await drain(doomed, 3)) == 3
    await crashing.nc.close()  # the worker "dies": no nak, no ack, no close
    await broker.publish([msg(topic, "m0")])
    [m0] = await drain(sub, 1)
    await m0.nak()
    [retry] = await drain(sub, 1, timeout=2)
    assert retry.payload == b"m0" and retry.delivery_count == 2
    assert isinstance(retry, NatsDelivery) and not retry.suspect
    for _ in range(6):  # m1..m3 expire on the server while the retry is in flight
        await retry.in_progress()
        await asyncio.sleep(0.25)
    # Redelivered after expiry: suspects wait for the work in flight ...
    assert await sub.fetch(10, 0.3) == []
    await retry.ack()
    # ... and then go out one at a time, alone.
    alone: list[list[bytes]] = []
    for _ in range(3):
        got = await drain(sub, 1, timeout=3)
        alone.append([d.payload for d in got])
        assert all(isinstance(d, NatsDelivery) and d.suspect for d in got)
        assert all(d.delivery_count == 2 for d in got)
        assert await sub.fetch(10, 0.2) == [], "nothing else while a suspect is out"
        for d in got:
            await d.ack()
    assert alone == [[b"m1"], [b"m2"], [b"m3"]]
    await broker.publish([msg(topic, "fresh")])
    [fresh] = await drain(sub, 1)
    assert isinstance(fresh, NatsDelivery) and not fresh.suspect


async def test_nak_marks_are_shared_between_workers(nats_url: str, subject: Subject) -> None:
    topic = subject("shared")
    a, b = NatsBroker(nats_url), NatsBroker(nats_url)
    await a.connect()
    await b.connect()
    try:
        sub_a = await sub_of(a, topic, "grp", ack_wait=30)
        await a.publish([msg(topic, "x")])
        assert len(await drain(sub_a, 1)) == 1
        await sub_a.close()  # naks it: handed back, not crashed
        sub_b = await sub_of(b, topic, "grp", ack_wait=30)
        [d2] = await drain(sub_b, 1)
        assert d2.delivery_count == 2
        assert isinstance(d2, NatsDelivery) and not d2.suspect
    finally:
        await a.close()
        await b.close()


async def test_term_stops_redelivery(broker: NatsBroker, subject: Subject) -> None:
    topic = subject("term")
    sub = await sub_of(broker, topic, ack_wait=0.5)
    await broker.publish([msg(topic, "poison")])
    [d] = await drain(sub, 1)
    await d.term()
    await d.ack()  # a second settle is ignored, as the protocol allows
    assert await sub.fetch(5, 1.5) == []


async def test_ack_many_acks_in_one_write_and_skips_settled_ones(
    broker: NatsBroker, subject: Subject
) -> None:
    topic = subject("ackmany")
    sub = await sub_of(broker, topic, ack_wait=1.0)
    await broker.publish([msg(topic, str(i)) for i in range(6)])
    got = await drain(sub, 6)
    await got[0].nak(5.0)  # settled already: ack_many must not ack it
    nc = broker.nc
    writes: list[bytes] = []
    original = nc._send_command

    async def counting(cmd: bytes, priority: bool = False) -> None:
        writes.append(cmd)
        await original(cmd, priority)

    nc._send_command = counting  # type: ignore[method-assign]
    try:
        errors = await NatsDelivery.ack_many(got)
    finally:
        nc._send_command = original  # type: ignore[method-assign]
    assert errors == [None] * 6
    assert len(writes) == 1 and writes[0].count(b"PUB $JS.ACK.") == 5
    # Past ack_wait only the nak'd message comes back (after its delay); the acked stay acked.
    assert await sub.fetch(6, 2.0) == []
    [again] = await drain(sub, 1, timeout=6)
    assert again.payload == b"0" and again.delivery_count == 2


async def test_max_deliver_caps_redeliveries(broker: NatsBroker, subject: Subject) -> None:
    topic = subject("cap")
    sub = await sub_of(broker, topic, max_deliver=3)
    await broker.publish([msg(topic, "again")])
    counts = []
    for _ in range(3):
        [d] = await drain(sub, 1, timeout=3)
        counts.append(d.delivery_count)
        await d.nak()
    assert counts == [1, 2, 3]
    assert await sub.fetch(1, 1.0) == []


async def test_close_hands_back_unacked_promptly(broker: NatsBroker, subject: Subject) -> None:
    topic = subject("close")
    sub = await sub_of(broker, topic, "grp", ack_wait=60)
    await broker.publish([msg(topic, str(i)) for i in range(5)])
    got = await drain(sub, 5)
    await got[0].ack()
    await sub.close()
    assert await sub.fetch(5, 0.1) == []
    again = await sub_of(broker, topic, "grp", ack_wait=60)
    back = await drain(again, 4, timeout=5)  # long before ack_wait
    assert sorted(d.payload for d in back) == [b"1", b"2", b"3", b"4"]
    assert all(d.delivery_count == 2 for d in back)


async def test_fetch_never_returns_more_than_asked(broker: NatsBroker, subject: Subject) -> None:
    topic = subject("batch")
    sub = await sub_of(broker, topic)
    await broker.publish([msg(topic, str(i)) for i in range(50)])
    sizes = []
    total = 0
    while total < 50:
        batch = await sub.fetch(7, 1.0)
        assert batch, "messages are waiting"
        sizes.append(len(batch))
        total += len(batch)
    assert max(sizes) <= 7


async def test_wildcard_subscription_and_dlq_subject_share_the_stream(
    broker: NatsBroker, subject: Subject, prefix: str
) -> None:
    await broker.ensure_topics([subject("orders.created")])
    info = await broker.js.stream_info(f"AF_{prefix}")
    assert set(info.config.subjects or []) == {prefix, f"{prefix}.>"}
    assert info.config.description == MANAGED_DESCRIPTION
    assert info.config.duplicate_window == 120
    # The DLQ subject already has a home before anything flows.
    assert await broker.js.find_stream_name_by_subject(subject("orders.created.dlq")) == (
        f"AF_{prefix}"
    )
    sub = await sub_of(broker, subject("orders.*"))
    await broker.publish([msg(subject("orders.created"), "1"), msg(subject("orders.paid"), "2")])
    await broker.publish([msg(subject("orders.created.dlq"), "dead")])
    got = await drain(sub, 3, timeout=2)
    assert sorted(d.payload for d in got) == [b"1", b"2"]  # the 3-token DLQ is not matched


async def test_existing_stream_is_bound_not_duplicated(
    broker: NatsBroker, subject: Subject, prefix: str
) -> None:
    # An operator's stream covering exactly one subject.
    await broker.js.add_stream(name=f"OPS_{prefix}", subjects=[subject("legacy")])
    await broker.ensure_topics([subject("legacy")])
    await broker.publish([msg(subject("legacy"), "x")])
    sub = await sub_of(broker, subject("legacy"))
    [d] = await drain(sub, 1)
    assert d.position["stream"] == f"OPS_{prefix}"
    # Its .dlq is not covered by the operator's stream and AF_<prefix> would overlap it:
    # a stream for that one subject is made instead.
    dlq_stream = await broker.js.find_stream_name_by_subject(subject("legacy.dlq"))
    assert dlq_stream.startswith("AF_")
    assert dlq_stream == f"AF_{prefix}_legacy_dlq"
    with pytest.raises(NotFoundError):
        await broker.js.stream_info(f"AF_{prefix}")  # no overlapping duplicate was made


async def test_stream_settings_from_url_and_update(
    nats_url: str, subject: Subject, prefix: str
) -> None:
    b1 = NatsBroker(f"{nats_url}?max_age=1h&duplicate_window=30s&storage=memory")
    await b1.connect()
    try:
        await b1.ensure_topics([subject("x")])
        info = await b1.js.stream_info(f"AF_{prefix}")
        assert info.config.max_age == 3600
        assert info.config.duplicate_window == 30
        assert info.config.storage == api.StorageType.MEMORY
    finally:
        await b1.close()
    b2 = NatsBroker(f"{nats_url}?max_age=2h&duplicate_window=30s&storage=memory")
    await b2.connect()
    try:
        await b2.ensure_topics([subject("x")])
        info = await b2.js.stream_info(f"AF_{prefix}")
        assert info.config.max_age == 7200  # managed stream updated in place
    finally:
        await b2.close()


async def test_oversized_publish_raises_publish_error_naming_topic_and_size(
    broker: NatsBroker, subject: Subject
) -> None:
    topic = subject("big")
    limit = broker.nc.max_payload
    with pytest.raises(PublishError) as info:
        await broker.publish([msg(topic, "x" * (limit + 1))])
    text = str(info.value)
    assert topic in text and str(limit) in text and "max_payload" in text
    # The broker keeps working.
    await broker.publish([msg(topic, "small")])


async def test_stream_message_size_limit_is_a_clear_publish_error(
    broker: NatsBroker, subject: Subject, prefix: str
) -> None:
    await broker.js.add_stream(name=f"TINY_{prefix}", subjects=[subject("tiny")], max_msg_size=64)
    with pytest.raises(PublishError) as info:
        await broker.publish([msg(subject("tiny"), "y" * 500)])
    assert subject("tiny") in str(info.value)


async def test_garbled_headers_and_bad_topics_are_publish_errors(
    broker: NatsBroker, subject: Subject
) -> None:
    bad = OutMessage(subject("h"), b"{}", {"af-id": "1", "af-key": "a\r\nINJECT: 1"})
    with pytest.raises(PublishError):
        await broker.publish([bad])
    with pytest.raises(PublishError):
        await broker.publish([OutMessage("bad topic", b"{}", {"af-id": "2"})])
    with pytest.raises(PublishError):
        await broker.publish([OutMessage(subject("*"), b"{}", {"af-id": "3"})])
    await broker.publish([msg(subject("h"), "fine")])


async def test_browse_remove_purge(broker: NatsBroker, subject: Subject) -> None:
    dlq = subject("in.dlq")
    await broker.ensure_topics([subject("in")])
    await broker.publish([msg(subject("in"), "live")])
    await broker.publish([msg(dlq, f"dead{i}", key=f"k{i}") for i in range(5)])
    sub = await sub_of(broker, dlq, "dlq-watch")
    listed = await broker.browse(dlq)
    assert [m.payload for m in listed] == [f"dead{i}".encode() for i in range(5)]
    assert listed[0].key == "k0" and listed[0].topic == dlq
    assert listed[0].position["stream"].startswith("AF_")
    assert abs(listed[0].timestamp_ms / 1000 - time.time()) < 60
    assert [m.payload for m in await broker.browse(dlq, limit=2)] == [b"dead0", b"dead1"]
    # Browsing consumed nothing.
    assert len(await drain(sub, 5)) == 5
    await broker.remove(dlq, listed[1:3])
    await broker.remove(dlq, listed[1:2])  # idempotent
    assert [m.payload for m in await broker.browse(dlq)] == [b"dead0", b"dead3", b"dead4"]
    assert await broker.purge(dlq) == 3
    assert await broker.browse(dlq) == []
    # Only the DLQ subject was purged.
    assert [m.payload for m in await broker.browse(subject("in"))] == [b"live"]
    assert await broker.browse(subject("nothing.here")) == []


async def test_replay_needs_a_fresh_dedup_id_inside_the_window(
    broker: NatsBroker, subject: Subject
) -> None:
    topic = subject("in")
    await broker.publish([msg(topic, "orig", mid="m-1")])
    sub = await sub_of(broker, topic)
    [d] = await drain(sub, 1)
    await d.ack()
    # Same af-id again inside the 2-minute window: dropped as a duplicate.
    await broker.publish([msg(topic, "replay", mid="m-1")])
    assert await sub.fetch(1, 0.5) == []
    # A replay keeps af-id but dedups on af-id + DLQ position.
    replay = msg(topic, "replay", mid="m-1")
    replay.dedup_id = "m-1:replay:AF_x:7"
    await broker.publish([replay])
    [r] = await drain(sub, 1)
    assert r.headers["af-id"] == "m-1" and r.payload == b"replay"


async def test_connect_failure_is_fast_broker_error_naming_url() -> None:
    t0 = time.monotonic()
    b = NatsBroker("nats://alice:s3cret@127.0.0.1:1,127.0.0.1:2")
    with pytest.raises(BrokerError) as info:
        await b.connect()
    assert time.monotonic() - t0 < 10
    text = str(info.value)
    assert "127.0.0.1:1" in text and "127.0.0.1:2" in text
    assert "s3cret" not in text
    assert info.value.__cause__ is None and info.value.__suppress_context__


async def test_bad_urls_are_broker_errors() -> None:
    for url in ("nats://", "nats://h:port", "nats://h:4222?bogus=1", "nats://h?max_age=soon"):
        with pytest.raises(BrokerError):
            NatsBroker(url)


async def test_server_without_jetstream_is_reported(private_server: Callable[..., object]) -> None:
    server = private_server(jetstream=False)
    b = NatsBroker(server.url)  # type: ignore[attr-defined]
    with pytest.raises(BrokerError, match="JetStream"):
        await b.connect()


async def test_publish_survives_a_brief_server_restart(
    private_server: Callable[..., object],
) -> None:
    server = private_server()
    b = NatsBroker(server.url + "?reconnect_max_wait=0.5")  # type: ignore[attr-defined]
    await b.connect()
    try:
        await b.publish([msg("rs.in", "before")])
        sub = await sub_of(b, "rs.in", ack_wait=30)
        [d] = await drain(sub, 1)
        loop = asyncio.get_running_loop()
        await loop.run_in_executor(None, server.restart, 1.0)  # type: ignore[attr-defined]
        # Published while the client is still reconnecting: returns once stored.
        await b.publish([msg("rs.in", "after")])
        await d.ack()
        [d2] = await drain(sub, 1, timeout=20)
        assert d2.payload == b"after"
        await d2.ack()
        assert await sub.fetch(1, 1.0) == []  # the pre-restart ack reached the server
    finally:
        await b.close()


async def stream_deleted_after_use(broker: NatsBroker, topic: str) -> None:
    """Publish to ``topic``, then delete its stream: the next publish meets "no responders"."""
    await broker.publish([msg(topic, "first")])
    name = await broker.streams.find(topic)
    assert name is not None
    await broker.js.delete_stream(name)


async def test_a_stream_lookup_that_times_out_is_retried_within_the_publish_deadline(
    broker: NatsBroker, subject: Subject, monkeypatch: pytest.MonkeyPatch
) -> None:
    topic = subject("lk")
    await stream_deleted_after_use(broker, topic)
    real_find = broker.streams.find
    calls: list[str] = []

    async def find_once_too_late(subj: str) -> str | None:
        # As while a restarted server loads its streams: the first lookup goes unanswered.
        calls.append(subj)
        if len(calls) == 1:
            raise nats.errors.TimeoutError
        return await real_find(subj)

    monkeypatch.setattr(broker.streams, "find", find_once_too_late)
    await broker.publish([msg(topic, "second")])
    assert len(calls) >= 2, calls
    sub = await sub_of(broker, topic)
    [d] = await drain(sub, 1)
    assert d.payload == b"second"
    await d.ack()
    # The first publish to a new topic looks its stream up before sending: the same holds.
    calls.clear()
    fresh = subject("lk2")
    await broker.publish([msg(fresh, "third")])
    assert calls[:2] == [fresh, fresh], calls
    assert await real_find(fresh) is not None


async def test_a_stream_lookup_refused_for_good_is_a_publish_error(
    broker: NatsBroker, subject: Subject, monkeypatch: pytest.MonkeyPatch
) -> None:
    topic = subject("lr")
    await stream_deleted_after_use(broker, topic)

    async def refuse(subj: str) -> str | None:
        raise APIError(code=400, err_code=10052, description=f"invalid request for {subj}")

    monkeypatch.setattr(broker.streams, "find", refuse)
    with pytest.raises(PublishError, match=rf"cannot publish to '{topic}'.*invalid request"):
        await broker.publish([msg(topic, "second")])


async def test_operator_streams_for_traffic_and_dead_letters_are_both_bound(
    broker: NatsBroker, subject: Subject, prefix: str
) -> None:
    # The docs' recipe for keeping dead letters longer than the traffic.
    await broker.js.add_stream(name=f"ORD_{prefix}", subjects=[subject("*")])
    await broker.js.add_stream(
        name=f"ORDDLQ_{prefix}", subjects=[subject("*.dlq")], max_age=30 * 86400
    )
    await broker.ensure_topics([subject("created")])
    await broker.publish([msg(subject("created"), "a"), msg(subject("created.dlq"), "dead")])
    assert (await broker.js.stream_info(f"ORD_{prefix}")).state.messages == 1
    assert (await broker.js.stream_info(f"ORDDLQ_{prefix}")).state.messages == 1
    [dead] = await broker.browse(subject("created.dlq"))
    assert dead.position["stream"] == f"ORDDLQ_{prefix}"


async def test_resubscribing_with_new_settings_updates_the_consumer(
    broker: NatsBroker, subject: Subject
) -> None:
    topic = subject("in")
    sub = await sub_of(broker, topic, "grp", ack_wait=5, max_deliver=4)
    await sub.close()
    sub = await sub_of(broker, topic, "grp", ack_wait=9, max_deliver=7, max_in_flight=200)
    assert isinstance(sub, NatsSubscription)
    info = await broker.js.consumer_info(sub.stream, sub.durable)
    assert info.config.ack_wait == 9
    assert info.config.max_deliver == 7 + 10  # the runtime cap is enforced client-side
    assert info.config.max_ack_pending == 16 * 200
    assert info.config.filter_subject == topic
    await sub.close()
