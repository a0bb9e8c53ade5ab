"""Property tests of the native hot path against obviously-correct Python references,
plus a bounded fuzz of every entry point that takes untrusted bytes or text."""

from __future__ import annotations

import json
import os
from dataclasses import dataclass
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from agentflow import _native as n

# --- CEL programs and the router ----------------------------------------------------------------
# Conditions come from a small grammar that has a direct Python meaning, so the reference is the
# same tree evaluated in Python. Fields are typed (s* strings, i* ints) and always present.

STR_FIELDS = ["s0", "s1"]
INT_FIELDS = ["i0", "i1"]
HEADER_NAMES = ["h0", "x-tenant"]
short_text = st.text(max_size=6)
small_int = st.integers(-5, 5)


@dataclass(frozen=True)
class Msg:
    payload: dict[str, Any]
    headers: dict[str, str]
    key: str | None
    topic: str


Cond = tuple[Any, ...]


def cel_str(value: str) -> str:
    # JSON string escapes (\", \\, \n, \uXXXX for other controls) are valid CEL escapes too.
    return json.dumps(value, ensure_ascii=False)


atoms: st.SearchStrategy[Cond] = st.one_of(
    st.tuples(st.just("str_eq"), st.sampled_from(STR_FIELDS), short_text),
    st.tuples(
        st.just("int_cmp"),
        st.sampled_from(INT_FIELDS),
        st.sampled_from(["==", "<", ">"]),
        small_int,
    ),
    st.tuples(st.just("header_eq"), st.sampled_from(HEADER_NAMES), short_text),
    st.tuples(st.just("key_eq"), short_text),
    st.tuples(st.just("topic_prefix"), st.sampled_from(["", "orders", "orders.", "x"])),
    st.tuples(st.just("const"), st.booleans()),
)
conditions: st.SearchStrategy[Cond] = st.recursive(
    atoms,
    lambda sub: st.one_of(
        st.tuples(st.just("and"), sub, sub),
        st.tuples(st.just("or"), sub, sub),
        st.tuples(st.just("not"), sub),
    ),
    max_leaves=6,
)


def render(c: Cond) -> str:
    kind = c[0]
    if kind == "str_eq":
        return f"payload.{c[1]} == {cel_str(c[2])}"
    if kind == "int_cmp":
        return f"payload.{c[1]} {c[2]} {c[3]}"
    if kind == "header_eq":
        return f"headers[{cel_str(c[1])}] == {cel_str(c[2])}"
    if kind == "key_eq":
        return f"key == {cel_str(c[1])}"
    if kind == "topic_prefix":
        return f"topic.startsWith({cel_str(c[1])})"
    if kind == "const":
        return "true" if c[1] else "false"
    if kind == "not":
        return f"!({render(c[1])})"
    op = "&&" if kind == "and" else "||"
    return f"({render(c[1])}) {op} ({render(c[2])})"


def evaluate(c: Cond, m: Msg) -> bool:
    kind = c[0]
    if kind == "str_eq":
        return bool(m.payload[c[1]] == c[2])
    if kind == "int_cmp":
        left, op, right = m.payload[c[1]], c[2], c[3]
        return bool({"==": left == right, "<": left < right, ">": left > right}[op])
    if kind == "header_eq":
        return bool(m.headers[c[1]] == c[2])
    if kind == "key_eq":
        return bool(m.key == c[1])
    if kind == "topic_prefix":
        return m.topic.startswith(c[1])
    if kind == "const":
        return bool(c[1])
    if kind == "not":
        return not evaluate(c[1], m)
    if kind == "and":
        return evaluate(c[1], m) and evaluate(c[2], m)
    return evaluate(c[1], m) or evaluate(c[2], m)


messages = st.builds(
    Msg,
    payload=st.fixed_dictionaries(
        {**{f: short_text for f in STR_FIELDS}, **{f: small_int for f in INT_FIELDS}},
        optional={"extra": st.lists(small_int, max_size=3)},
    ),
    headers=st.fixed_dictionaries({h: short_text for h in HEADER_NAMES}),
    key=st.none() | short_text,
    topic=st.sampled_from(["orders.new", "orders", "x.y", ""]),
)


