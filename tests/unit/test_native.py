"""Tests of the Rust extension's phase-1 API: ids and the envelope header codec."""

from __future__ import annotations

import hashlib
import os
import re
import time

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

import agentflow
from agentflow import _native as n

ULID_RE = re.compile(r"^[0-7][0-9A-HJKMNP-TV-Z]{25}$")
CROCKFORD = "0123456789ABCDEFGHJKMNPQRSTVWXYZ"


def ulid_ms(value: str) -> int:
    number = 0
    for ch in value:
        number = number * 32 + CROCKFORD.index(ch)
    return number >> 80


# --- ids --------------------------------------------------------------------------------------


def test_version_matches_package() -> None:
    assert n.__version__ == agentflow.__version__
    assert re.fullmatch(r"\d+\.\d+\.\d+.*", n.__version__)


def test_new_id_layout_and_timestamp() -> None:
    before = int(time.time() * 1000)
    value = n.new_id()
    after = int(time.time() * 1000)
    assert ULID_RE.match(value), value
    assert before - 1 <= ulid_ms(value) <= after + 1


def test_new_id_strictly_increasing_in_one_process() -> None:
    ids = [n.new_id() for _ in range(50_000)]
    assert ids == sorted(ids)
    assert len(set(ids)) == len(ids)


def test_derive_id_keeps_parent_timestamp_prefix() -> None:
    parent = n.new_id()
    child = n.derive_id(parent, "triage", 0)
    assert ULID_RE.match(child)
    assert child[:10] == parent[:10]
    assert child != parent


def test_derive_id_for_foreign_parent_is_a_valid_id() -> None:
    child = n.derive_id("orders:3:1234", "triage", 2)
    assert ULID_RE.match(child)
    assert child == n.derive_id("orders:3:1234", "triage", 2)


def derive_reference(parent: str, agent: str, index: int) -> str:
    """Independent Python model of the derivation (SHA-256 over length-prefixed fields)."""
    h = hashlib.sha256(b"agentflow.derive_id.v1\0")
    for part in (parent.encode(), agent.encode()):
        h.update(len(part).to_bytes(8, "big") + part)
    h.update(index.to_bytes(8, "big"))
    value = int.from_bytes(h.digest()[:16], "big")
    if ULID_RE.match(parent.upper()):
        parent_value = 0
        for ch in parent.upper():
            parent_value = parent_value * 32 + CROCKFORD.index(ch)
        value = (parent_value >> 80 << 80) | (value & ((1 << 80) - 1))
    return "".join(CROCKFORD[(value >> (5 * (25 - i))) & 31] for i in range(26))


def test_derive_id_known_values_are_stable_forever() -> None:
    # Pinned: changing the derivation would break dedup of redelivered inputs across upgrades.
    assert n.derive_id("01HZX3K5M8Q4W2E6R7T9Y0ABCD", "triage", 0) == "01HZX3K5M8CW508DH8T2HER583"
    assert n.derive_id("not-a-ulid", "a", 7) == "3YE9Q528S6NQSRXCJ6NK1XG55W"


@given(
    st.text(max_size=40) | st.builds(lambda: n.new_id()),
    st.text(max_size=20),
    st.integers(0, 2**64 - 1),
)
def test_derive_id_matches_reference(parent: str, agent: str, index: int) -> None:
    assert n.derive_id(parent, agent, index) == derive_reference(parent, agent, index)


def test_derive_id_rejects_negative_index() -> None:
    with pytest.raises(OverflowError):
        n.derive_id(n.new_id(), "a", -1)


@given(st.text(), st.text(), st.integers(min_value=0, max_value=2**64 - 1))
def test_derive_id_deterministic(parent: str, agent: str, index: int) -> None:
    first = n.derive_id(parent, agent, index)
    assert first == n.derive_id(parent, agent, index)
    assert ULID_RE.match(first)


