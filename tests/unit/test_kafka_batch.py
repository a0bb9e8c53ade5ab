"""The native Kafka record batch: byte for byte what aiokafka's own builder writes."""

from __future__ import annotations

import time

import pytest
from aiokafka.record.default_records import DefaultRecordBatch, DefaultRecordBatchBuilder
from hypothesis import given, settings
from hypothesis import strategies as st

from agentflow._native import KafkaBatch, RecentIds, kafka_flush, murmur2_partition
from agentflow.brokers.base import OutMessage

_text = st.text(st.characters(exclude_categories=["Cs"]), max_size=12)
_record = st.tuples(
    st.binary(max_size=300) | st.none(),  # value
    st.binary(max_size=20) | st.none(),  # key
    st.dictionaries(_text, _text, max_size=4),  # headers
    st.integers(min_value=0, max_value=5_000),  # ms after the first record
)


@settings(max_examples=200, deadline=None)
@given(
    records=st.lists(_record, min_size=1, max_size=20),
    state=st.tuples(st.integers(0, 2**40), st.integers(0, 2**15 - 1), st.integers(0, 2**31 - 1)),
    base_ts=st.integers(min_value=1_600_000_000_000, max_value=1_900_000_000_000),
)
def test_same_bytes_as_aiokafka(
    records: list[tuple[bytes | None, bytes | None, dict[str, str], int]],
    state: tuple[int, int, int],
    base_ts: int,
) -> None:
    ours = KafkaBatch(1 << 22)
    theirs = DefaultRecordBatchBuilder(2, 0, 0, -1, -1, 0, 1 << 22)
    for offset, (value, key, headers, delta) in enumerate(records):
        ts = base_ts + delta
        size = ours.add(value, key, headers, ts)
        pairs = [(k, v.encode()) for k, v in headers.items()]
        meta = theirs.append(offset, ts, key, value, pairs)
        assert meta is not None and size == meta.size
    ours._set_producer_state(*state)
    theirs.set_producer_state(*state)
    built = ours._build()
    assert built == bytes(theirs.build())
    assert ours.record_count() == len(records) and ours.size() == len(built)
    batch = DefaultRecordBatch(bytearray(built))
    assert batch.validate_crc()
    read = [(r.value, r.key, dict(r.headers)) for r in batch]
    assert read == [(v, k, {n: t.encode() for n, t in h.items()}) for v, k, h, _ in records]


def test_full_batch_refuses_the_record_and_stays_closed_to_aiokafka() -> None:
    batch = KafkaBatch(200)
    assert batch.add(b"x" * 500, None, {}, 1) > 0, "the first record always fits"
    assert batch.add(b"y", None, {}, 1) == 0, "full: the caller starts another batch"
    assert batch.record_count() == 1
    added = batch.append(timestamp=None, key=None, value=b"z", headers=[])  # type: ignore[func-returns-value]
    assert added is None and batch.record_count() == 1, "aiokafka's append adds nothing"
    batch.close()
    assert batch.closed()
    with pytest.raises(ValueError, match="closed"):
        batch.add(b"z", None, {}, 1)


def test_header_values_and_names() -> None:
    batch = KafkaBatch(1 << 20)
    batch.add(b"v", None, {"x": "caf\udce9"}, 1)  # a lone surrogate: surrogateescape bytes
    (record,) = list(DefaultRecordBatch(bytearray(batch._build())))
    assert record.headers == [("x", b"caf\xe9")]
    with pytest.raises(ValueError, match="not valid UTF-8"):
        KafkaBatch(1 << 20).add(b"v", None, {"n\udce9": "v"}, 1)
    with pytest.raises(TypeError, match="header value must be str"):
        KafkaBatch(1 << 20).add(b"v", None, {"n": 1}, 1)  # type: ignore[dict-item]


def _reference_flush(
    messages: list[OutMessage],
    recent: RecentIds,
    now: float,
    targets: dict[str, tuple[list[int], int]],
    batch_size: int,
    ts_ms: int,
) -> tuple[list[tuple[str, int, bytes]], list[str]]:
    """What the producer did per message in Python before ``kafka_flush``."""
    pending: list[str] = []
    groups: dict[tuple[str, int], list[KafkaBatch]] = {}
    for msg in messages:
        dedup = msg.dedup_id or msg.headers.get("af-id")
        if dedup:
            if dedup in pending or recent.seen(dedup, now):
                continue
            pending.append(dedup)
        key = msg.key.encode() if msg.key is not None else None
        partitions, sticky = targets[msg.topic]
        part = sticky if key is None else partitions[murmur2_partition(key, len(partitions))]
        batches = groups.setdefault((msg.topic, part), [KafkaBatch(batch_size)])
        if not batches[-1].add(msg.payload, key, msg.headers, ts_ms):
            batches.append(KafkaBatch(batch_size))
            batches[-1].add(msg.payload, key, msg.headers, ts_ms)
    built = [(t, p, b._build()) for (t, p), bs in groups.items() for b in bs]
    return built, pending


_ids = st.sampled_from(["a", "b", "c", "d", ""]) | st.none()
_out = st.builds(
    OutMessage,
    st.sampled_from(["t1", "t2"]),
    st.binary(max_size=200),
    st.dictionaries(st.sampled_from(["af-id", "x", "af-agent"]), _text, max_size=3),
    st.text(max_size=6) | st.none(),
    _ids,
)


@settings(max_examples=200, deadline=None)
@given(
    messages=st.lists(_out, max_size=40),
    seen=st.lists(st.sampled_from(["a", "b", "c", "d"]), max_size=2),
    batch_size=st.integers(min_value=64, max_value=2_000),
)
def test_flush_matches_the_per_message_path(
    messages: list[OutMessage], seen: list[str], batch_size: int
) -> None:
    recent = RecentIds(60.0)
    recent.add_all(seen)
    now = time.monotonic()
    targets = {"t1": ([0, 1, 2], 1), "t2": ([0, 1, 2, 3, 4], 4)}
    built, accepted, oversize = kafka_flush(
        messages, recent, now, targets, batch_size, 1_700_000_000_000, 1 << 20
    )
    expected, pending = _reference_flush(
        messages, recent, now, targets, batch_size, 1_700_000_000_000
    )
    assert [(t, p, b._build()) for t, p, b in built] == expected
    assert len(accepted) == len(pending) and oversize is None
    recent.add_fingerprints(accepted)
    later = time.monotonic()
    assert all(recent.seen(i, later) for i in pending), "accepted ids are remembered"
    assert not any(recent.seen(i, later) for i in {"a", "b", "c", "d"} - set(pending) - set(seen))
    with pytest.raises(ValueError, match="another RecentIds"):
        RecentIds(60.0).add_fingerprints(accepted)


def test_flush_names_the_first_record_above_max_request_size() -> None:
    messages = [
        OutMessage("small", b"x", {}),
        OutMessage("big", b"y" * 5_000, {}),
        OutMessage("bigger", b"z" * 9_000, {}),
    ]
    targets = {t: ([0], 0) for t in ("small", "big", "bigger")}
    built, _, oversize = kafka_flush(messages, RecentIds(0), 0.0, targets, 1 << 16, 1, 4_000)
    assert oversize is not None and oversize[0] == "big" and oversize[1] > 5_000
    assert [t for t, _, _ in built] == ["small", "big", "bigger"]
    with pytest.raises(ValueError, match="no partitions given for topic 'small'"):
        kafka_flush(messages, RecentIds(0), 0.0, {}, 1 << 16, 1, 4_000)