def reference_select(routes: list[Cond | None], m: Msg) -> int:
    for i, cond in enumerate(routes):
        if cond is None or evaluate(cond, m):
            return i
    return -1


def select(router: n.Router, m: Msg) -> int:
    return router.select(json.dumps(m.payload).encode(), m.headers, m.key, m.topic)


@settings(max_examples=300, suppress_health_check=[HealthCheck.too_slow])
@given(conditions, messages)
def test_cel_program_matches_reference(cond: Cond, m: Msg) -> None:
    program = n.CelProgram(render(cond))
    got = program.evaluate(json.dumps(m.payload).encode(), m.headers, m.key, m.topic)
    assert got is evaluate(cond, m)


@settings(max_examples=200, suppress_health_check=[HealthCheck.too_slow])
@given(st.lists(st.none() | conditions, max_size=5), st.lists(messages, min_size=1, max_size=4))
def test_router_matches_reference(routes: list[Cond | None], msgs: list[Msg]) -> None:
    router = n.Router([None if r is None else render(r) for r in routes])
    assert len(router) == len(routes)
    for m in msgs:
        assert select(router, m) == reference_select(routes, m)


@given(
    st.recursive(
        st.none()
        | st.booleans()
        | st.integers(-(2**63), 2**63 - 1)
        | st.text()
        | st.floats(allow_nan=False, allow_infinity=False),
        lambda sub: (
            st.lists(sub, max_size=4) | st.dictionaries(st.text(max_size=5), sub, max_size=4)
        ),
        max_leaves=12,
    )
)
def test_cel_payload_round_trips_to_python(value: Any) -> None:
    got = n.CelProgram("payload").evaluate(json.dumps(value).encode(), {}, None, "t")
    assert got == value
    assert json.dumps(got, sort_keys=True) == json.dumps(value, sort_keys=True)


def test_cel_results_and_variables() -> None:
    p = n.CelProgram("payload.items.filter(i, i > 1).map(i, i * 2)")
    assert p.evaluate(b'{"items": [1, 2, 3]}', {}, None, "t") == [4, 6]
    assert p.expression == "payload.items.filter(i, i > 1).map(i, i * 2)"
    assert "payload" in p.variables()
    assert n.CelProgram("key").evaluate(b"", {}, None, "t") is None  # payload never parsed
    assert n.CelProgram("{'a': 1.5, 'b': b'x'}").evaluate(b"{}", {}, None, "t") == {
        "a": 1.5,
        "b": b"x",
    }


@pytest.mark.parametrize(
    ("expr", "needle"),
    [("payload.a ==", "<input>:1:"), ("(", "<input>:1:"), ("1" + "+1" * 200, "nested")],
)
def test_cel_compile_errors(expr: str, needle: str) -> None:
    with pytest.raises(ValueError, match="invalid CEL expression") as info:
        n.CelProgram(expr)
    assert needle in str(info.value)


def test_cel_evaluation_errors() -> None:
    with pytest.raises(ValueError, match="No such key: nope"):
        n.CelProgram("payload.nope == 1").evaluate(b"{}", {}, None, "t")
    with pytest.raises(ValueError, match="not valid JSON"):
        n.CelProgram("payload.a").evaluate(b"{", {}, None, "t")
    with pytest.raises(ValueError, match=r"payload\.a"):
        n.CelProgram('payload.a + "x"').evaluate(b'{"a": 1}', {}, None, "t")


