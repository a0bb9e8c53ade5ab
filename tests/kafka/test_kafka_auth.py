"""SASL PLAIN and SCRAM against a private Kafka broker with a SASL listener."""

from __future__ import annotations

import time
from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from agentflow.brokers import BrokerError, OutMessage
from agentflow.brokers.kafka import KafkaBroker
from tests.kafka.harness import PrivateKafka
from tests.kafka.support import fast, fetch_n, name

pytestmark = pytest.mark.kafka


@pytest.fixture
async def sasl_kafka(tmp_path: Path) -> AsyncIterator[PrivateKafka]:
    kafka = PrivateKafka(tmp_path, sasl=True)
    await kafka.start()
    try:
        yield kafka
    finally:
        kafka.stop()


async def round_trip(url: str) -> None:
    broker = KafkaBroker(url)
    await broker.connect()
    topic = name("auth")
    try:
        await broker.ensure_topics([topic])
        await broker.publish([OutMessage(topic, b"hi", {"af-id": "A1"}, "k")])
        sub = await broker.subscribe(topic, name("g"), ack_wait=30, max_in_flight=10, max_deliver=5)
        got = await fetch_n(sub, 1, timeout=30)
        assert got[0].payload == b"hi"
        await got[0].ack()
        await sub.close()
    finally:
        await broker.close()


async def test_sasl_plain_and_scram_and_a_wrong_password(
    sasl_kafka: PrivateKafka, monkeypatch: pytest.MonkeyPatch
) -> None:
    host = f"127.0.0.1:{sasl_kafka.sasl_port}"
    # PLAIN, credentials in the URL.
    await round_trip(fast(f"kafka://alice:alice-secret@{host}"))
    # SCRAM-SHA-256, credentials from the environment.
    monkeypatch.setenv("AGENTFLOW_KAFKA_SASL_USERNAME", "bob")
    monkeypatch.setenv("AGENTFLOW_KAFKA_SASL_PASSWORD", "bob-secret")
    await round_trip(fast(f"kafka://{host}", sasl_mechanism="SCRAM-SHA-256"))
    monkeypatch.delenv("AGENTFLOW_KAFKA_SASL_USERNAME")
    monkeypatch.delenv("AGENTFLOW_KAFKA_SASL_PASSWORD")
    # A wrong password: a clear error naming the URL, without the password, in bounded time.
    broker = KafkaBroker(f"kafka://alice:wrong-pass@{host}?connect_timeout=10s")
    t0 = time.monotonic()
    with pytest.raises(BrokerError) as err:
        await broker.connect()
    assert time.monotonic() - t0 < 12
    assert host in str(err.value) and "wrong-pass" not in str(err.value)
    # No credentials at all on a SASL listener: refused, too.
    with pytest.raises(BrokerError):
        await KafkaBroker(f"kafka://{host}?connect_timeout=5s").connect()
