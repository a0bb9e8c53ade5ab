"""MessagePlan (decode + route + key in one call), the decision cache, output_headers and the
native dedup clock, against obviously-correct Python references; bounded fuzz of each."""

from __future__ import annotations

import json
import time
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from agentflow import _native as n
from tests.unit.test_native_props import (
    FUZZ,
    Cond,
    Msg,
    conditions,
    garbage_text,
    header_values_any,
    messages,
    reference_select,
    render,
)

# --- Python references ---------------------------------------------------------------------------

KNOWN = {"af-id", "af-key", "af-attempt", "af-correlation-id"}


def reference_decode(headers: dict[str, str]) -> tuple[Any, ...]:
    """(message_id, key, attempt, correlation_id): names case-insensitive, later wins."""
    found: dict[str, str] = {}
    for name, value in headers.items():
        if name.lower() in KNOWN:
            found[name.lower()] = value
    attempt = found.get("af-attempt")
    return (
        found.get("af-id"),
        found.get("af-key"),
        None if attempt is None else int(attempt),
        found.get("af-correlation-id"),
    )


def reference_key(payload: bytes, path: str) -> Any:
    """The pipeline's contract: walk objects; str as is, int as decimal, else raw JSON."""
    # json, not orjson: orjson reads integers beyond 64 bits as floats; the key keeps them exact.
    node: Any = json.loads(payload)
    for part in path.removeprefix("payload.").split("."):
        if not isinstance(node, dict) or part not in node:
            return None
        node = node[part]
    if node is None or isinstance(node, str):
        return node
    if isinstance(node, int) and not isinstance(node, bool):
        return str(node)
    return node  # compared after loading the native raw JSON


def native_key(raw: str | bytes | None) -> Any:
    # json, like reference_key: integers beyond 64 bits must compare exactly.
    return json.loads(raw) if isinstance(raw, bytes) else raw


def envelope_headers(m: Msg, attempt: int) -> dict[str, str]:
    return {**m.headers, "af-id": "m-1", "AF-Attempt": str(attempt), "af-key": "hk"}


# --- properties ---------------------------------------------------------------------------------


@settings(max_examples=150, suppress_health_check=[HealthCheck.too_slow])
@given(
    st.lists(st.none() | conditions, max_size=5),
    st.lists(messages, min_size=1, max_size=6),
    st.integers(0, 3),
)
def test_process_matches_reference(
    routes: list[Cond | None], msgs: list[Msg], attempt: int
) -> None:
    rendered = [None if r is None else render(r) for r in routes]
    cached = n.MessagePlan(rendered, key_path="s0")
    uncached = n.MessagePlan(rendered, key_path="s0", cache_size=0)
    # Every message twice: the second time the cache answers what it can.
    for m in msgs + msgs:
        headers = envelope_headers(m, attempt)
        payload = json.dumps(m.payload).encode()
        want_route = reference_select(routes, m)
        for plan in (cached, uncached):
            got = plan.process(headers, payload, m.key, m.topic)
            assert got[:4] == reference_decode(headers)
            assert got[4] == want_route
            assert got[5] == m.payload["s0"]
            assert plan.select(payload, headers, m.key, m.topic) == want_route


@settings(max_examples=100, suppress_health_check=[HealthCheck.too_slow])
@given(st.lists(conditions, min_size=1, max_size=4), st.lists(messages, min_size=5, max_size=20))
def test_cache_never_changes_a_decision(routes: list[Cond], msgs: list[Msg]) -> None:
    rendered: list[str | None] = [render(r) for r in routes]
    cached = n.Router(rendered, cache_size=4)  # tiny: exercises clearing too
    plain = n.Router(rendered, cache_size=0)
    for m in msgs * 3:
        payload = json.dumps(m.payload).encode()
        assert cached.select(payload, m.headers, m.key, m.topic) == plain.select(
            payload, m.headers, m.key, m.topic
        )


json_leaf = (
    st.none()
    | st.booleans()
    | st.integers(-(2**70), 2**70)
    | st.floats(allow_nan=False, allow_infinity=False)
    | st.text(max_size=6)
)
json_value = st.recursive(
    json_leaf,
    lambda sub: st.lists(sub, max_size=3) | st.dictionaries(st.text(max_size=3), sub, max_size=3),
    max_leaves=8,
)
path_part = st.sampled_from(["a", "b", "é", "x y", ""])