def test_router_errors_name_route_and_expression() -> None:
    with pytest.raises(ValueError, match=r"route 1 \('payload\.n'\): condition must be a bool"):
        n.Router(["false", "payload.n", None]).select(b'{"n": 1}', {}, None, "t")
    with pytest.raises(ValueError, match=r"route 0: CEL expression 'payload\.x == 1' failed"):
        n.Router(["payload.x == 1"]).select(b"{}", {}, None, "t")
    with pytest.raises(ValueError, match="route 2: invalid CEL expression"):
        n.Router([None, "true", "(("])
    with pytest.raises(TypeError):
        n.Router("payload.a")  # a str is a Sequence[str], but never meant as routes
    assert n.Router([]).select(b"{}", {}, None, "t") == -1
    # Routes after a default are unreachable: their needs do not force a JSON parse.
    assert (
        n.Router(['headers["a"] == "b"', None, "payload.x"]).select(
            b"garbage", {"a": "c"}, None, "t"
        )
        == 1
    )


# --- subject matching ---------------------------------------------------------------------------


def subject_ref(pattern: str, subject: str) -> bool:
    p, s = pattern.split("."), subject.split(".")
    if "" in p or "" in s:
        return False
    for i, tok in enumerate(p):
        if tok == ">" and i == len(p) - 1:
            return len(s) > i
        if i >= len(s) or (tok != "*" and tok != s[i]):
            return False
    return len(p) == len(s)


tokens = st.sampled_from(["a", "b", "c", "*", ">", "", "ab"])


@settings(max_examples=1000)
@given(st.lists(tokens, min_size=1, max_size=5), st.lists(tokens, min_size=1, max_size=5))
def test_subject_matches_reference(pattern: list[str], subject: list[str]) -> None:
    p, s = ".".join(pattern), ".".join(subject)
    assert n.subject_matches(p, s) is subject_ref(p, s)


@pytest.mark.parametrize(
    ("pattern", "subject", "expected"),
    [
        ("orders.*", "orders.new", True),
        ("orders.*", "orders.new.eu", False),
        ("orders.>", "orders.new.eu", True),
        ("orders.>", "orders", False),
        (">", "a.b", True),
        ("*.new", "orders.new", True),
        ("orders.new", "orders.new", True),
        ("orders..new", "orders..new", False),
    ],
)
def test_subject_matches_examples(pattern: str, subject: str, expected: bool) -> None:
    assert n.subject_matches(pattern, subject) is expected


# --- murmur2 partitioner ------------------------------------------------------------------------


