"""The example workflows end to end, on the embedded broker and on NATS and Kafka when present."""

from __future__ import annotations

import uuid
from pathlib import Path

import pytest

from agentflow.workflow import check_file
from agentflow.workflow.build import build_app
from agentflow.workflow.commands import drive, read_inputs

ROOT = Path(__file__).resolve().parents[2]
WORKFLOWS = ROOT / "workflows"

# agent -> (received, succeeded, retried, dead_lettered), derived from the sample inputs:
# see the comments in each handler module for why each ticket / reading ends where it does.
EXPECTED = {
    "support_triage": (
        "tickets.new",
        {
            "classify": (10, 8, 0, 2),  # T-1005 spam (rejected), T-1010 invalid payload
            "route": (8, 8, 0, 0),
            "escalate": (8, 3, 4, 1),  # odd ids retry once; region mars exhausts 3 attempts
            "billing": (2, 2, 0, 0),
            "assign": (4, 4, 0, 0),  # enterprise urgent tickets also go to the queue
        },
    ),
    "sensor_anomaly": (
        "sensors.batches",
        {
            "split": (4, 4, 0, 0),
            "score": (14, 14, 0, 0),
            "archive": (14, 14, 0, 0),  # fan-out: every scored reading also archived
            "detect": (14, 14, 0, 0),
            "page": (1, 1, 0, 0),  # z >= 4 goes to both alerts.page and alerts.ticket
            "ticket": (5, 5, 0, 0),
        },
    ),
}


@pytest.fixture(params=["memory", "nats", "kafka"])
def backbone(request: pytest.FixtureRequest) -> tuple[str, str]:
    """(broker URL, topic prefix): real brokers get fresh topics per test."""
    if request.param == "memory":
        return f"memory://examples-{uuid.uuid4().hex[:8]}", ""
    url: str = request.getfixturevalue(f"{request.param}_url")
    return url, f"x{uuid.uuid4().hex[:8]}."


@pytest.mark.parametrize("name", sorted(EXPECTED))
async def test_example_end_to_end(name: str, backbone: tuple[str, str]) -> None:
    url, prefix = backbone
    input_topic, expected = EXPECTED[name]
    checked = check_file(WORKFLOWS / f"{name}.yaml", {})
    assert checked.ok, [d.format() for d in checked.diagnostics]
    assert [d for d in checked.diagnostics] == []  # the examples are warning-free too
    # A per-test in-memory store: the examples use fixed ids, and durable stores (NATS KV, the
    # SQLite default on Kafka) would remember them from an earlier run on the same broker.
    app = build_app(checked, broker=url, store="memory://", topic_prefix=prefix)
    payloads = read_inputs({input_topic: WORKFLOWS / f"{name}.jsonl"})
    await drive(app, payloads, until_idle=True, topic_prefix=prefix)
    got = {
        agent: (s.received, s.succeeded, s.retried, s.dead_lettered)
        for agent, s in app.stats.items()
    }
    assert got == expected
