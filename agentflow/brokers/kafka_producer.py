"""The idempotent producer behind KafkaBroker.publish and the retry-tier copies.

``enable_idempotence=True`` (hence ``acks=all``): a message counts as published only when all
in-sync replicas have it, and the producer's own retries never write it twice. A batch is
sent in one go and then awaited as a whole, so publishing N messages costs about one round
trip, not N. Keys pick the partition exactly as the Java client does (murmur2).
"""

from __future__ import annotations

import asyncio
import random
import time
from collections.abc import Sequence
from typing import Any

from agentflow import _native
from agentflow.brokers.base import OutMessage, PublishError
from agentflow.brokers.kafka_config import KafkaSettings

__all__ = ["Publisher", "RecentIds", "java_partitioner"]


def java_partitioner(key: bytes | None, all_partitions: list[int], available: list[int]) -> int:
    """aiokafka partitioner: murmur2 for keys (native), sticky-free random spread otherwise."""
    if key is None:
        return random.choice(available or all_partitions)
    return all_partitions[_native.murmur2_partition(key, len(all_partitions))]


# Ids seen in the last ``window`` seconds (at most ``max_size``); lookup never records, an add
# restarts the window. Native: the producer checks every output of every flush against it.
RecentIds = _native.RecentIds


def _record_size(value: bytes, key: bytes | None, headers: list[tuple[str, bytes]]) -> int:
    from aiokafka.record.default_records import DefaultRecordBatchBuilder

    size: int = DefaultRecordBatchBuilder.estimate_size_in_bytes(key, value, headers)
    return size