@given(
    st.lists(
        st.tuples(st.text(max_size=30), st.text(max_size=10), st.integers(0, 1000)),
        min_size=2,
        max_size=30,
        unique=True,
    )
)
def test_derive_id_distinct_inputs_distinct_ids(inputs: list[tuple[str, str, int]]) -> None:
    ids = {n.derive_id(p, a, i) for p, a, i in inputs}
    assert len(ids) == len(inputs)


# --- envelope ---------------------------------------------------------------------------------


def test_encode_headers_full() -> None:
    headers = n.encode_headers(
        "ID1", "k", 2, "C1", "P1", "triage", 1700, "application/json", {"traceparent": "00-x"}
    )
    assert headers == {
        "af-id": "ID1",
        "af-key": "k",
        "af-attempt": "2",
        "af-correlation-id": "C1",
        "af-causation-id": "P1",
        "af-agent": "triage",
        "af-ts": "1700",
        "content-type": "application/json",
        "traceparent": "00-x",
    }


def test_encode_headers_omits_none_and_defaults_correlation() -> None:
    headers = n.encode_headers("ID1", None, 1, None, None, None, 5, "application/json")
    assert headers == {
        "af-id": "ID1",
        "af-attempt": "1",
        "af-correlation-id": "ID1",
        "af-ts": "5",
        "content-type": "application/json",
    }


def test_encode_headers_extra_cannot_override_envelope() -> None:
    extra = {
        "af-id": "evil",
        "AF-ATTEMPT": "99",
        "af-key": "evil",
        "Content-Type": "text/plain",
        "af-not-before": "123",
        "x-user": "u",
    }
    headers = n.encode_headers("ID1", None, 1, None, None, None, 5, "application/json", extra)
    assert headers["af-id"] == "ID1"
    assert headers["af-attempt"] == "1"
    assert "af-key" not in headers
    assert "AF-ATTEMPT" not in headers and "Content-Type" not in headers
    assert headers["content-type"] == "application/json"
    assert headers["af-not-before"] == "123"
    assert headers["x-user"] == "u"


def test_decode_headers_dict_and_kafka_list() -> None:
    as_dict: dict[str, str | bytes] = {
        "af-id": "ID1",
        "af-attempt": "3",
        "af-ts": b"1700",
        "AF-Agent": "triage",
        "traceparent": "00-abc",
        "af-dlq-reason": "boom",
        "X-Custom": "v",
    }
    as_list = [(k, v if isinstance(v, bytes) else v.encode()) for k, v in as_dict.items()]
    both: list[dict[str, str | bytes] | list[tuple[str, bytes]]] = [as_dict, as_list]
    for headers in both:
        env = n.decode_headers(headers)
        assert env.message_id == "ID1"
        assert env.attempt == 3
        assert env.ts_ms == 1700
        assert env.agent == "triage"
        assert env.traceparent == "00-abc"
        assert env.key is None and env.causation_id is None and env.content_type is None
        assert env.extra == {"af-dlq-reason": "boom", "X-Custom": "v"}


def test_decode_headers_none_value_is_absent_and_last_duplicate_wins() -> None:
    env = n.decode_headers([("af-key", None), ("af-attempt", b"1"), ("af-attempt", b"2")])  # type: ignore[list-item]
    assert env.key is None
    assert env.attempt == 2


def test_decode_headers_empty() -> None:
    env = n.decode_headers({})
    assert env.message_id is None and env.attempt is None and env.extra == {}


def test_envelope_is_frozen() -> None:
    env = n.decode_headers({"af-id": "x"})
    with pytest.raises(AttributeError):
        env.message_id = "y"  # type: ignore[misc]
    assert "x" in repr(env)


@pytest.mark.parametrize("header", ["af-attempt", "af-ts", "AF-TS"])
@pytest.mark.parametrize(
    "value", ["abc", "-1", "1.5", "", " 2", "+3", "1e3", "99999999999999999999999"]
)
def test_decode_headers_garbled_integers(header: str, value: str) -> None:
    with pytest.raises(ValueError, match=f"header {header.lower()}: expected a positive integer"):
        n.decode_headers({header: value})


