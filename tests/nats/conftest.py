"""Fixtures for the NATS tests: a connected broker, unique subjects, private servers."""

from __future__ import annotations

import contextlib
import os
import uuid
from collections.abc import AsyncIterator, Callable, Iterator
from pathlib import Path

import nats
import orjson
import pytest

from agentflow.brokers.nats import NatsBroker
from tests.nats.server import NatsServer

# App names the tests build from the prefix: their KV idempotency buckets are removed too.
_APP_PREFIXES = ("e2e", "bad", "cli", "prod")


@pytest.fixture
async def prefix(request: pytest.FixtureRequest) -> AsyncIterator[str]:
    """A unique first subject token, so every test gets its own stream (deleted afterwards)."""
    value = f"n{uuid.uuid4().hex[:10]}"
    yield value
    url = os.environ.get("AGENTFLOW_TEST_NATS_URL")
    if not url:
        return
    # Keep a long-lived test server tidy: drop this test's streams and buckets.
    with contextlib.suppress(Exception):
        nc = await nats.connect(url, connect_timeout=2, allow_reconnect=False)
        try:
            js = nc.jetstream()
            reply = await nc.request(
                "$JS.API.STREAM.NAMES", orjson.dumps({"subject": f"{value}.>"}), timeout=5
            )
            for name in orjson.loads(reply.data).get("streams") or []:
                await js.delete_stream(name)
            for app in _APP_PREFIXES:
                with contextlib.suppress(Exception):
                    await js.delete_key_value(f"AF_IDEM_{app}{value}")
        finally:
            await nc.close()


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
