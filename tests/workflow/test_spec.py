from __future__ import annotations

import json
from pathlib import Path

import pytest

from agentflow.workflow import spec as s
from agentflow.workflow.commands import schema
from agentflow.workflow.loader import load

ROOT = Path(__file__).resolve().parents[2]
EXAMPLES = sorted((ROOT / "workflows").glob("*.yaml"))


@pytest.mark.parametrize("path", EXAMPLES, ids=lambda p: p.name)
def test_examples_parse_into_models(path: Path) -> None:
    loaded = load(path.read_text(), str(path), {})
    assert loaded.diagnostics == []
    wf = s.Workflow.model_validate(loaded.data)
    assert wf.api_version == s.API_VERSION and wf.kind == s.KIND
    assert wf.spec.broker == "memory://"  # ${AGENTFLOW_BROKER:-memory://} with the var unset
    assert wf.spec.agents


def test_design_doc_example_parses() -> None:
    text = """
apiVersion: agentflow.dev/v1
kind: Workflow
metadata: {name: support-triage}
spec:
  broker: ${AGENTFLOW_BROKER:-memory://}
  defaults:
    retry: {max_attempts: 5, backoff: {initial: 500ms, multiplier: 2, max: 30s, jitter: 0.2}}
    timeout: 30s
  agents:
    classify:
      uses: support_agents:classify
      consumes: tickets.new
      produces: tickets.classified
      idempotency: {key: payload.id, ttl: 24h}
      concurrency: 8
    route:
      uses: support_agents:route
      consumes: tickets.classified
      routes:
        - when: payload.priority == "high"
          to: tickets.escalated
        - to: tickets.queue
"""
    loaded = load(text, "x.yaml", {"AGENTFLOW_BROKER": "nats://127.0.0.1:4222"})
    wf = s.Workflow.model_validate(loaded.data)
    assert wf.spec.broker == "nats://127.0.0.1:4222"
    retry = wf.spec.defaults.retry
    assert isinstance(retry, s.RetrySpec) and isinstance(retry.backoff, s.ExponentialBackoff)
    assert (retry.backoff.initial, retry.backoff.max, retry.backoff.jitter) == (0.5, 30.0, 0.2)
    assert wf.spec.defaults.timeout == 30.0
    classify = wf.spec.agents["classify"]
    assert classify.produces == ["tickets.classified"]  # one topic becomes a list
    assert classify.idempotency == s.IdempotencySpec(key="payload.id", ttl=86400.0)
    routes = wf.spec.agents["route"].routes
    assert routes is not None
    assert [(r.when, r.to) for r in routes] == [
        ('payload.priority == "high"', ["tickets.escalated"]),
        (None, ["tickets.queue"]),
    ]


def test_models_forbid_unknown_keys() -> None:
    with pytest.raises(ValueError, match="Extra inputs are not permitted"):
        s.Route.model_validate({"to": "x", "whenn": "true"})


def test_committed_schema_is_current() -> None:
    committed = (ROOT / "schema" / "workflow.schema.json").read_text()
    assert committed == schema(), "regenerate: agentflow schema > schema/workflow.schema.json"


def test_schema_shape() -> None:
    doc = json.loads(schema())
    assert doc["$schema"].endswith("2020-12/schema")
    assert doc["additionalProperties"] is False
    assert set(doc["required"]) == {"apiVersion", "kind", "metadata", "spec"}
    agent = doc["$defs"]["Agent"]
    assert agent["additionalProperties"] is False
    timeout = agent["properties"]["timeout"]["anyOf"][0]
    assert {"type": "number", "minimum": 0} in timeout["anyOf"]
