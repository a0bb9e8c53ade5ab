"""The broker protocol: the only surface the runtime uses to talk to a message backbone.

Every backbone (``memory``, ``nats``, ``kafka``) implements the same three types:

- :class:`Broker` — connect, declare topics, publish durably, open a group subscription.
- :class:`Subscription` — fetch batches of deliveries for one consumer group.
- :class:`Delivery` — one received message with ack / nak(delay) / term / in-progress.

Semantics every implementation must give (the conformance suite checks them):

- ``publish`` returns only after the broker durably accepted *every* message; a message whose
  ``dedup_id`` was already accepted inside the broker's dedup window is dropped silently.
- Inside one group, each message goes to one subscriber (competing consumers); every group
  sees every message of the topics it subscribes to.
- A delivery neither acked, nak'ed nor termed within ``ack_wait`` (extended by
  ``in_progress``) is redelivered and its ``delivery_count`` grows by one.
- ``nak(delay)`` redelivers after ``delay`` seconds with ``delivery_count + 1``.
- ``term`` ends the message for the group without redelivery (used after a dead-letter copy
  was published).
- Closing a subscription hands back un-acked deliveries for redelivery.
"""

from __future__ import annotations

import abc
from collections.abc import Sequence
from dataclasses import dataclass, field


class BrokerError(Exception):
    """A backbone failed (unreachable, refused a publish, bad URL, ...)."""


class PublishError(BrokerError):
    """A publish was refused by the broker (too large, no stream, timeout)."""


@dataclass(slots=True)
class OutMessage:
    """A message to publish."""

    topic: str
    payload: bytes
    headers: dict[str, str]
    key: str | None = None
    # Id the broker dedups on (NATS ``Nats-Msg-Id``); defaults to the ``af-id`` header.
    dedup_id: str | None = None

    @property
    def message_id(self) -> str:
        """The ``af-id`` of this message."""
        return self.headers.get("af-id", "")


@dataclass(slots=True)
class StoredMessage:
    """A message read without consuming it (DLQ browsing)."""

    topic: str
    payload: bytes
    headers: dict[str, str]
    key: str | None
    position: dict[str, str] = field(default_factory=dict)
    timestamp_ms: int = 0


class Delivery(abc.ABC):
    """One delivery of a message to a subscriber."""

    # No instance dict here: a broker's delivery class may use __slots__ (one per message).
    __slots__ = ()

    topic: str
    payload: bytes
    headers: dict[str, str]
    key: str | None
    # 1-based count of deliveries of this message to this group, as the broker knows it.
    delivery_count: int

    @property
    @abc.abstractmethod
    def position(self) -> dict[str, str]:
        """Broker position, e.g. ``{"stream": "S", "seq": "7"}`` or partition/offset."""

    @property
    @abc.abstractmethod
    def fallback_id(self) -> str:
        """A stable id from the broker position, for messages that carry no ``af-id``."""

    @abc.abstractmethod
    async def ack(self) -> None:
        """Mark the message done for this group."""

    @classmethod
    async def ack_many(cls, deliveries: Sequence[Delivery]) -> list[Exception | None]:
        """Ack deliveries of one subscription; per delivery, the error of its ack or None.

        A broker whose ack is bookkeeping (Kafka) overrides this to do it once per batch.
        """
        errors: list[Exception | None] = []
        for d in deliveries:
            try:
                await d.ack()
            except Exception as exc:
                errors.append(exc)
            else:
                errors.append(None)
        return errors

    @abc.abstractmethod
    async def nak(self, delay: float = 0.0) -> None:
        """Redeliver the message after ``delay`` seconds."""

    @abc.abstractmethod
    async def term(self) -> None:
        """Stop delivering this message to this group (it was dead-lettered)."""

    @abc.abstractmethod
    async def in_progress(self) -> None:
        """Extend the ack deadline: the handler is still working."""


class Subscription(abc.ABC):
    """A consumer-group subscription that hands out batches of deliveries."""

    @abc.abstractmethod
    async def fetch(self, max_messages: int, timeout: float) -> list[Delivery]:
        """Return up to ``max_messages`` deliveries, waiting at most ``timeout`` seconds."""

    @abc.abstractmethod
    async def close(self) -> None:
        """Stop fetching and hand back un-acked deliveries."""


class Broker(abc.ABC):
    """A message backbone."""

    url: str
    # Whether finished calls' outputs should wait briefly for the calls about to finish, so
    # they share one publish: worth it where every publish round costs its own request and
    # an offset commit (Kafka); where publishes and acks are pipelined per message (NATS),
    # overlapping a publish with the next claim wins instead.
    coalesce_publishes: bool = False

    @abc.abstractmethod
    async def connect(self) -> None:
        """Open connections; raises :class:`BrokerError` naming the URL when unreachable."""

    @abc.abstractmethod
    async def close(self) -> None:
        """Flush and close connections."""

    @abc.abstractmethod
    async def ensure_topics(self, topics: Sequence[str]) -> None:
        """Make sure the topics (and their retry/DLQ companions where needed) exist."""

    @abc.abstractmethod
    async def publish(self, messages: Sequence[OutMessage]) -> None:
        """Publish and return once every message is durably accepted."""

    @abc.abstractmethod
    async def subscribe(
        self,
        pattern: str,
        group: str,
        *,
        ack_wait: float,
        max_in_flight: int,
        max_deliver: int,
    ) -> Subscription:
        """Subscribe ``group`` to topics matching ``pattern`` (``*`` one token, ``>`` the rest)."""

    # Dead-letter operations used by ``agentflow dlq``; brokers override what they support.
    async def browse(self, topic: str, limit: int = 100) -> list[StoredMessage]:
        """Read up to ``limit`` messages of ``topic`` without consuming them."""
        raise BrokerError(f"{type(self).__name__} cannot browse topic {topic!r}")

    async def remove(self, topic: str, messages: Sequence[StoredMessage]) -> None:
        """Remove the given messages from ``topic`` (after a replay)."""
        raise BrokerError(f"{type(self).__name__} cannot remove messages from {topic!r}")

    async def purge(self, topic: str) -> int:
        """Delete every message of ``topic``; return how many were removed."""
        raise BrokerError(f"{type(self).__name__} cannot purge topic {topic!r}")
