"""Fixtures for the NATS tests: a connected broker, unique subjects, private servers."""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator, Callable, Iterator
from pathlib import Path

import pytest

from agentflow.brokers.nats import NatsBroker
from tests.nats.server import NatsServer


@pytest.fixture
def prefix() -> str:
    """A unique first subject token, so every test gets its own stream."""
    return f"n{uuid.uuid4().hex[:10]}"


@pytest.fixture
def subject(prefix: str) -> Callable[[str], str]:
    """Unique subjects for one test: ``subject("in")`` -> ``n1a2b....in``."""
    return lambda name: f"{prefix}.{name}"


@pytest.fixture
async def broker(nats_url: str) -> AsyncIterator[NatsBroker]:
    """A connected broker on the shared test server."""
    b = NatsBroker(nats_url)
    await b.connect()
    try:
        yield b
    finally:
        await b.close()


@pytest.fixture
def private_server(nats_url: str, tmp_path: Path) -> Iterator[Callable[..., NatsServer]]:
    """Factory of private nats-servers (config text as argument), stopped after the test.

    Depends on ``nats_url`` so it skips/fails exactly like the shared server does.
    """
    servers: list[NatsServer] = []

    def make(config: str = "", name: str = "srv", jetstream: bool = True) -> NatsServer:
        workdir = tmp_path / f"{name}{len(servers)}"
        workdir.mkdir()
        server = NatsServer(workdir, config, jetstream=jetstream)
        server.start()
        servers.append(server)
        return server

    yield make
    for server in servers:
        server.stop()
