"""Session-wide fixtures: where the real brokers are, and unique names for test resources.

Broker URLs come from the environment (``scripts/services.sh start`` prints the lines to export;
``scripts/test.sh`` exports them itself):

- ``AGENTFLOW_TEST_NATS_URL``  e.g. ``nats://127.0.0.1:4222``
- ``AGENTFLOW_TEST_KAFKA_URL`` e.g. ``kafka://127.0.0.1:9092``
- ``AGENTFLOW_TEST_REDIS_URL`` e.g. ``redis://127.0.0.1:6379/0``

A test that asks for a broker whose URL is unset or that does not accept a TCP connection is
skipped locally, and fails when ``CI=true``: in CI a broker test never skips.
"""

from __future__ import annotations

import os
import socket
import uuid
from collections.abc import Callable
from urllib.parse import urlsplit

import pytest

_ENV = {
    "nats": "AGENTFLOW_TEST_NATS_URL",
    "kafka": "AGENTFLOW_TEST_KAFKA_URL",
    "redis": "AGENTFLOW_TEST_REDIS_URL",
}
_DEFAULT_PORT = {"nats": 4222, "kafka": 9092, "redis": 6379}


def _in_ci() -> bool:
    return os.environ.get("CI", "").strip().lower() == "true"


def _endpoints(url: str, default_port: int) -> list[tuple[str, int]]:
    """host:port pairs of a URL; Kafka URLs may list several (``kafka://h1:9092,h2:9092``)."""
    netloc = urlsplit(url).netloc.rpartition("@")[2]
    out: list[tuple[str, int]] = []
    for part in filter(None, netloc.split(",")):
        if part.startswith("["):  # [::1]:9092
            host, _, rest = part[1:].partition("]")
            port = rest.lstrip(":")
        else:
            host, sep, port = part.rpartition(":")
            if not sep:
                host, port = part, ""
        out.append((host or "127.0.0.1", int(port) if port else default_port))
    return out


def _reachable(url: str, default_port: int, timeout: float = 1.0) -> bool:
    for host, port in _endpoints(url, default_port):
        try:
            with socket.create_connection((host, port), timeout=timeout):
                return True
        except OSError:
            continue
    return False


def _broker_url(name: str) -> str:
    var = _ENV[name]
    url = os.environ.get(var, "").strip()
    if not url:
        problem = f"{var} is not set"
    elif not _reachable(url, _DEFAULT_PORT[name]):
        problem = f"{var}={url} does not accept connections"
    else:
        return url
    hint = f"start it with: scripts/services.sh start {name} (then export the lines it prints)"
    if _in_ci():
        pytest.fail(f"{name} broker needed in CI but {problem}; {hint}", pytrace=False)
    pytest.skip(f"{name} broker not available ({problem}); {hint}")


@pytest.fixture(scope="session")
def nats_url() -> str:
    """URL of a running nats-server with JetStream."""
    return _broker_url("nats")


@pytest.fixture(scope="session")
def kafka_url() -> str:
    """``kafka://host:port`` of a running Kafka broker (topics are not auto-created)."""
    return _broker_url("kafka")


@pytest.fixture(scope="session")
def redis_url() -> str:
    """URL of a running redis-server (database 0, no persistence)."""
    return _broker_url("redis")


def make_unique_name(prefix: str = "t") -> str:
    """A fresh lowercase name such as ``t1a2b3c4d``: valid as a Kafka topic, NATS stream,
    subject token, consumer group or Redis key prefix."""
    return f"{prefix.lower()}{uuid.uuid4().hex[:8]}"


@pytest.fixture
def unique_name() -> Callable[..., str]:
    """Factory of unique names: ``unique_name()`` -> ``t1a2b3c4d``, ``unique_name("dlq")``."""
    return make_unique_name