class Publisher:
    """An idempotent aiokafka producer with batch publish, size checks and a dedup window."""

    def __init__(self, settings: KafkaSettings) -> None:
        self.settings = settings
        self.producer: Any = None
        self.recent = RecentIds(settings.dedup_window)

    async def start(self) -> None:
        """Connect the producer (bootstrap + metadata)."""
        from aiokafka import AIOKafkaProducer

        s = self.settings
        self.producer = AIOKafkaProducer(
            **s.client_kwargs(),
            enable_idempotence=True,
            acks="all",
            max_request_size=s.max_request_size,
            linger_ms=s.linger_ms,
            max_batch_size=min(s.max_batch_size, s.max_request_size),
            partitioner=java_partitioner,
        )
        try:
            await self.producer.start()
        except BaseException:
            await self.stop()
            raise

    async def stop(self) -> None:
        """Flush and close."""
        producer, self.producer = self.producer, None
        if producer is not None:
            await producer.stop()

    def _pairs(
        self, topic: str, value: bytes, key: bytes | None, headers: dict[str, str]
    ) -> list[tuple[str, bytes]]:
        """A record's Kafka header pairs, once it is known to fit ``max_request_size``."""
        pairs, header_size = _native.kafka_headers(headers)
        # A cheap upper bound of _record_size: 128 covers the batch header and the varints.
        bound = 128 + len(value) + (len(key) if key is not None else 0) + header_size
        if bound > self.settings.max_request_size:
            self._check_size(topic, _record_size(value, key, pairs))
        return pairs

    def _check_size(self, topic: str, size: int) -> None:
        if size > self.settings.max_request_size:
            raise PublishError(
                f"message for Kafka topic {topic!r} is {size} bytes, above max_request_size="
                f"{self.settings.max_request_size} (raise it with ?max_request_size=, and the "
                "topic's max.message.bytes on the cluster)"
            )

    async def publish(self, messages: Sequence[OutMessage]) -> None:
        """Send every message not published within the dedup window; wait for all acks."""
        if self.producer is None:
            raise PublishError("Kafka broker is not connected (call connect() first)")
        if len(messages) == 1:  # one output alone (low rates): no batch of batches
            msg = messages[0]
            dedup = msg.dedup_id or msg.headers.get("af-id")
            if dedup and self.recent.seen(dedup, time.monotonic()):
                return  # accepted already inside the window: drop silently
            key = msg.key.encode("utf-8") if msg.key is not None else None
            headers = self._pairs(msg.topic, msg.payload, key, msg.headers)
            await self._wait_one(await self._send(msg.topic, msg.payload, key, headers), msg.topic)
            if dedup:
                self.recent.add(dedup)
        elif messages:
            await self._send_batches(messages)

    async def _send_batches(self, messages: Sequence[OutMessage]) -> None:
        """Send records as one record batch per partition; wait for every batch's ack.

        The producer's per-record ``send`` makes a future and a metadata object for each
        record; a whole flush goes out in a few natively built batches instead
        (``_native.kafka_flush``: dedup window, key, partition and record in one pass), each
        answered once. Partitions are picked as ``send`` would (murmur2 of the key; keyless
        records of one flush stay together on one partition, as Kafka's sticky partitioner
        keeps them). Every batch is built, and every record's size checked, before the first
        is sent.
        """
        from aiokafka.errors import KafkaError

        s = self.settings
        targets = {topic: await self._partitions(topic) for topic in {m.topic for m in messages}}
        built, accepted, oversize = _native.kafka_flush(
            messages,
            self.recent,
            time.monotonic(),
            targets,
            min(s.max_batch_size, s.max_request_size),
            time.time_ns() // 1_000_000,
            s.max_request_size,
        )
        if oversize is not None:
            self._check_size(*oversize)
        producer = self.producer
        futures: list[asyncio.Future[Any]] = []
        topics: list[str] = []
        try:
            for topic, part, records in built:
                records.close()  # so the producer's own sends never append to it
                futures.append(await producer.send_batch(records, topic, partition=part))
                topics.append(topic)
        except KafkaError as exc:
            raise PublishError(f"Kafka refused a batch of messages: {exc}") from exc
        await self._wait(futures, topics)
        self.recent.add_fingerprints(accepted)

    async def _partitions(self, topic: str) -> tuple[list[int], int]:
        """The topic's partitions (from the producer's metadata) and one for keyless records."""
        from aiokafka.errors import KafkaError

        try:
            known = sorted(await self.producer.partitions_for(topic))
        except KafkaError as exc:
            raise PublishError(f"Kafka refused a message for {topic!r}: {exc}") from exc
        available = self.producer.client.cluster.available_partitions_for_topic(topic)
        return known, random.choice(sorted(available) if available else known)

    async def send_copy(
        self, topic: str, value: bytes, key: bytes | None, headers: dict[str, str]
    ) -> None:
        """Publish one raw record (a retry-tier copy) and wait for its ack."""
        if self.producer is None:
            raise PublishError("Kafka broker is not connected")
        pairs = self._pairs(topic, value, key, headers)
        await self._wait_one(await self._send(topic, value, key, pairs), topic)

    async def _send(
        self, topic: str, value: bytes, key: bytes | None, headers: list[tuple[str, bytes]]
    ) -> asyncio.Future[Any]:
        from aiokafka.errors import KafkaError

        try:
            fut: asyncio.Future[Any] = await self.producer.send(
                topic, value, key=key, headers=headers
            )
        except KafkaError as exc:
            raise PublishError(f"Kafka refused a message for {topic!r}: {exc}") from exc
        return fut

    async def _wait_one(self, fut: asyncio.Future[Any], topic: str) -> None:
        from aiokafka.errors import KafkaError

        try:
            await fut
        except KafkaError as exc:
            raise PublishError(f"Kafka did not accept a message for {topic!r}: {exc}") from exc

    async def _wait(self, futures: list[asyncio.Future[Any]], topics: list[str]) -> None:
        from aiokafka.errors import KafkaError

        results = await asyncio.gather(*futures, return_exceptions=True)
        for topic, result in zip(topics, results, strict=True):
            if isinstance(result, KafkaError):
                raise PublishError(f"Kafka did not accept a message for {topic!r}: {result}")
            if isinstance(result, BaseException):
                raise result
