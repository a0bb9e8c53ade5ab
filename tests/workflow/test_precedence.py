"""YAML per-agent > YAML defaults > decorator arguments > built-in defaults."""

from __future__ import annotations

import pytest

from agentflow.agent import DEFAULT_CONCURRENCY, DEFAULT_IDEMPOTENCY_TTL, DEFAULT_TIMEOUT, AgentSpec
from agentflow.retry import RetryPolicy
from agentflow.workflow import check_file
from agentflow.workflow.build import build_app
from tests.workflow.conftest import Files

HEAD = """
apiVersion: agentflow.dev/v1
kind: Workflow
metadata: {name: prec}
spec:
  broker: memory://prec
"""


def _specs(files: Files, body: str) -> dict[str, AgentSpec]:
    checked = check_file(files.write(HEAD + body), {})
    assert checked.ok, [d.format() for d in checked.diagnostics]
    return build_app(checked).specs


def test_builtin_defaults_for_a_plain_function(files: Files) -> None:
    spec = _specs(
        files, "  agents:\n    p: {uses: '{m}:passthrough', consumes: in, produces: out}\n"
    )["p"]
    assert (spec.name, spec.consumes, spec.produces) == ("p", "in", ["out"])
    assert spec.concurrency == DEFAULT_CONCURRENCY
    assert spec.timeout == DEFAULT_TIMEOUT
    assert spec.retry == RetryPolicy()
    assert spec.idempotency_key is None and not spec.idempotent
    assert spec.idempotency_ttl == DEFAULT_IDEMPOTENCY_TTL
    assert spec.dlq is None and spec.route is None


def test_decorator_arguments_beat_builtin_defaults(files: Files) -> None:
    spec = _specs(files, "  agents:\n    d: {uses: '{m}:decorated'}\n")["d"]
    assert spec.name == "d"  # the YAML key names the agent
    assert (spec.consumes, spec.produces, spec.dlq) == ("dec.in", ["dec.out"], "dec.dead")
    assert spec.retry.max_attempts == 7 and tuple(spec.retry.backoff) == (1.0,)
    assert (spec.concurrency, spec.timeout, spec.idempotency_key) == (3, 3.0, "id")


def test_yaml_defaults_beat_decorator_arguments(files: Files) -> None:
    spec = _specs(
        files,
        """
  defaults:
    retry: {max_attempts: 2, backoff: 250ms}
    timeout: 20s
    concurrency: 5
    idempotency: {ttl: 1h}
  agents:
    d: {uses: '{m}:decorated'}
""",
    )["d"]
    assert spec.retry.max_attempts == 2 and tuple(spec.retry.backoff) == (0.25,)
    assert (spec.timeout, spec.concurrency, spec.idempotency_ttl) == (20.0, 5, 3600.0)
    # Not set anywhere in YAML: still the decorator's.
    assert (spec.consumes, spec.produces, spec.dlq, spec.idempotency_key) == (
        "dec.in",
        ["dec.out"],
        "dec.dead",
        "id",
    )


def test_agent_keys_beat_yaml_defaults(files: Files) -> None:
    specs = _specs(
        files,
        """
  defaults:
    retry: {max_attempts: 2}
    timeout: 20s
    concurrency: 5
    idempotency: {key: payload.id, ttl: 1h}
  policies:
    retry:
      patient:
        max_attempts: 10
        backoff: {initial: 100ms, multiplier: 3, max: 5s, jitter: 0}
  agents:
    d:
      uses: '{m}:decorated'
      consumes: other.in
      produces: [a, b]
      retry: patient
      timeout: 1.5
      concurrency: 2
      idempotency: {key: customer.id}
      dlq: d.dead
      group: grp
    p:
      uses: '{m}:passthrough'
      consumes: in
""",
    )
    d, p = specs["d"], specs["p"]
    assert (d.consumes, d.produces, d.dlq, d.group) == ("other.in", ["a", "b"], "d.dead", "grp")
    assert d.retry == RetryPolicy.exponential(
        initial=0.1, multiplier=3, max_delay=5.0, jitter=0.0, max_attempts=10
    )
    assert (d.timeout, d.concurrency, d.idempotency_key, d.idempotency_ttl) == (
        1.5,
        2,
        "customer.id",
        3600.0,  # ttl merged field by field from defaults
    )
    # The plain function takes every default from spec.defaults.
    assert (p.timeout, p.concurrency, p.retry.max_attempts) == (20.0, 5, 2)
    assert (p.idempotency_key, p.idempotency_ttl) == ("payload.id", 3600.0)


def test_idempotency_block_without_key_dedups_by_message_id(files: Files) -> None:
    specs = _specs(
        files,
        """
  policies:
    idempotency:
      daily: {ttl: 24h}
  agents:
    p: {uses: '{m}:passthrough', consumes: in, idempotency: daily}
    q: {uses: '{m}:passthrough', consumes: in, idempotency: {}}
    d: {uses: '{m}:decorated', idempotency: {ttl: 2m}}
""",
    )
    assert specs["p"].idempotent and specs["p"].idempotency_key is None
    assert specs["p"].idempotency_ttl == 86400.0
    assert specs["q"].idempotent
    # The decorator's key is kept: the YAML block only sets the ttl.
    assert specs["d"].idempotency_key == "id" and not specs["d"].idempotent
    assert specs["d"].idempotency_ttl == 120.0


@pytest.mark.parametrize(
    ("backoff", "expected"),
    [
        ("[1s, 2s, 5s]", RetryPolicy(max_attempts=4, backoff=[1, 2, 5])),
        ("500ms", RetryPolicy(max_attempts=4, backoff=[0.5])),
        ("null", RetryPolicy(max_attempts=4)),
    ],
)
def test_backoff_forms(files: Files, backoff: str, expected: RetryPolicy) -> None:
    body = (
        "  agents:\n    p: {uses: '{m}:passthrough', consumes: in, "
        f"retry: {{max_attempts: 4, backoff: {backoff}}}}}\n"
    )
    assert _specs(files, body)["p"].retry == expected
