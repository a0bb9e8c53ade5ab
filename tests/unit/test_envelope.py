"""Envelope headers: build -> decode round trip, and what a dead-letter copy carries."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from agentflow import envelope


def test_build_then_decode_round_trips_every_field() -> None:
    before = envelope.now_ms()
    headers = envelope.build_headers(
        "m-1",
        key="customer-7",
        attempt=3,
        correlation_id="corr-1",
        causation_id="parent-1",
        agent="classify",
        content_type=envelope.OCTET_STREAM,
        extra={"x-tenant": "acme", envelope.TRACEPARENT: "00-abc-def-01"},
    )
    env = envelope.decode_headers(headers)
    assert env.message_id == "m-1"
    assert env.key == "customer-7"
    assert env.attempt == 3
    assert env.correlation_id == "corr-1"
    assert env.causation_id == "parent-1"
    assert env.agent == "classify"
    assert env.content_type == envelope.OCTET_STREAM
    assert env.traceparent == "00-abc-def-01"
    assert env.extra == {"x-tenant": "acme"}
    assert env.ts_ms is not None and before <= env.ts_ms <= envelope.now_ms()


def test_defaults_omit_optional_headers_and_correlate_to_self() -> None:
    headers = envelope.build_headers("m-2")
    assert headers[envelope.ID] == "m-2"
    assert headers[envelope.CORRELATION_ID] == "m-2"
    assert headers[envelope.ATTEMPT] == "1"
    assert headers[envelope.CONTENT_TYPE] == envelope.JSON
    for absent in (envelope.KEY, envelope.CAUSATION_ID, envelope.AGENT):
        assert absent not in headers
    env = envelope.decode_headers(headers)
    assert env.key is None and env.causation_id is None and env.agent is None


def test_extras_cannot_override_envelope_headers() -> None:
    headers = envelope.build_headers("m-3", extra={"AF-ID": "forged", "af-attempt": "9"})
    assert headers[envelope.ID] == "m-3"
    assert headers[envelope.ATTEMPT] == "1"
    assert "AF-ID" not in headers


def test_garbled_attempt_is_a_value_error_naming_the_header() -> None:
    with pytest.raises(ValueError, match="af-attempt"):
        envelope.decode_headers({envelope.ID: "m", envelope.ATTEMPT: "two"})


@given(
    mid=st.text(st.characters(codec="utf-8"), min_size=1),
    key=st.none() | st.text(st.characters(codec="utf-8")),
    attempt=st.integers(min_value=1, max_value=10_000),
)
def test_round_trip_property(mid: str, key: str | None, attempt: int) -> None:
    env = envelope.decode_headers(envelope.build_headers(mid, key=key, attempt=attempt))
    assert (env.message_id, env.key, env.attempt) == (mid, key, attempt)


def _original() -> dict[str, str]:
    return envelope.build_headers("m-9", key="k", agent="producer", extra={"x-src": "web"})


def test_dlq_headers_keep_the_original_and_add_the_annotations() -> None:
    original = _original()
    snapshot = dict(original)
    headers = envelope.dlq_headers(
        original,
        reason="max-attempts",
        error=ValueError("bad input\n  on line 2"),
        attempts=5,
        agent="classify",
        topic="tickets.new",
        position={"stream": "TICKETS", "seq": 42},  # type: ignore[dict-item]
    )
    assert original == snapshot, "the original headers are not mutated"
    for name in (envelope.ID, envelope.KEY, "x-src", envelope.CORRELATION_ID):
        assert headers[name] == original[name]
    assert headers[envelope.DLQ_REASON] == "max-attempts"
    assert headers[envelope.DLQ_ERROR_TYPE] == "ValueError"
    assert headers[envelope.DLQ_ERROR] == "bad input | on line 2"
    assert headers[envelope.DLQ_ATTEMPTS] == "5"
    assert headers[envelope.AGENT] == "classify"
    assert headers[envelope.DLQ_ORIGINAL_TOPIC] == "tickets.new"
    assert headers["af-original-stream"] == "TICKETS"
    assert headers["af-original-seq"] == "42"


def test_dlq_headers_for_a_reason_without_exception() -> None:
    headers = envelope.dlq_headers(
        _original(),
        reason="invalid-payload",
        error="id: field required",
        attempts=1,
        agent="a",
        topic="t",
        position={"partition": "3", "offset": "17"},
    )
    assert headers[envelope.DLQ_ERROR_TYPE] == "invalid-payload"
    assert headers[envelope.DLQ_ERROR] == "id: field required"
    assert headers["af-original-partition"] == "3"
    assert headers["af-original-offset"] == "17"
    bare = envelope.dlq_headers(
        {}, reason="rejected", error=None, attempts=1, agent="a", topic="t", position={}
    )
    assert bare[envelope.DLQ_ERROR] == "rejected"


def test_dlq_error_text_is_one_bounded_line() -> None:
    headers = envelope.dlq_headers(
        {},
        reason="max-attempts",
        error=RuntimeError("x" * 10_000 + "\n" + "y"),
        attempts=3,
        agent="a",
        topic="t",
        position={},
    )
    text = headers[envelope.DLQ_ERROR]
    assert "\n" not in text
    assert len(text) == 2000
    empty = envelope.dlq_headers(
        {}, reason="r", error=KeyError(), attempts=1, agent="a", topic="t", position={}
    )
    assert empty[envelope.DLQ_ERROR] == "KeyError", "an empty message falls back to the type"