@settings(max_examples=300, suppress_health_check=[HealthCheck.too_slow])
@given(
    st.dictionaries(path_part, json_value | st.dictionaries(path_part, json_value, max_size=3)),
    st.lists(path_part.filter(bool), min_size=1, max_size=3),
    st.booleans(),
)
def test_key_of_matches_reference(doc: dict[str, Any], parts: list[str], prefixed: bool) -> None:
    path = ("payload." if prefixed else "") + ".".join(parts)
    payload = json.dumps(doc).encode()
    plan = n.MessagePlan(None, key_path=path)
    want = reference_key(payload, path)
    assert native_key(plan.key_of(payload)) == want
    assert native_key(plan.process({}, payload, None, "t")[5]) == want
    with_route = n.MessagePlan(["size(payload) >= 0", None], key_path=path)  # whole payload
    assert native_key(with_route.process({}, payload, None, "t")[5]) == want


def test_key_of_edges() -> None:
    plan = n.MessagePlan(None, key_path="a.b")
    assert plan.key_of(b'{"a": {"b": -0}}') == "0"
    assert plan.key_of(b'{"a": {"b": 12345678901234567890123}}') == "12345678901234567890123"
    assert plan.key_of(b'{"a": {"b": 1.50}}') == b"1.50"
    assert plan.key_of(b'{"a": {"b": "x\\u00e9\\n"}}') == "x\u00e9\n"
    assert plan.key_of(b'{"a": {"b": null}}') is None
    assert plan.key_of(b'{"a": [1]}') is None
    assert plan.key_of(b"[1]") is None
    assert plan.key_of(b'{"a": {"b": 1}, "a": {"c": 2}}') is None  # last duplicate wins
    with pytest.raises(ValueError, match="not valid JSON"):
        plan.key_of(b'{"a": 1, "z": tru}')
    assert n.MessagePlan().key_of(b"{") is None  # no path: payload never read
    for bad in ["", "a..b", "payload.", "."]:
        with pytest.raises(ValueError, match="key_path"):
            n.MessagePlan(None, key_path=bad)


def test_named_members_and_dotted_names_stay_apart() -> None:
    plan = n.MessagePlan(['payload["a.b"] == 1', "payload.a.b == 2", None])
    assert plan.select(b'{"a.b": 1, "a": {"b": 2}}', {}, None, "t") == 0
    assert plan.select(b'{"a.b": 0, "a": {"b": 2}}', {}, None, "t") == 1
    assert plan.select(b'{"a.b": 0, "a": {"b": 3}}', {}, None, "t") == 2
    has = n.MessagePlan(["has(payload.x)", 'headers.h == "v"', None])
    assert has.select(b'{"x": null}', {}, None, "t") == 0
    assert has.select(b"{}", {"h": "v"}, None, "t") == 1
    kafka_style: Any = [("h", b"v")]
    assert has.select(b"{}", kafka_style, None, "t") == 1
    with pytest.raises(ValueError, match="route 1"):
        has.select(b"{}", {}, None, "t")  # no such header


def test_process_errors_and_batch() -> None:
    plan = n.MessagePlan(["payload.a == 1", None], key_path="id")
    ok = ({"af-id": "x"}, b'{"a": 1, "id": 7}', None, "t")
    assert plan.process(*ok) == ("x", None, None, None, 0, "7")
    with pytest.raises(ValueError, match="af-attempt"):
        plan.process({"af-attempt": "-1"}, b"{}", None, "t")
    with pytest.raises(ValueError, match="not valid JSON"):
        plan.process({}, b"{", None, "t")
    with pytest.raises(ValueError, match="route 0"):
        plan.process({}, b"[1]", None, "t")
    with pytest.raises(TypeError):
        plan.process({"h": 1}, b"{}", None, "t")  # type: ignore[dict-item]
    out = plan.process_batch([ok, ({}, b"{", None, "t"), ("nope",), ok])  # type: ignore[list-item]
    assert out[0] == out[3] == plan.process(*ok)
    assert isinstance(out[1], ValueError) and isinstance(out[2], TypeError)
    assert plan.decode_batch([{"af-id": "a"}, {"af-ts": "x"}])[0] == ("a", None, None, None)
    assert isinstance(plan.decode_batch([{"af-ts": "x"}])[0], ValueError)
    assert len(plan) == 2 and len(n.MessagePlan()) == 0