def test_decode_headers_garbled_message_quotes_value() -> None:
    with pytest.raises(ValueError, match=r"^header af-attempt: .*got 'abc'$"):
        n.decode_headers({"af-attempt": "abc"})


def test_decode_headers_invalid_utf8_names_header() -> None:
    with pytest.raises(ValueError, match="header x-bin: value is not valid UTF-8"):
        n.decode_headers([("x-bin", b"\xff\xfe")])
    with pytest.raises(ValueError, match="header af-id"):
        n.decode_headers({"af-id": b"\xc3"})


@pytest.mark.parametrize(
    "bad", [42, "af-id", b"af-id", [("a",)], [("a", 1)], [(1, b"x")], {"a": 1}]
)
def test_decode_headers_wrong_types_raise_type_error(bad: object) -> None:
    with pytest.raises(TypeError):
        n.decode_headers(bad)  # type: ignore[arg-type]


header_names = st.text(min_size=1).filter(lambda s: not s.lower().startswith("af-"))
header_values = st.text()


@given(
    message_id=st.text(),
    key=st.none() | st.text(),
    attempt=st.integers(0, 2**64 - 1),
    correlation_id=st.none() | st.text(),
    causation_id=st.none() | st.text(),
    agent=st.none() | st.text(),
    ts_ms=st.integers(0, 2**64 - 1),
    content_type=st.text(),
    extra=st.dictionaries(
        header_names.filter(
            lambda s: s.lower() not in {"content-type", "traceparent", "tracestate"}
        ),
        header_values,
        max_size=8,
    ),
    trace=st.none() | st.text(),
    as_bytes_list=st.booleans(),
)
def test_encode_decode_round_trip(
    message_id: str,
    key: str | None,
    attempt: int,
    correlation_id: str | None,
    causation_id: str | None,
    agent: str | None,
    ts_ms: int,
    content_type: str,
    extra: dict[str, str],
    trace: str | None,
    as_bytes_list: bool,
) -> None:
    full_extra = dict(extra)
    if trace is not None:
        full_extra["traceparent"] = trace
        full_extra["tracestate"] = trace + "s"
    headers = n.encode_headers(
        message_id,
        key,
        attempt,
        correlation_id,
        causation_id,
        agent,
        ts_ms,
        content_type,
        full_extra,
    )
    wire: object = [(k, v.encode()) for k, v in headers.items()] if as_bytes_list else headers
    env = n.decode_headers(wire)  # type: ignore[arg-type]
    assert env.message_id == message_id
    assert env.key == key
    assert env.attempt == attempt
    assert env.correlation_id == (message_id if correlation_id is None else correlation_id)
    assert env.causation_id == causation_id
    assert env.agent == agent
    assert env.ts_ms == ts_ms
    assert env.content_type == content_type
    assert env.traceparent == trace
    assert env.tracestate == (None if trace is None else trace + "s")
    assert env.extra == extra


@given(st.text().filter(lambda s: not (s.isascii() and s.isdigit())))
def test_garbled_attempt_always_value_error(value: str) -> None:
    with pytest.raises(ValueError, match="header af-attempt"):
        n.decode_headers({"af-attempt": value})


@settings(max_examples=300)
@given(st.lists(st.tuples(st.text(max_size=12), st.binary(max_size=24)), max_size=12))
def test_decode_headers_never_crashes_on_garbage(pairs: list[tuple[str, bytes]]) -> None:
    try:
        n.decode_headers(pairs)
    except ValueError:
        pass


@pytest.mark.skipif(not hasattr(os, "fork"), reason="needs os.fork")
def test_new_id_forked_child_does_not_continue_parent_sequence() -> None:
    n.new_id()
    read_end, write_end = os.pipe()
    pid = os.fork()
    if pid == 0:  # child
        os.write(write_end, n.new_id().encode())
        os._exit(0)
    parent_id = n.new_id()
    os.waitpid(pid, 0)
    child_id = os.read(read_end, 64).decode()
    os.close(read_end)
    os.close(write_end)
    assert ULID_RE.match(child_id)
    assert child_id != parent_id
