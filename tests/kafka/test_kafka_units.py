"""The pure parts of the Kafka backbone: URL settings, offset tracking, attempt records,
retry tiers and topic patterns. No broker needed."""

from __future__ import annotations

import re
import time
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from agentflow.brokers.base import BrokerError
from agentflow.brokers.kafka_attempts import DONE, Run, coarsen, decode, encode
from agentflow.brokers.kafka_config import parse_duration, parse_kafka_url, redact
from agentflow.brokers.kafka_deadlines import AckDeadlines, release
from agentflow.brokers.kafka_offsets import PartitionTracker
from agentflow.brokers.kafka_producer import RecentIds
from agentflow.brokers.kafka_retry import (
    NOT_BEFORE,
    RETRY_GROUP,
    RETRY_ORIGIN,
    choose_tier,
    format_origin,
    not_before_ms,
    parse_origin,
    retry_headers,
)
from agentflow.brokers.kafka_topics import (
    companions,
    is_companion,
    pattern_regex,
    split_retry_topic,
    validate_topic,
)


# -- URL and environment ---------------------------------------------------------------------
def test_plain_url_defaults() -> None:
    s = parse_kafka_url("kafka://127.0.0.1:9092", env={})
    assert s.bootstrap == ["127.0.0.1:9092"]
    assert s.security_protocol == "PLAINTEXT"
    assert s.retry_delays == (1.0, 10.0, 60.0)
    assert s.sasl_mechanism is None
    kwargs = s.client_kwargs()
    assert kwargs["bootstrap_servers"] == "127.0.0.1:9092"
    assert "ssl_context" not in kwargs


def test_several_hosts_default_port_and_ipv6() -> None:
    s = parse_kafka_url("kafka://a:1,b,[::1]:9093", env={})
    assert s.bootstrap == ["a:1", "b:9092", "[::1]:9093"]


def test_sasl_from_userinfo_infers_protocol_and_mechanism() -> None:
    s = parse_kafka_url("kafka://alice:s%40cret@h:9092", env={})
    assert (s.sasl_username, s.sasl_password) == ("alice", "s@cret")
    assert s.sasl_mechanism == "PLAIN"
    assert s.security_protocol == "SASL_PLAINTEXT"
    kwargs = s.client_kwargs()
    assert kwargs["sasl_plain_username"] == "alice"
    assert kwargs["sasl_mechanism"] == "PLAIN"


def test_scram_over_tls_from_env_url_wins() -> None:
    env = {
        "AGENTFLOW_KAFKA_SASL_MECHANISM": "scram-sha-512",
        "AGENTFLOW_KAFKA_SASL_USERNAME": "env-user",
        "AGENTFLOW_KAFKA_SASL_PASSWORD": "env-pass",
        "AGENTFLOW_KAFKA_SSL": "true",
        "AGENTFLOW_KAFKA_PARTITIONS": "6",
        "AGENTFLOW_UNRELATED": "x",
    }
    s = parse_kafka_url("kafka://h:9093?sasl_username=url-user&partitions=12", env=env)
    assert s.sasl_mechanism == "SCRAM-SHA-512"
    assert (s.sasl_username, s.sasl_password) == ("url-user", "env-pass")
    assert s.security_protocol == "SASL_SSL"
    assert s.partitions == 12


def test_tuning_and_topic_configs() -> None:
    s = parse_kafka_url(
        "kafka://h?retry_delays=500ms,5s,1m&commit_interval=250ms&replication=3"
        "&topic.retention.ms=86400000&session_timeout_ms=6000&heartbeat_interval_ms=1000",
        env={},
    )
    assert s.retry_delays == (0.5, 5.0, 60.0)
    assert s.commit_interval == 0.25
    assert s.replication == 3
    assert s.topic_configs == {"retention.ms": "86400000"}
    assert (s.session_timeout_ms, s.heartbeat_interval_ms) == (6000, 1000)


@pytest.mark.parametrize(
    ("url", "needle"),
    [
        ("nats://h:4222", "scheme"),
        ("kafka://", "no host"),
        ("kafka://h:notaport", "bad port"),
        ("kafka://h:70000", "out of range"),
        ("kafka://h?partitons=3", "unknown option 'partitons'"),
        ("kafka://h?partitions=0", "partitions"),
        ("kafka://h?retry_delays=10s,1s", "ascend"),
        ("kafka://h?sasl_mechanism=GSSAPI&sasl_username=a&sasl_password=b", "sasl_mechanism"),
        ("kafka://h?sasl_mechanism=PLAIN", "username and a password"),
        ("kafka://h?security_protocol=SASL_SSL", "needs sasl_mechanism"),
        ("kafka://u:p@h?security_protocol=SSL", "SASL credentials given"),
        ("kafka://h?auto_offset_reset=middle", "auto_offset_reset"),
        ("kafka://h?session_timeout_ms=1000&heartbeat_interval_ms=3000", "heartbeat"),
        ("kafka://h/some/path", "path"),
    ],
)
def test_bad_urls_name_the_problem(url: str, needle: str) -> None:
    with pytest.raises(BrokerError) as err:
        parse_kafka_url(url, env={})
    assert needle in str(err.value)