def murmur2_ref(data: bytes) -> int:
    """Straight port of Kafka's Utils.murmur2 on unsigned 32-bit arithmetic."""
    m, mask = 0x5BD1E995, 0xFFFFFFFF
    h = (0x9747B28C ^ len(data)) & mask
    for i in range(len(data) // 4):
        k = int.from_bytes(data[4 * i : 4 * i + 4], "little")
        k = (k * m) & mask
        k ^= k >> 24
        k = (k * m) & mask
        h = ((h * m) & mask) ^ k
    tail, base = len(data) % 4, len(data) & ~3
    if tail == 3:
        h ^= data[base + 2] << 16
    if tail >= 2:
        h ^= data[base + 1] << 8
    if tail >= 1:
        h ^= data[base]
        h = (h * m) & mask
    h ^= h >> 13
    h = (h * m) & mask
    h ^= h >> 15
    return h


def partition_ref(key: bytes, n_parts: int) -> int:
    return (murmur2_ref(key) & 0x7FFFFFFF) % n_parts


@pytest.mark.parametrize(
    ("key", "hash32"),
    [
        (b"kafka", 0xD067CF64),
        (b"giberish123456789", 0x8F552B0C),
        (b"1234", 0x9FC97B14),
        (b"234", 0xE7C009CA),
        (b"34", 0x873930DA),
        (b"4", 0x5A4B5CA1),
        (b"", 0x106E08D9),
    ],
)
def test_murmur2_known_vectors(key: bytes, hash32: int) -> None:
    assert murmur2_ref(key) == hash32
    for parts in (1, 3, 12, 2**31 - 1):
        assert n.murmur2_partition(key, parts) == (hash32 & 0x7FFFFFFF) % parts


@given(st.binary(max_size=64), st.integers(1, 2**31 - 1))
def test_murmur2_matches_reference(key: bytes, parts: int) -> None:
    assert n.murmur2_partition(key, parts) == partition_ref(key, parts)


@pytest.mark.parametrize("parts", [0, -1, 2**31, 2**40])
def test_murmur2_rejects_bad_partition_count(parts: int) -> None:
    with pytest.raises((ValueError, OverflowError)):
        n.murmur2_partition(b"k", parts)


# --- dedup window -------------------------------------------------------------------------------


class DedupRef:
    def __init__(self, window: float, max_entries: int) -> None:
        self.window, self.max_entries = window, max_entries
        self.first_seen: dict[str, float] = {}  # insertion-ordered: oldest first

    def seen(self, mid: str, now: float) -> bool:
        for old, ts in list(self.first_seen.items()):
            if now - ts >= self.window:
                del self.first_seen[old]
        if mid in self.first_seen:
            return True
        self.first_seen[mid] = now
        while len(self.first_seen) > self.max_entries:
            del self.first_seen[next(iter(self.first_seen))]
        return False


@settings(max_examples=300)
@given(
    st.floats(0.5, 20),
    st.integers(1, 6),
    st.lists(st.tuples(st.sampled_from("abcdefgh"), st.floats(0, 5)), max_size=60),
)
def test_dedup_matches_reference(window: float, cap: int, steps: list[tuple[str, float]]) -> None:
    ref, win = DedupRef(window, cap), n.DedupWindow(window, cap)
    now = 1000.0
    for mid, dt in steps:
        now += dt
        assert win.seen(mid, now) is ref.seen(mid, now)
        assert len(win) == len(ref.first_seen)


def test_dedup_defaults_to_monotonic_clock_and_validates() -> None:
    win = n.DedupWindow(60, 10)
    assert win.seen("a") is False
    assert win.seen("a") is True
    assert len(win) == 1
    for bad in [(0, 1), (-1, 1), (float("nan"), 1), (1, 0), (1, -5)]:
        with pytest.raises(ValueError):
            n.DedupWindow(*bad)


# --- extract_key --------------------------------------------------------------------------------


def extract_ref(doc: Any, path: str) -> str | None:
    node = doc
    for seg in path.split("."):
        if isinstance(node, dict) and seg in node:
            node = node[seg]
        elif isinstance(node, list) and seg.isascii() and seg.isdigit() and int(seg) < len(node):
            node = node[int(seg)]
        else:
            return None
    if node is None:
        return None
    if isinstance(node, str):
        return node
    return json.dumps(node, ensure_ascii=False, separators=(",", ":"), sort_keys=True)


json_values = st.recursive(
    st.none()
    | st.booleans()
    | st.integers()
    | st.text(max_size=5)
    | st.floats(allow_nan=False, allow_infinity=False),
    lambda sub: (
        st.lists(sub, max_size=3)
        | st.dictionaries(st.sampled_from(["id", "a", "b", "0", "é"]), sub, max_size=3)
    ),
    max_leaves=10,
)
paths = (
    st.lists(st.sampled_from(["id", "a", "b", "0", "1", "é", "x", ""]), min_size=1, max_size=3)
    .map(".".join)
    .filter(bool)
)


@settings(max_examples=500)
@given(json_values, paths)
def test_extract_key_matches_reference(doc: Any, path: str) -> None:
    payload = json.dumps(doc, ensure_ascii=False).encode()
    assert n.extract_key(payload, path) == extract_ref(doc, path)


def test_extract_key_examples() -> None:
    payload = (
        b'{"id": "t-1", "n": 12, "big": 123456789012345678901234567890, "f": 1.50,'
        b' "customer": {"id": 7, "vip": true}, "tags": ["x", "y"], "none": null}'
    )
    assert n.extract_key(payload, "id") == "t-1"
    assert n.extract_key(payload, "n") == "12"
    assert n.extract_key(payload, "big") == "123456789012345678901234567890"
    assert n.extract_key(payload, "f") == "1.50"
    assert n.extract_key(payload, "customer.id") == "7"
    assert n.extract_key(payload, "customer.vip") == "true"
    assert n.extract_key(payload, "tags.1") == "y"
    assert n.extract_key(payload, "none") is None
    assert n.extract_key(payload, "customer.missing") is None
    for bad_payload, path in [(b"{", "id"), (b"", "id"), (b"\xff", "id"), (payload, "")]:
        with pytest.raises(ValueError):
            n.extract_key(bad_payload, path)


# --- batch decode -------------------------------------------------------------------------------


def test_decode_headers_batch_keeps_slots() -> None:
    batch: list[Any] = [
        {"af-id": "a"},
        [("af-attempt", b"zz")],
        {"af-id": b"\xff"},
        42,
        [("af-id", b"b")],
    ]
    out = n.decode_headers_batch(batch)
    assert len(out) == 5
    assert isinstance(out[0], n.Envelope) and out[0].message_id == "a"
    assert isinstance(out[1], ValueError) and "af-attempt" in str(out[1])
    assert isinstance(out[2], ValueError) and "af-id" in str(out[2])
    assert isinstance(out[3], TypeError)
    assert isinstance(out[4], n.Envelope) and out[4].message_id == "b"
    assert n.decode_headers_batch([]) == []
    with pytest.raises(TypeError):
        n.decode_headers_batch(5)  # type: ignore[arg-type]


# --- bounded fuzz: garbage in, ValueError/TypeError out, never a crash --------------------------

# AGENTFLOW_FUZZ_EXAMPLES raises the budget for a longer local run (default keeps CI < 20 s).
FUZZ = settings(
    max_examples=int(os.environ.get("AGENTFLOW_FUZZ_EXAMPLES", "250")),
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow],
)
garbage_text = st.text(max_size=40) | st.sampled_from(
    [
        "payload.",
        "((",
        "[[",
        "{",
        "'",
        '"',
        "\\",
        "1/0",
        "payload.a.b.c",
        "has(",
        "a.?b",
        "1 ? 2 : 3",
    ]
)
header_values_any = st.one_of(
    st.text(max_size=10), st.binary(max_size=10), st.none(), st.integers()
)


