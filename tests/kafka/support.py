"""Helpers for the Kafka tests: URLs with test-friendly knobs, reading topics directly."""

from __future__ import annotations

import asyncio
import time
import uuid
from collections.abc import Callable
from typing import Any

from agentflow.brokers import Delivery, Subscription
from agentflow.brokers.kafka import KafkaBroker


def with_params(url: str, **params: object) -> str:
    """``url`` with extra query parameters (``kafka://h:9092?a=1``)."""
    sep = "&" if "?" in url else "?"
    return url + sep + "&".join(f"{k}={v}" for k, v in params.items())


def fast(url: str, **params: object) -> str:
    """A URL tuned for tests: short sessions and commit interval (broker allows 1 s sessions)."""
    knobs: dict[str, object] = {
        "session_timeout_ms": 3000,
        "heartbeat_interval_ms": 500,
        "commit_interval": "200ms",
    }
    knobs.update(params)
    return with_params(url, **knobs)


def name(prefix: str = "k") -> str:
    """A unique topic or group name."""
    return f"{prefix}{uuid.uuid4().hex[:8]}"


async def connected(url: str) -> KafkaBroker:
    """A connected KafkaBroker."""
    broker = KafkaBroker(url)
    await broker.connect()
    return broker


async def fetch_n(sub: Subscription, n: int, timeout: float = 20.0) -> list[Delivery]:
    """Fetch until ``n`` deliveries arrived (AssertionError after ``timeout``)."""
    got: list[Delivery] = []
    deadline = time.monotonic() + timeout
    while len(got) < n:
        left = deadline - time.monotonic()
        if left <= 0:
            raise AssertionError(f"got {len(got)} of {n} deliveries in {timeout}s")
        got.extend(await sub.fetch(n - len(got), min(left, 1.0)))
    return got


async def quiet(sub: Subscription, seconds: float) -> list[Delivery]:
    """Everything fetched during ``seconds`` (expected: nothing)."""
    got: list[Delivery] = []
    deadline = time.monotonic() + seconds
    while (left := deadline - time.monotonic()) > 0:
        got.extend(await sub.fetch(100, min(left, 0.5)))
    return got


async def read_topic(broker: KafkaBroker, topic: str, timeout: float = 5.0) -> list[Any]:
    """Every record currently in ``topic`` (all partitions), read without a group."""
    from aiokafka import AIOKafkaConsumer, TopicPartition

    consumer = AIOKafkaConsumer(**broker.settings.client_kwargs(), group_id=None)
    await consumer.start()
    try:
        parts = consumer.partitions_for_topic(topic) or set()
        if not parts:
            await consumer._client.force_metadata_update()  # fresh topic
            parts = consumer.partitions_for_topic(topic) or set()
        tps = [TopicPartition(topic, p) for p in sorted(parts)]
        consumer.assign(tps)
        await consumer.seek_to_beginning(*tps)
        ends = await consumer.end_offsets(tps)
        out: list[Any] = []
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            positions = {tp: await consumer.position(tp) for tp in tps}
            if all(positions[tp] >= ends[tp] for tp in tps):
                break
            batch = await consumer.getmany(timeout_ms=500)
            for records in batch.values():
                out.extend(records)
        return out
    finally:
        await consumer.stop()


async def committed(broker: KafkaBroker, group: str) -> dict[tuple[str, int], tuple[int, str]]:
    """The group's committed offsets and metadata, by (topic, partition)."""
    raw = await broker.admin.list_consumer_group_offsets(group)
    return {(tp.topic, tp.partition): (m.offset, m.metadata) for tp, m in raw.items()}


async def committed_one(broker: KafkaBroker, group: str, topic: str) -> tuple[int, str]:
    """The (offset, metadata) the group committed for the only partition of ``topic``."""
    found = [v for (t, _), v in (await committed(broker, group)).items() if t == topic]
    assert len(found) == 1, found
    return found[0]


async def eventually(check: Callable[[], bool], timeout: float = 20.0, what: str = "it") -> None:
    """Wait until ``check()`` holds."""
    deadline = time.monotonic() + timeout
    while not check():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        await asyncio.sleep(0.05)