def test_errors_and_redaction_hide_passwords() -> None:
    assert redact("kafka://bob:hunter2@h:9092?x=1") == "kafka://bob:***@h:9092?x=1"
    assert "hunter2" not in redact("kafka://h?sasl_password=hunter2&ssl_password=hunter2")
    with pytest.raises(BrokerError) as err:
        parse_kafka_url("kafka://bob:hunter2@h:9092?bogus=1", env={})
    assert "hunter2" not in str(err.value)


def test_durations() -> None:
    assert parse_duration("1.5") == 1.5
    assert parse_duration("250ms") == 0.25
    assert parse_duration("2m") == 120.0
    with pytest.raises(ValueError):
        parse_duration("soon")


# -- the contiguous-offset tracker -----------------------------------------------------------
def test_commit_never_passes_an_unfinished_offset() -> None:
    t = PartitionTracker()
    for offset in range(10, 15):
        assert t.track(offset) == 1
    assert t.commit_offset() == 10
    t.done(12)
    t.done(13)
    assert t.commit_offset() == 10, "out-of-order completions do not move the commit"
    t.done(10)
    assert t.commit_offset() == 11
    t.done(11)
    assert t.commit_offset() == 14
    t.done(14)
    assert t.commit_offset() == 15, "all done: one past the last tracked"
    assert t.in_flight == 0


def test_gaps_in_offsets_are_fine() -> None:
    t = PartitionTracker()
    for offset in (3, 7, 8):  # compaction / transaction markers leave holes
        t.track(offset)
    t.done(7)
    t.done(3)
    assert t.commit_offset() == 8


def test_refetched_offsets_are_not_new_and_double_done_is_ignored() -> None:
    t = PartitionTracker()
    t.track(0)
    assert not t.is_new(0)
    assert t.is_new(1)
    with pytest.raises(ValueError):
        t.track(0)
    assert t.done(0) is True
    assert t.done(0) is False
    assert t.is_done(0)


def test_attempt_record_round_trip_through_a_new_owner() -> None:
    old = PartitionTracker()
    for offset in range(100, 110):
        old.track(offset)
    old.handed_out_again(100)  # offset 100 went out twice
    for offset in (101, 102, 105):
        old.done(offset)
    committed = old.commit_offset()
    assert committed == 100
    meta = encode(committed, old.runs())
    assert meta.startswith("af1 ")
    new = PartitionTracker(committed, decode(meta, committed))
    assert new.prior_state(100) == 2
    assert new.prior_state(101) == DONE
    assert new.prior_state(103) == 1
    assert new.prior_state(110) == 0, "never handed out"
    assert new.track(100) == 3, "third hand-out of the crash looper"
    new.skip(101)
    new.skip(102)
    assert new.track(103) == 2
    # Untouched prior runs survive the next write.
    runs = new.runs()
    assert Run(105, 105, DONE) in runs
    assert any(r.start <= 109 <= r.end and r.state == 1 for r in runs)


def test_metadata_is_capped_without_losing_attempts() -> None:
    # Alternating done / handed-out offsets: the worst case for run-length encoding.
    runs = [Run(o, o, DONE if o % 2 else 3) for o in range(0, 4000)]
    meta = encode(0, runs, limit=500)
    assert len(meta) <= 500
    decoded = decode(meta, 0)
    for o in range(0, 4000, 2):
        state = next(r.state for r in decoded if r.start <= o <= r.end)
        assert state >= 3, "coarsening never lowers an attempt count"


def test_coarsen_keeps_done_only_when_both_done() -> None:
    assert coarsen([Run(0, 0, DONE), Run(1, 1, DONE)]) == [Run(0, 1, DONE)]
    assert coarsen([Run(0, 0, DONE), Run(1, 1, 2), Run(2, 2, 1)]) == [Run(0, 1, 2), Run(2, 2, 1)]


@pytest.mark.parametrize(
    "garbage", ["", "other-app", "af1 x", "af1 5-2:1", "af1 0:0", "af1 1:1 0:1"]
)
def test_foreign_or_garbled_metadata_is_ignored(garbage: str) -> None:
    assert decode(garbage, 10) == []


