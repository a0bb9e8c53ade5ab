"""The native Kafka header helpers agree with the plain-Python definitions they replace."""

from __future__ import annotations

import pytest
from aiokafka.record.default_records import DefaultRecordBatchBuilder
from hypothesis import given
from hypothesis import strategies as st

from agentflow import _native as n

# Header names and values: any text, and bytes that were not UTF-8 as surrogateescape keeps
# them (lone surrogates U+DC80..U+DCFF).
text = st.text(st.characters(codec="utf-8"), max_size=40)
escaped = st.binary(max_size=20).map(lambda b: b.decode("utf-8", "surrogateescape"))
header_dicts = st.dictionaries(text, text | escaped, max_size=12)


@given(header_dicts)
def test_kafka_headers_are_the_utf8_pairs_in_order(headers: dict[str, str]) -> None:
    pairs, _ = n.kafka_headers(headers)
    assert pairs == [(k, v.encode("utf-8", "surrogateescape")) for k, v in headers.items()]


@given(header_dicts, st.binary(max_size=300))
def test_kafka_headers_size_bounds_the_record_estimate(
    headers: dict[str, str], value: bytes
) -> None:
    pairs, size = n.kafka_headers(headers)
    bare = DefaultRecordBatchBuilder.estimate_size_in_bytes(None, value, [])
    full = DefaultRecordBatchBuilder.estimate_size_in_bytes(None, value, pairs)
    assert full - bare <= size


def test_kafka_headers_rejects_values_that_are_not_text() -> None:
    with pytest.raises(TypeError):
        n.kafka_headers({"af-id": b"bytes"})  # type: ignore[dict-item]
    with pytest.raises(UnicodeEncodeError):  # a surrogate no byte could have become
        n.kafka_headers({"af-id": "\ud800"})


pair_lists = st.lists(st.tuples(text, st.none() | st.binary(max_size=40)), max_size=12)


@given(pair_lists)
def test_kafka_header_dict_decodes_like_python(pairs: list[tuple[str, bytes | None]]) -> None:
    expected = {k: v.decode("utf-8", "replace") for k, v in pairs if v is not None}
    assert n.kafka_header_dict(pairs) == expected


def test_kafka_header_dict_of_a_record_without_headers_is_empty() -> None:
    assert n.kafka_header_dict(None) == {}
    assert n.kafka_header_dict(()) == {}


def test_kafka_header_dict_names_a_value_that_is_not_bytes() -> None:
    with pytest.raises(TypeError):
        n.kafka_header_dict([("af-id", "text")])  # type: ignore[list-item]