def test_decode_returns_the_header_objects() -> None:
    headers = {"af-id": "m" * 30, "AF-KEY": "k", "af-attempt": "3", "af-correlation-id": "c"}
    got = n.MessagePlan().decode(headers)
    assert got == ("m" * 30, "k", 3, "c")
    assert got[0] is headers["af-id"]
    assert n.MessagePlan().decode([("af-id", b"x"), ("af-id", b"y")]) == ("y", None, None, None)


def reference_output_headers(
    parent: str,
    agent: str,
    index: int,
    key: str | None,
    corr: str,
    ts: int,
    ct: str,
    trace: dict[str, str],
    extra: dict[str, str] | None,
) -> dict[str, str]:
    carried: dict[str, str] = {}
    if "traceparent" in trace:
        carried["traceparent"] = trace["traceparent"]
        if "tracestate" in trace:
            carried["tracestate"] = trace["tracestate"]
    return n.encode_headers(
        n.derive_id(parent, agent, index),
        key,
        1,
        corr,
        parent,
        agent,
        ts,
        ct,
        {**carried, **(extra or {})},
    )


@given(
    st.text(max_size=30),
    st.text(min_size=1, max_size=10),
    st.integers(0, 10),
    st.none() | st.text(max_size=5),
    st.dictionaries(
        st.sampled_from(["traceparent", "tracestate", "af-id", "x"]), st.text(max_size=5)
    ),
    st.none() | st.dictionaries(st.sampled_from(["AF-TS", "x", "tracestate"]), st.text(max_size=5)),
)
def test_output_headers_match_reference(
    parent: str,
    agent: str,
    index: int,
    key: str | None,
    trace: dict[str, str],
    extra: dict[str, str] | None,
) -> None:
    args = (parent, agent, index, key, "corr", 1_700_000_000_000, "application/json")
    got = n.output_headers(*args, trace, extra)
    assert got == reference_output_headers(*args, trace, extra)
    assert list(got) == list(reference_output_headers(*args, trace, extra))


def test_dedup_window_default_clock_is_monotonic() -> None:
    w = n.DedupWindow(60.0, 10)
    assert not w.seen("a")
    assert w.seen("a")
    assert w.seen("a", time.monotonic() + 59.0)
    assert not w.seen("a", time.monotonic() + 61.0)


# --- bounded fuzz --------------------------------------------------------------------------------


@FUZZ
@given(
    st.lists(st.none() | garbage_text, max_size=3),
    st.none() | garbage_text,
    st.binary(max_size=48) | json_value.map(lambda v: json.dumps(v).encode()),
    st.dictionaries(
        st.text(max_size=8) | st.sampled_from(["af-attempt", "AF-ID"]),
        header_values_any,
        max_size=4,
    ),
    st.none() | st.text(max_size=5),
)
def test_fuzz_message_plan(
    routes: list[str | None], key_path: str | None, payload: bytes, headers: Any, key: str | None
) -> None:
    try:
        plan = n.MessagePlan(routes, key_path=key_path, cache_size=2)
    except ValueError:
        return
    for call in (
        lambda: plan.process(headers, payload, key, "t"),
        lambda: plan.select(payload, headers, key, "t"),
        lambda: plan.key_of(payload),
        lambda: plan.decode(headers),
        lambda: plan.process_batch([(headers, payload, key, "t"), (1, 2)]),  # type: ignore[list-item]
    ):
        try:
            call()
        except (ValueError, TypeError):
            pass


@FUZZ
@given(
    st.text(max_size=30),
    st.text(max_size=10),
    st.integers(0, 2**64 - 1),
    st.none()
    | st.dictionaries(st.text(max_size=10), header_values_any, max_size=3)
    | st.integers(),
    st.none() | st.dictionaries(st.text(max_size=10), header_values_any, max_size=3),
)
def test_fuzz_output_headers(parent: str, agent: str, index: int, trace: Any, extra: Any) -> None:
    try:
        got = n.output_headers(parent, agent, index, None, parent, 0, "a/b", trace, extra)
    except (ValueError, TypeError):
        return
    assert got["af-causation-id"] == parent and len(got["af-id"]) == 26
