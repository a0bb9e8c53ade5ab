"""Route semantics on the embedded broker: first match, default, no match, evaluation errors."""

from __future__ import annotations

import uuid
from typing import Any

import orjson
import pytest

from agentflow import App
from agentflow.errors import NoRoute, RouteError
from agentflow.workflow import check_file
from agentflow.workflow.build import build_app
from agentflow.workflow.commands import settle_time
from agentflow.workflow.routing import RouteTable, is_field_path, key_function
from tests.workflow.conftest import Files

WF = """
apiVersion: agentflow.dev/v1
kind: Workflow
metadata: {name: routing}
spec:
  broker: memory://routing-BROKER
  inputs: [in, strict.in, keyed.in]
  outputs: [hi, big, audit, rest, strict.hi]
  defaults: {retry: {max_attempts: 3, backoff: 10ms}}
  agents:
    pick:
      uses: '{m}:passthrough'
      consumes: in
      routes:
        - when: payload.priority == "high"
          to: hi
        - when: payload.score > 5.0
          to: [big, audit]
        - to: rest
    strict:
      uses: '{m}:passthrough'
      consumes: strict.in
      routes:
        - when: payload.priority == "high"
          to: strict.hi
        - when: headers["x-tier"] == "gold"
          to: strict.hi
    keyed:
      uses: '{m}:passthrough'
      consumes: keyed.in
      concurrency: 1
      idempotency: {key: 'payload.id + "/" + payload.priority'}
"""


async def _run(files: Files, messages: list[tuple[str, dict[str, Any], dict[str, str]]]) -> Any:
    checked = check_file(files.write(WF.replace("BROKER", uuid.uuid4().hex[:8])), {})
    assert checked.ok, [d.format() for d in checked.diagnostics]
    app = build_app(checked)
    seen: dict[str, list[tuple[dict[str, Any], dict[str, str]]]] = {}
    async with app:
        for topic, payload, headers in messages:
            await app.publish(topic, payload, headers=headers)
        assert await app.wait_idle(timeout=10.0, quiet=settle_time(app))
        for topic in ("hi", "big", "audit", "rest", "strict.hi", "strict.in.dlq"):
            stored = await app.broker.browse(topic)
            seen[topic] = [(orjson.loads(m.payload), m.headers) for m in stored]
    return app, seen


def _ids(seen: dict[str, Any], topic: str) -> list[str]:
    return sorted(p["id"] for p, _ in seen[topic])


async def test_first_match_wins_and_default(files: Files) -> None:
    _, seen = await _run(
        files,
        [
            ("in", {"id": "a", "priority": "high", "score": 9.0}, {}),  # both match: first wins
            ("in", {"id": "b", "priority": "low", "score": 9.5}, {}),  # second: fan-out
            ("in", {"id": "c", "priority": "low", "score": 1.0}, {}),  # default
        ],
    )
    assert _ids(seen, "hi") == ["a"]
    assert _ids(seen, "big") == ["b"] and _ids(seen, "audit") == ["b"]
    assert _ids(seen, "rest") == ["c"]


async def test_no_match_and_evaluation_error_go_to_the_dlq(files: Files) -> None:
    app, seen = await _run(
        files,
        [
            ("strict.in", {"id": "h", "priority": "high"}, {}),
            ("strict.in", {"id": "g", "priority": "low"}, {"x-tier": "gold"}),
            ("strict.in", {"id": "n", "priority": "low"}, {"x-tier": "silver"}),  # no route
            ("strict.in", {"id": "e", "priority": "low"}, {}),  # headers["x-tier"]: no such key
        ],
    )
    assert _ids(seen, "strict.hi") == ["g", "h"]
    reasons = {p["id"]: h for p, h in seen["strict.in.dlq"]}
    assert set(reasons) == {"n", "e"}
    assert reasons["n"]["af-dlq-reason"] == "no-route"
    assert reasons["e"]["af-dlq-reason"] == "route-error"
    assert "x-tier" in reasons["e"]["af-dlq-error"]
    stats = app.stats["strict"]
    # Neither is retried: a route outcome is deterministic for a message.
    assert (stats.received, stats.succeeded, stats.dead_lettered, stats.retried) == (4, 2, 2, 0)


async def test_cel_idempotency_key(files: Files) -> None:
    app, _ = await _run(
        files,
        [
            ("keyed.in", {"id": "k1", "priority": "low"}, {}),
            ("keyed.in", {"id": "k1", "priority": "low"}, {}),  # same key: handled once
            ("keyed.in", {"id": "k1", "priority": "high"}, {}),  # different key
        ],
    )
    stats = app.stats["keyed"]
    assert (stats.received, stats.succeeded, stats.duplicates) == (3, 2, 1)


def test_route_table_directly() -> None:
    table = RouteTable(('payload.kind == "a"', None), (("ta",), ("tb", "tc")))
    route = table.router()
    assert route(b'{"kind": "a"}', {}, None, "in") == ["ta"]
    assert route(b'{"kind": "z"}', {}, None, "in") == ["tb", "tc"]
    strict = RouteTable(('payload.kind == "a"',), (("ta",),)).router()
    with pytest.raises(NoRoute):
        strict(b'{"kind": "z"}', {}, None, "in")
    failing = RouteTable(('headers["missing"] == "x"',), (("ta",),)).router()
    with pytest.raises(RouteError):
        failing(b"{}", {}, None, "in")


def test_key_function_forms() -> None:
    assert is_field_path("id") and is_field_path("payload.customer.id")
    assert not is_field_path("headers.tenant") and not is_field_path("key")
    assert key_function("payload.id") == "payload.id"  # the runtime resolves plain paths
    fn = key_function('payload.id + ":" + topic')
    assert callable(fn)
    assert fn(b'{"id": "x"}', {}, None, "orders") == "x:orders"
    assert key_function("key")(b"{}", {}, "k-1", "t") == "k-1"  # type: ignore[operator]
    assert key_function("key")(b"{}", {}, None, "t") is None  # type: ignore[operator]


def test_app_is_plain_app(files: Files) -> None:
    checked = check_file(files.write(WF.replace("BROKER", "x")), {})
    app = build_app(checked, broker="memory://override")
    assert isinstance(app, App) and app.broker.url.startswith("memory://override")
    assert sorted(app.specs["pick"].produces) == ["audit", "big", "hi", "rest"]
