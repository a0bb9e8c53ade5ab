"""The conformance suite's only broker-specific part: which broker URL a test runs against.

Every test in this directory takes ``broker_url`` and runs once per backbone. Adding a
backbone means adding a parameter here; the tests never change.
"""

from __future__ import annotations

import uuid
from collections.abc import Callable

import pytest

BACKBONES = ["memory", "nats", "kafka"]


@pytest.fixture(params=BACKBONES)
def broker_url(request: pytest.FixtureRequest) -> str:
    """A broker URL per backbone; memory brokers are isolated by a unique name."""
    kind = request.param
    if kind == "memory":
        return f"memory://conf-{uuid.uuid4().hex[:8]}"
    url: str = request.getfixturevalue(f"{kind}_url")
    return url


@pytest.fixture
def topic() -> Callable[[str], str]:
    """Unique topic names for one test: ``topic("in")`` -> ``c1a2b3c4d.in``."""
    prefix = f"c{uuid.uuid4().hex[:8]}"
    return lambda name: f"{prefix}.{name}"
