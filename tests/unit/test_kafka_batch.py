"""The native Kafka record batch: byte for byte what aiokafka's own builder writes."""

from __future__ import annotations

import pytest
from aiokafka.record.default_records import DefaultRecordBatch, DefaultRecordBatchBuilder
from hypothesis import given, settings
from hypothesis import strategies as st

from agentflow._native import KafkaBatch

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