@settings(max_examples=200, deadline=None)
@given(st.lists(st.tuples(st.booleans(), st.integers(1, 4)), min_size=1, max_size=60))
def test_tracker_commit_is_the_first_unfinished(ops: list[tuple[bool, int]]) -> None:
    t = PartitionTracker()
    finished: set[int] = set()
    for offset, (done, extra) in enumerate(ops):
        t.track(offset)
        for _ in range(extra - 1):
            t.handed_out_again(offset)
        if done:
            t.done(offset)
            finished.add(offset)
    expected = next((o for o in range(len(ops)) if o not in finished), len(ops))
    assert t.commit_offset() == expected
    meta = encode(expected, t.runs())
    again = PartitionTracker(expected, decode(meta, expected))
    for offset, (done, extra) in enumerate(ops):
        if offset < expected:
            continue
        assert again.prior_state(offset) == (DONE if done else extra)


# -- retry tiers -----------------------------------------------------------------------------
def test_tier_is_the_smallest_nominal_delay_at_least_the_request() -> None:
    delays = (1.0, 10.0, 60.0)
    assert choose_tier(0, delays) == 1
    assert choose_tier(0.4, delays) == 1
    assert choose_tier(1.0, delays) == 1
    assert choose_tier(1.01, delays) == 2
    assert choose_tier(30, delays) == 3
    assert choose_tier(3600, delays) == 3, "longer than every tier: the last one"


def test_retry_copy_headers_keep_the_original_and_add_the_plumbing() -> None:
    original = {"af-id": "M1", "af-attempt": "1", "traceparent": "00-ab", "x": "y"}
    h = retry_headers(original, attempt=2, delay=1.5, group="g", origin="t:0:5", now_ms=1000)
    assert h["af-id"] == "M1" and h["x"] == "y" and h["traceparent"] == "00-ab"
    assert h["af-attempt"] == "2"
    assert h[NOT_BEFORE] == "2500"
    assert h[RETRY_GROUP] == "g"
    assert h[RETRY_ORIGIN] == "t:0:5"
    assert original["af-attempt"] == "1", "the input is not modified"
    assert not_before_ms(h) == 2500
    assert not_before_ms({NOT_BEFORE: "soon"}) == 0


def test_origin_round_trip() -> None:
    assert parse_origin(format_origin("a.b-c", 3, 42)) == ("a.b-c", 3, 42)
    assert parse_origin("garbage") is None
    assert parse_origin(None) is None
    assert parse_origin("t:x:1") is None


# -- topic names and patterns -----------------------------------------------------------------
def test_companions() -> None:
    assert companions("orders", 2) == ["orders.retry.1", "orders.retry.2", "orders.dlq"]
    assert companions("orders.dlq", 2) == []
    assert companions("orders.retry.1", 2) == []
    assert split_retry_topic("a.b.retry.12") == ("a.b", 12)
    assert split_retry_topic("a.retry.x") is None
    assert is_companion("x.dlq") and not is_companion("x.dlqueue")


@pytest.mark.parametrize("bad", ["", "a b", "a/b", "x" * 250, "tickets.*", "t.>", "..", "é"])
def test_invalid_topic_names(bad: str) -> None:
    with pytest.raises(BrokerError):
        validate_topic(bad)


def test_wildcards_match_topics_and_their_tiers_but_not_companions() -> None:
    one = re.compile(pattern_regex("tickets.*"))
    assert one.match("tickets.new")
    assert one.match("tickets.new.retry.2"), "the tiers of a matched topic are consumed too"
    assert not one.match("tickets.dlq")
    assert not one.match("tickets.retry.1")
    assert not one.match("tickets.a.b")
    assert not one.match("other.new")
    rest = re.compile(pattern_regex("tickets.>"))
    assert rest.match("tickets.a.b.c")
    assert rest.match("tickets.a.retry.1")
    assert not rest.match("tickets.a.dlq")
    assert not rest.match("tickets")
    dlqs = re.compile(pattern_regex("*.dlq"))
    assert dlqs.match("orders.dlq"), "a pattern that asks for DLQs gets them"


def test_recent_ids_window() -> None:
    ids = RecentIds(window=60, max_size=2)
    ids.add("a")
    assert "a" in ids and "b" not in ids
    ids.add("b")
    ids.add("c")
    assert "a" not in ids, "capped: oldest evicted"
    off = RecentIds(window=0)
    off.add("a")
    assert "a" not in off


def test_recent_ids_add_restarts_the_window_and_lookups_record_nothing() -> None:
    ids = RecentIds(window=10, max_size=10)
    now = time.monotonic()
    assert not ids.seen("a", now) and len(ids) == 0, "a lookup records nothing"
    ids.add_all(["a", "b"])
    assert ids.seen("a", now + 9.9) and not ids.seen("a", now + 10.1)
    later = time.monotonic()
    ids.add_all(["a"])  # added again: its window starts over
    assert ids.seen("a", later + 9.9) and not ids.seen("b", later + 10.1)
    assert len(ids) == 2


