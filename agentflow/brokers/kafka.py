"""Apache Kafka backbone behind ``kafka://host:port[,host:port]`` (aiokafka).

The mapping onto the broker protocol (docs/kafka.md has the full story):

- Topics, their retry tiers ``<topic>.retry.<n>`` and ``<topic>.dlq`` are created explicitly
  (configurable partitions, replication and topic configs); broker auto-creation is never used.
- ``publish``: an idempotent producer (``acks=all``); the key picks the partition (murmur2, as
  the Java client); a batch is sent at once and awaited as a whole; an oversized message
  raises PublishError naming topic and size before anything of the batch is sent. Repeats of
  a dedup id inside ``dedup_window`` are dropped by this producer, and a group skips a message
  id it acknowledged within the window (consumer-side dedup for producers that died).
- ``subscribe``: one consumer group per agent, auto-commit off, contiguous commits with a
  crash-loop attempt record, retry tiers consumed by the same member (kafka_consumer).
- Wildcards (``tickets.*``, ``tickets.>``) subscribe by regex and never match companions.
- ``browse``/``remove``/``purge`` serve ``agentflow dlq`` (kafka_dlq).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import re
from collections.abc import Sequence
from typing import Any

from agentflow.brokers.base import (
    Broker,
    BrokerError,
    OutMessage,
    PublishError,
    StoredMessage,
    Subscription,
)
from agentflow.brokers.kafka_config import KafkaSettings, parse_kafka_url, redact
from agentflow.brokers.kafka_consumer import KafkaSubscription
from agentflow.brokers.kafka_delivery import KafkaDelivery
from agentflow.brokers.kafka_dlq import browse as _browse
from agentflow.brokers.kafka_dlq import purge as _purge
from agentflow.brokers.kafka_dlq import remove as _remove
from agentflow.brokers.kafka_producer import Publisher
from agentflow.brokers.kafka_topics import (
    TopicAdmin,
    companions,
    dlq_topic,
    is_companion,
    is_wildcard,
    pattern_regex,
    retry_topic,
    split_retry_topic,
    validate_topic,
)

log = logging.getLogger("agentflow.kafka")

__all__ = ["KafkaBroker", "KafkaDelivery", "KafkaSubscription"]


class KafkaBroker(Broker):
    """A Kafka cluster reached through aiokafka."""

    coalesce_publishes = True  # each flush is a produce request, its acks a commit

    def __init__(self, url: str) -> None:
        self.url = url
        self.settings: KafkaSettings = parse_kafka_url(url)
        self.publisher = Publisher(self.settings)
        self.admin: Any = None
        self._topics: TopicAdmin | None = None
        self._subs: set[KafkaSubscription] = set()
        self._members: dict[str, int] = {}

    # -- connection --------------------------------------------------------------------------
    async def connect(self) -> None:
        """Bootstrap the admin client and the producer; BrokerError naming the URL on failure."""
        if self.admin is not None:
            return
        try:
            await asyncio.wait_for(self._connect(), self.settings.connect_timeout)
        except Exception as exc:  # aiokafka raises its own errors, OSError and timeouts
            await self._disconnect()
            if isinstance(exc, TimeoutError):
                why = f"no answer within {self.settings.connect_timeout:g}s"
            else:
                why = str(exc) or type(exc).__name__
            raise BrokerError(f"cannot connect to Kafka at {redact(self.url)}: {why}") from None

    async def _connect(self) -> None:
        from aiokafka.admin import AIOKafkaAdminClient

        admin = AIOKafkaAdminClient(**self.settings.client_kwargs())
        self.admin = admin
        await admin.start()
        # bootstrap() alone does not prove the cluster answers: ask it something.
        await admin.describe_cluster()
        await self.publisher.start()
        s = self.settings
        self._topics = TopicAdmin(
            admin, partitions=s.partitions, replication=s.replication, configs=s.topic_configs
        )

    async def _disconnect(self) -> None:
        with contextlib.suppress(Exception):
            await self.publisher.stop()
        admin, self.admin = self.admin, None
        self._topics = None
        if admin is not None:
            with contextlib.suppress(Exception):
                await admin.close()

    async def close(self) -> None:
        """Close every subscription, flush the producer, close the admin client."""
        for sub in list(self._subs):
            with contextlib.suppress(Exception):
                await sub.close()
        await self._disconnect()

    def forget(self, sub: KafkaSubscription) -> None:
        """Called by a subscription that closed."""
        self._subs.discard(sub)

    def _require(self) -> TopicAdmin:
        if self._topics is None:
            raise BrokerError(f"Kafka broker {redact(self.url)} is not connected")
        return self._topics

    # -- topics ------------------------------------------------------------------------------
    async def ensure_topics(self, topics: Sequence[str]) -> None:
        """Create the topics with their retry tiers and DLQ (wildcards: at subscribe time)."""
        names: list[str] = []
        for topic in topics:
            if is_wildcard(topic):
                continue
            validate_topic(topic)
            names.append(topic)
            names.extend(companions(topic, len(self.settings.retry_delays)))
        await self.ensure_known(names)

    async def ensure_known(self, names: Sequence[str]) -> list[str]:
        """Create whichever of ``names`` do not exist yet (no companions); return those."""
        admin = self._require()
        if all(n in admin.known for n in names):
            return []
        from aiokafka.errors import KafkaError

        try:
            created = await admin.ensure(names)
        except KafkaError as exc:
            raise BrokerError(f"cannot create Kafka topics {list(names)}: {exc}") from exc
        if created:
            for sub in self._subs:
                sub.poke()  # a wildcard of ours may match a new topic: no need to wait
        return created

    def companions_of(self, topic: str) -> list[str]:
        """The retry tiers of ``topic`` and, unless it is a companion itself, its DLQ."""
        return [*self._tiers(topic), *([] if is_companion(topic) else [dlq_topic(topic)])]

    def _tiers(self, topic: str) -> list[str]:
        return [retry_topic(topic, n) for n in range(1, len(self.settings.retry_delays) + 1)]

    # -- producing ---------------------------------------------------------------------------
    async def publish(self, messages: Sequence[OutMessage]) -> None:
        """Publish and return once every message is acknowledged by all in-sync replicas."""
        if not messages:
            return
        admin = self._topics
        if admin is not None and len(messages) == 1 and messages[0].topic in admin.known:
            # The common case (one handler output to a topic seen before): a topic the cluster
            # has is a legal name, so neither validation nor creation is needed.
            await self.publisher.publish(messages)
            return
        topics = list({m.topic: None for m in messages})
        for topic in topics:
            try:
                validate_topic(topic)
            except BrokerError as exc:
                raise PublishError(str(exc)) from None
        try:
            await self.ensure_known(topics)
        except BrokerError as exc:
            raise PublishError(str(exc)) from exc
        await self.publisher.publish(messages)

    # -- consuming ---------------------------------------------------------------------------
    async def subscribe(
        self,
        pattern: str,
        group: str,
        *,
        ack_wait: float,
        max_in_flight: int,
        max_deliver: int,
    ) -> Subscription:
        """Join ``group`` on the topics matching ``pattern`` and on their retry tiers."""
        from aiokafka import AIOKafkaConsumer
        from aiokafka.errors import KafkaError

        self._require()
        if is_wildcard(pattern):
            regex = pattern_regex(pattern)
            matcher = re.compile(regex)
            existing = await self.admin.list_topics()
            bases = [t for t in existing if matcher.match(t) and split_retry_topic(t) is None]
            await self.ensure_known([n for t in bases for n in self.companions_of(t)])
        else:
            validate_topic(pattern)
            await self.ensure_known([pattern, *self.companions_of(pattern)])
        s = self.settings
        consumer = AIOKafkaConsumer(
            **s.client_kwargs(),
            group_id=group,
            group_instance_id=self._instance_id(group),
            enable_auto_commit=False,
            auto_offset_reset=s.auto_offset_reset,
            session_timeout_ms=s.session_timeout_ms,
            heartbeat_interval_ms=s.heartbeat_interval_ms,
            max_poll_interval_ms=s.max_poll_interval_ms,
            # aiokafka defaults this to the session timeout: the group would drop a member
            # still draining its revoked partitions. Give the drain room, as Java does.
            rebalance_timeout_ms=max(s.max_poll_interval_ms, int(s.drain_timeout * 1000) + 5000),
            fetch_max_wait_ms=s.fetch_max_wait_ms,
            metadata_max_age_ms=s.metadata_max_age_ms,
        )
        sub = KafkaSubscription(
            self,
            consumer,
            group,
            ack_wait=ack_wait,
            max_in_flight=max_in_flight,
            max_deliver=max_deliver,
        )
        sub.wildcard = is_wildcard(pattern)
        if is_wildcard(pattern):
            consumer.subscribe(pattern=pattern_regex(pattern), listener=sub.listener())
        else:
            consumer.subscribe(topics=[pattern, *self._tiers(pattern)], listener=sub.listener())
        try:
            await consumer.start()
        except KafkaError as exc:
            with contextlib.suppress(Exception):
                await consumer.stop()
            raise BrokerError(f"cannot join group {group!r} on {redact(self.url)}: {exc}") from exc
        sub.start()
        self._subs.add(sub)
        return sub

    def _instance_id(self, group: str) -> str | None:
        """Static membership id (``group_instance_id`` setting) unique per group in this process."""
        base = self.settings.group_instance_id
        if base is None:
            return None
        n = self._members.get(group, 0)
        self._members[group] = n + 1
        return base if n == 0 else f"{base}-{n}"

    # -- dead letters ------------------------------------------------------------------------
    async def browse(self, topic: str, limit: int = 100) -> list[StoredMessage]:
        """Messages of ``topic`` the DLQ tool has not removed yet (group agentflow-dlq-cli)."""
        self._require()
        return await _browse(self.settings, self.admin, topic, limit)

    async def remove(self, topic: str, messages: Sequence[StoredMessage]) -> None:
        """Acknowledge ``messages`` for the DLQ tool (Kafka cannot delete single records)."""
        self._require()
        await _remove(self.settings, self.admin, topic, messages)

    async def purge(self, topic: str) -> int:
        """Delete the records of ``topic`` up to its end; return how many were listed."""
        self._require()
        return await _purge(self.settings, self.admin, topic)
