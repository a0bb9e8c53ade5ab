"""One Kafka record handed to the runtime, and the per-partition state behind it."""

from __future__ import annotations

import time
from collections import deque
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

from agentflow import _native
from agentflow.brokers.base import Delivery
from agentflow.brokers.kafka_deadlines import Armed, release
from agentflow.brokers.kafka_offsets import PartitionTracker
from agentflow.brokers.kafka_retry import INTERNAL_HEADERS, RETRY_ORIGIN, parse_origin
from agentflow.brokers.kafka_topics import split_retry_topic

if TYPE_CHECKING:
    from agentflow.brokers.kafka_consumer import KafkaSubscription

__all__ = ["KafkaDelivery", "Part", "decode_headers"]


def decode_headers(record: Any) -> dict[str, str]:
    """A record's headers as text (invalid UTF-8 becomes U+FFFD; a later duplicate wins)."""
    return _native.kafka_header_dict(record.headers)


class Part:
    """One assigned partition of a subscription, for the lifetime of that assignment."""

    __slots__ = (
        "base_topic",
        "buffer",
        "current",
        "dirty",
        "id_prefix",
        "live",
        "revoking",
        "tier",
        "tp",
        "tracker",
    )

    def __init__(self, tp: Any) -> None:
        self.tp = tp
        split = split_retry_topic(tp.topic)
        # Retry tiers deliver under the name of the topic they retry.
        self.base_topic: str = split[0] if split else tp.topic
        self.tier = split is not None
        # ``fallback_id`` of this partition's own records, but for the offset.
        self.id_prefix = f"{self.base_topic}:{tp.partition}:"
        # None until the attempt record of the previous owner has been read.
        self.tracker: PartitionTracker | None = None
        self.buffer: deque[Any] = deque()
        # offset -> the delivery currently responsible for it
        self.current: dict[int, KafkaDelivery] = {}
        self.live = True
        self.revoking = False
        self.dirty = False

    def finish(self, d: KafkaDelivery) -> None:
        """``d``'s offset is done: no delivery of it is current, the tracker may move on."""
        d.finished = True
        release(d)
        current = self.current.pop(d.offset, None)
        if current is not None:
            current.finished = True
            release(current)
        if self.tracker is not None and self.tracker.done(d.offset):
            self.dirty = True

    def returned_in_flight(self) -> int:
        """Deliveries the runtime holds that are not finished yet."""
        return sum(1 for d in self.current.values() if d.returned and not d.finished)


_NEVER = float("inf")


class KafkaDelivery(Delivery):
    """A record of a partition (or of a retry tier, shown under its original topic)."""

    __slots__ = (
        "_fallback_id",
        "_origin",
        "_sub",
        "armed",
        "deadline",
        "delivery_count",
        "finished",
        "headers",
        "key",
        "offset",
        "part",
        "payload",
        "raw_headers",
        "record",
        "returned",
        "superseded",
        "topic",
    )

    def __init__(
        self,
        sub: KafkaSubscription,
        part: Part,
        record: Any,
        raw_headers: dict[str, str],
        delivery_count: int,
    ) -> None:
        self._sub = sub
        # The partition state this delivery belongs to (an attribute: read per message).
        self.part = part
        self.record = record
        # Offset of the record in its (possibly retry-tier) partition.
        self.offset: int = record.offset
        self.raw_headers = raw_headers
        self.topic = part.base_topic
        value = record.value
        self.payload = value if value is not None else b""
        if INTERNAL_HEADERS.isdisjoint(raw_headers):  # all but retry-tier copies
            self.headers = dict(raw_headers)
        else:
            self.headers = {k: v for k, v in raw_headers.items() if k not in INTERNAL_HEADERS}
        key = record.key
        self.key = key.decode("utf-8", "replace") if key is not None else None
        self.delivery_count = delivery_count
        origin = parse_origin(raw_headers.get(RETRY_ORIGIN)) if part.tier else None
        if origin is None:
            # Per message (the id of every message without an af-id): from the prefix.
            self._fallback_id = part.id_prefix + str(self.offset)
        else:
            self._fallback_id = f"{origin[0]}:{origin[1]}:{origin[2]}"
        # What a retry-tier copy names as the record it retries (None: this record).
        self._origin = origin
        self.returned = False
        self.finished = False
        self.superseded = False
        self.deadline = _NEVER  # set when the subscription arms it at hand-out
        self.armed: Armed | None = None  # the hand-out entry of its ack deadline

    @property
    def origin(self) -> tuple[str, int, int]:
        """Where the original record lives: (topic, partition, offset)."""
        if self._origin is not None:
            return self._origin
        return (self.part.base_topic, self.record.partition, self.offset)

    @property
    def position(self) -> dict[str, str]:
        """Where the original record lives: topic, partition and offset."""
        topic, partition, offset = self.origin
        return {"topic": topic, "partition": str(partition), "offset": str(offset)}

    @property
    def fallback_id(self) -> str:
        """``<topic>:<partition>:<offset>`` of the original record (stable across retries)."""
        return self._fallback_id

    @property
    def stale(self) -> bool:
        """True once the partition was revoked or the subscription closed."""
        return not self.part.live

    def touch(self) -> None:
        """Restart the ack deadline."""
        ack_wait = self._sub.ack_wait
        self.deadline = time.monotonic() + ack_wait if ack_wait > 0 else float("inf")

    async def ack(self) -> None:
        """Mark the record done; the next commit may move past it."""
        self._sub.finish(self, acked=True)

    @classmethod
    async def ack_many(cls, deliveries: Sequence[Delivery]) -> list[Exception | None]:
        """Ack a batch with one pass of bookkeeping per subscription (these acks never fail)."""
        by_sub: dict[KafkaSubscription, list[KafkaDelivery]] = {}
        for d in deliveries:
            # Only this class's deliveries come here (one subscription's, by contract).
            sub: KafkaSubscription = d._sub  # type: ignore[attr-defined]
            batch = by_sub.get(sub)
            if batch is None:
                batch = by_sub[sub] = []
            batch.append(d)  # type: ignore[arg-type]
        for sub, batch in by_sub.items():
            sub.finish_many(batch)
        return [None] * len(deliveries)

    async def term(self) -> None:
        """Mark the record done without a retry (its dead-letter copy was published)."""
        if not self.finished and not self.stale:
            self._sub.finish(self, acked=False)
            await self._sub.settle(self)

    async def nak(self, delay: float = 0.0) -> None:
        """Publish a delayed copy to the retry tier, then mark the record done."""
        await self._sub.nak(self, delay)

    async def in_progress(self) -> None:
        """Extend the ack deadline (Kafka itself has none: the poll loop keeps us alive)."""
        if not self.finished:
            self.touch()