@FUZZ
@given(
    st.one_of(
        st.dictionaries(
            st.text(max_size=12) | st.sampled_from(["af-attempt", "af-ts", "AF-ID"]),
            header_values_any,
            max_size=6,
        ),
        st.lists(
            st.tuples(st.text(max_size=12) | st.binary(max_size=6), header_values_any), max_size=6
        ),
        st.lists(st.lists(st.binary(max_size=4), max_size=3), max_size=3),
        st.binary(max_size=10),
        st.integers(),
    )
)
def test_fuzz_decode_headers(headers: Any) -> None:
    try:
        n.decode_headers(headers)
    except (ValueError, TypeError):
        pass


@FUZZ
@given(garbage_text, st.binary(max_size=40) | json_values.map(lambda v: json.dumps(v).encode()))
def test_fuzz_cel_program(expr: str, payload: bytes) -> None:
    try:
        program = n.CelProgram(expr)
    except ValueError:
        return
    try:
        program.evaluate(payload, {"h": "v"}, None, "t")
    except ValueError:
        pass


@FUZZ
@given(
    st.binary(max_size=60) | json_values.map(lambda v: json.dumps(v).encode()), st.text(max_size=12)
)
def test_fuzz_extract_key(payload: bytes, path: str) -> None:
    try:
        result = n.extract_key(payload, path)
    except ValueError:
        return
    assert result is None or isinstance(result, str)


@FUZZ
@given(
    st.lists(st.none() | garbage_text, max_size=4),
    st.binary(max_size=40),
    st.dictionaries(st.text(max_size=5), st.text(max_size=5), max_size=3),
)
def test_fuzz_router(routes: list[str | None], payload: bytes, headers: dict[str, str]) -> None:
    try:
        router = n.Router(routes)
    except ValueError:
        return
    try:
        assert -1 <= router.select(payload, headers, None, "t") < len(routes)
    except ValueError:
        pass