class _Part:
    revoking = False
    live = True


class _Delivery:
    """What AckDeadlines reads of a KafkaDelivery, on a clock the test sets."""

    clock = 0.0

    def __init__(self, name: str, ack_wait: float) -> None:
        self.name, self.ack_wait = name, ack_wait
        self.finished = self.superseded = False
        self.part = _Part()
        self.deadline = 0.0

    def touch(self) -> None:
        self.deadline = _Delivery.clock + self.ack_wait


def names(found: list[Any]) -> list[str]:
    return [x.name for x in found]


def test_ack_deadlines_report_silent_deliveries_once_in_order_and_forget_finished_ones() -> None:
    deadlines = AckDeadlines(5.0)
    _Delivery.clock = 100.0
    a, b, c, d = (_Delivery(n, 5.0) for n in "abcd")
    for x in (a, b, c, d):
        deadlines.arm(x, _Delivery.clock)  # type: ignore[arg-type]
    assert deadlines.expired(104.9) == [], "nothing is due yet"
    b.finished = True
    _Delivery.clock = 103.0
    c.touch()  # in_progress: c is due at 108 now
    assert names(deadlines.expired(105.0)) == ["a", "d"]
    assert deadlines.expired(105.5) == [], "reported once"
    assert names(deadlines.expired(108.0)) == ["c"]
    e = _Delivery("e", 5.0)
    deadlines.arm(e, _Delivery.clock)  # type: ignore[arg-type]
    e.finished = True
    assert deadlines.expired(200.0) == []
    assert not deadlines._armed and not deadlines._extended, "finished ones are not kept"


def test_a_hand_out_lets_go_of_its_deliveries_once_all_are_finished() -> None:
    deadlines = AckDeadlines(5.0)
    batch = [_Delivery(n, 5.0) for n in "xyz"]
    deadlines.arm_all(batch, 100.0)  # type: ignore[arg-type]
    entry = deadlines._armed[0]
    assert entry.left == 3 and all(d.deadline == 105.0 for d in batch)
    for d in batch[:2]:
        d.finished = True
        release(d)  # type: ignore[arg-type]
    assert entry.deliveries and deadlines.expired(101.0) == [], "one still running"
    batch[2].finished = True
    release(batch[2])  # type: ignore[arg-type]
    assert entry.deliveries == (), "all finished: the records are not held until 105"
    assert deadlines.expired(101.0) == [] and not deadlines._armed, "dropped before it is due"


def test_ack_deadlines_off_when_ack_wait_is_zero() -> None:
    deadlines = AckDeadlines(0)
    deadlines.arm(_Delivery("x", 0))  # type: ignore[arg-type]
    assert deadlines.expired(1e9) == [] and not deadlines._armed


async def test_a_batch_of_acks_finishes_each_offset_and_remembers_each_id_once() -> None:
    from types import SimpleNamespace

    from agentflow.brokers.kafka_consumer import KafkaSubscription
    from agentflow.brokers.kafka_delivery import KafkaDelivery, Part

    broker = SimpleNamespace(settings=parse_kafka_url("kafka://127.0.0.1:9092", env={}))
    sub = KafkaSubscription(
        broker,  # type: ignore[arg-type]
        consumer=None,
        group="g",
        ack_wait=30.0,
        max_in_flight=10,
        max_deliver=5,
    )
    live, gone = (
        Part(SimpleNamespace(topic="t", partition=0)),
        Part(SimpleNamespace(topic="t", partition=1)),
    )
    out: list[KafkaDelivery] = []
    for part in (live, gone):
        part.tracker = PartitionTracker()
        for offset in range(3):
            headers = [("af-id", f"{part.tp.partition}-{offset}".encode())]
            record = SimpleNamespace(
                offset=offset, partition=part.tp.partition, key=None, value=b"{}", headers=headers
            )
            d = sub._admit(part, record, 0.0, 0)
            assert d is not None
            out.append(d)
    await out[1].ack()  # acked alone before the batch: the batch leaves it as it is
    gone.live = False  # revoked: its deliveries are stale, their acks do nothing
    assert await KafkaDelivery.ack_many(out) == [None] * 6
    assert live.tracker is not None and gone.tracker is not None
    assert live.tracker.commit_offset() == 3 and live.tracker.in_flight == 0
    assert gone.tracker.commit_offset() == 0 and gone.tracker.in_flight == 3
    assert all(d.finished for d in out[:3]) and not any(d.finished for d in out[3:])
    assert [i for i in ("0-0", "0-1", "0-2", "1-0") if i in sub.acked_ids] == ["0-0", "0-1", "0-2"]
    assert not live.current, "no delivery is held for a finished offset"
