"""The embedded in-process broker behind ``memory://`` and ``memory://<name>``.

A product backbone, not a mock: it gives the full semantics of :mod:`agentflow.brokers.base`.

- Brokers with the same name in one process share one state (topic logs, groups, dedup
  window), so an App restarted in the same process sees its un-acked messages again.
  ``memory://`` is the name ``default``.
- Every topic keeps a log of up to ``retention`` messages (oldest dropped first), numbered
  from 1; positions are ``{"stream": <topic>, "seq": "<n>"}``.
- A group is identified by (group name, pattern) and starts like a JetStream durable with
  DeliverAll: it first receives every retained message of the topics it matches, then every
  new one. Subscribers of one group compete; each message goes to one of them.
- Inside a group, a message with key K that is in flight or waiting out a nak delay holds back
  later messages with key K, so one key is processed strictly in order across subscribers.
- ``ack_wait <= 0`` disables the ack deadline; ``max_in_flight <= 0`` and ``max_deliver <= 0``
  mean unlimited. After ``max_deliver`` deliveries a message is not redelivered again.
- Redeliveries are driven by a timer heap checked on fetch; a waiting fetch sleeps until the
  earliest timer or a publish/ack wakes it, never polling.
- The dedup window (``dedup_id`` or ``af-id``, 120 s, bounded) is per topic, like a NATS
  stream per subject, so a dead-letter copy or a replay may reuse an id from another topic.
- A fetch on a closed subscription raises :class:`BrokerError`; ``ack``/``term`` of an older
  delivery of a message that is still pending still finish it (the work was done).

One lock guards a state, so publishers and consumers may live on different threads and event
loops; asyncio futures are made per fetch on the running loop, never at construction.
"""

from __future__ import annotations

import asyncio
import heapq
import itertools
import threading
import time
from collections import OrderedDict
from collections.abc import Sequence
from urllib.parse import parse_qs, urlsplit

from agentflow._native import DedupWindow as NativeDedupWindow
from agentflow.brokers.base import (
    Broker,
    BrokerError,
    Delivery,
    OutMessage,
    PublishError,
    StoredMessage,
    Subscription,
)
from agentflow.brokers.memory_group import (
    Entry,
    Group,
    Member,
    Record,
    subject_matches,
    validate_topic,
)

__all__ = ["MemoryBroker", "MemoryDelivery", "MemorySubscription", "reset_memory_brokers"]

DEFAULT_NAME = "default"
DEFAULT_DEDUP_WINDOW = 120.0
DEFAULT_DEDUP_MAX = 100_000
DEFAULT_RETENTION = 100_000


class _Topic:
    """The log of one topic, and the groups its messages go to."""

    __slots__ = ("groups", "groups_version", "log", "next_seq")

    def __init__(self) -> None:
        self.log: OrderedDict[int, Record] = OrderedDict()
        self.next_seq = 1
        # Groups whose pattern matches this topic, as of `groups_version` of the state.
        self.groups: list[Group] = []
        self.groups_version = -1


class _State:
    """Everything brokers of one name share."""

    def __init__(self, name: str, dedup_window: float, dedup_max: int, retention: int) -> None:
        self.name = name
        self.retention = retention
        self.topics: dict[str, _Topic] = {}
        self.groups: dict[tuple[str, str], Group] = {}
        # Native window (agentflow._native), same semantics as memory_group.DedupWindow.
        self.dedup = NativeDedupWindow(dedup_window, dedup_max)
        self.gseq = itertools.count(1)
        # Bumped when a group is added, so topics recompute which groups they feed.
        self.groups_version = 0
        # One lock for the whole state: re-entrant because appending offers to groups, which
        # take it again. Uncontended in the usual one-loop case, so it costs next to nothing.
        self.lock = threading.RLock()

    def publish(self, messages: Sequence[OutMessage]) -> None:
        """Append every message not seen inside the dedup window."""
        with self.lock:
            for msg in messages:
                dedup_id = msg.dedup_id or msg.message_id
                # Per topic, like a NATS stream per subject: a DLQ copy or a replay may reuse
                # the id of a message on another topic.
                if dedup_id and self.dedup.seen(f"{msg.topic}\x00{dedup_id}"):
                    continue
                self._append(msg)

    def _append(self, msg: OutMessage) -> None:
        """Append one message to its topic log and offer it to every matching group."""
        topic = self.topics.get(msg.topic)
        if topic is None:
            validate_topic(msg.topic)
            topic = self.topics[msg.topic] = _Topic()
        record = Record(
            msg.topic,
            topic.next_seq,
            next(self.gseq),
            bytes(msg.payload),
            dict(msg.headers),
            msg.key,
            time.time_ns() // 1_000_000,
        )
        topic.next_seq += 1
        topic.log[record.seq] = record
        while len(topic.log) > self.retention:
            _, dropped = topic.log.popitem(last=False)
            dropped.removed = True
        if topic.groups_version != self.groups_version:
            topic.groups = [g for g in self.groups.values() if g.matches(msg.topic)]
            topic.groups_version = self.groups_version
        for group in topic.groups:
            group.offer(record)

    def group(self, name: str, pattern: str) -> Group:
        """Return the group (name, pattern), creating it with every retained matching message."""
        with self.lock:
            group = self.groups.get((name, pattern))
            if group is None:
                logs = [
                    t.log.values() for n, t in self.topics.items() if subject_matches(pattern, n)
                ]
                backlog = heapq.merge(*logs, key=lambda r: r.gseq)
                group = self.groups[(name, pattern)] = Group(name, pattern, backlog, self.lock)
                self.groups_version += 1
            return group

    def records(self, topic: str) -> list[Record]:
        """A snapshot of the live records of ``topic`` in sequence order."""
        with self.lock:
            log = self.topics.get(topic)
            return [] if log is None else list(log.log.values())

    def remove(self, topic: str, seqs: set[int] | None) -> int:
        """Drop the records ``seqs`` (all when None) of ``topic``; return how many existed."""
        with self.lock:
            log = self.topics.get(topic)
            if log is None:
                return 0
            if seqs is None:
                seqs = set(log.log)
            count = 0
            for seq in seqs:
                record = log.log.pop(seq, None)
                if record is not None:
                    # Queued entries of this record are skipped when they come up.
                    record.removed = True
                    count += 1
            return count


_REGISTRY: dict[str, _State] = {}


def reset_memory_brokers(name: str | None = None) -> None:
    """Forget the shared state of ``name`` (or of every name); for tests and tooling."""
    if name is None:
        _REGISTRY.clear()
    else:
        _REGISTRY.pop(name, None)


def _parse_url(url: str) -> tuple[str, dict[str, str]]:
    """Return (name, options) of a ``memory://<name>?opt=value`` URL."""
    parts = urlsplit(url)
    if parts.scheme != "memory":
        raise BrokerError(f"not a memory broker URL: {url!r}")
    name = (parts.netloc + parts.path).strip("/") or DEFAULT_NAME
    options = {k: v[-1] for k, v in parse_qs(parts.query).items()}
    return name, options


class MemoryDelivery(Delivery):
    """One hand-out of a message to a subscriber of the embedded broker."""

    def __init__(self, group: Group, entry: Entry, broker_name: str) -> None:
        record = entry.record
        self._group = group
        self._entry = entry
        self._token = entry.token
        self._broker_name = broker_name
        self.topic = record.topic
        self.payload = record.payload
        # A copy, so a handler mutating headers does not change what redeliveries see.
        self.headers = dict(record.headers)
        self.key = record.key
        self.delivery_count = entry.deliveries

    @property
    def position(self) -> dict[str, str]:
        """``{"stream": <topic>, "seq": "<n>"}``."""
        return {"stream": self.topic, "seq": str(self._entry.record.seq)}

    @property
    def fallback_id(self) -> str:
        """``memory:<broker name>:<topic>:<seq>``, stable for the life of the process."""
        return f"memory:{self._broker_name}:{self.topic}:{self._entry.record.seq}"

    async def ack(self) -> None:
        """Mark the message done for this group."""
        self._group.ack(self._entry)

    async def nak(self, delay: float = 0.0) -> None:
        """Redeliver the message after ``delay`` seconds."""
        self._group.nak(self._entry, self._token, max(0.0, delay))

    async def term(self) -> None:
        """Stop delivering this message to this group."""
        self._group.ack(self._entry)

    async def in_progress(self) -> None:
        """Extend the ack deadline by the subscription's ack_wait."""
        self._group.extend(self._entry, self._token)


class MemorySubscription(Subscription):
    """One competing subscriber of a group of the embedded broker."""

    def __init__(self, state: _State, group: Group, member: Member) -> None:
        self._state = state
        self._group = group
        self._member = member

    @property
    def in_flight(self) -> int:
        """Deliveries handed to this subscription and not yet resolved."""
        return len(self._member.inflight)

    async def fetch(self, max_messages: int, timeout: float) -> list[Delivery]:
        """Return up to ``max_messages`` deliveries, waiting at most ``timeout`` seconds."""
        member, group = self._member, self._group
        deadline = time.monotonic() + max(0.0, timeout)
        if member.closed:
            raise BrokerError(
                f"subscription of group {group.name!r} to {group.pattern!r} is closed"
            )
        while True:
            # Once closed while waiting, poll returns no entries and no waiter: we return [].
            entries, fut = group.poll(member, max(0, max_messages))
            if fut is None:
                name = self._state.name
                return [MemoryDelivery(group, e, name) for e in entries]
            try:
                now = time.monotonic()
                wait = deadline - now
                if wait <= 0 or max_messages <= 0:
                    return []
                due = group.next_due()
                if due is not None:
                    # Wake for the next redelivery even when nothing is published meanwhile.
                    wait = min(wait, max(0.0, due - now))
                await asyncio.wait((fut,), timeout=wait)
            finally:
                group.drop_waiter(fut)
                fut.cancel()

    async def close(self) -> None:
        """Stop fetching and hand back un-acked deliveries for immediate redelivery."""
        if not self._member.closed:
            self._group.hand_back(self._member)


class MemoryBroker(Broker):
    """The embedded broker; brokers with the same URL name share one in-process state."""

    def __init__(
        self,
        url: str = "memory://",
        *,
        dedup_window: float | None = None,
        dedup_max: int | None = None,
        retention: int | None = None,
    ) -> None:
        self.url = url
        self.name, options = _parse_url(url)
        try:
            window = float(options.get("dedup_window", DEFAULT_DEDUP_WINDOW))
            dmax = int(options.get("dedup_max", DEFAULT_DEDUP_MAX))
            keep = int(options.get("retention", DEFAULT_RETENTION))
        except ValueError as exc:
            raise BrokerError(f"bad option in memory broker URL {url!r}: {exc}") from exc
        window = window if dedup_window is None else dedup_window
        dmax = dmax if dedup_max is None else dedup_max
        keep = keep if retention is None else retention
        state = _REGISTRY.get(self.name)
        if state is None:
            # Options only shape a state when it is first created; later brokers join it.
            state = _REGISTRY[self.name] = _State(self.name, window, max(1, dmax), max(1, keep))
        self._state = state
        self._subs: list[MemorySubscription] = []

    async def connect(self) -> None:
        """Nothing to connect to; the state exists from construction."""

    async def close(self) -> None:
        """Close this broker's subscriptions (handing back their work); the state stays."""
        subs, self._subs = self._subs, []
        for sub in subs:
            await sub.close()

    async def ensure_topics(self, topics: Sequence[str]) -> None:
        """Topics appear on first publish; nothing to declare."""

    async def publish(self, messages: Sequence[OutMessage]) -> None:
        """Append every message to its topic log (durable on return, in-process)."""
        try:
            self._state.publish(messages)
        except BrokerError as exc:
            raise PublishError(str(exc)) from exc

    async def subscribe(
        self,
        pattern: str,
        group: str,
        *,
        ack_wait: float,
        max_in_flight: int,
        max_deliver: int,
    ) -> Subscription:
        """Join (creating on first use) the durable group (``group``, ``pattern``)."""
        grp = self._state.group(group, pattern)
        member = Member(ack_wait=ack_wait, max_in_flight=max_in_flight, max_deliver=max_deliver)
        sub = MemorySubscription(self._state, grp, member)
        self._subs.append(sub)
        return sub

    async def browse(self, topic: str, limit: int = 100) -> list[StoredMessage]:
        """Read up to ``limit`` retained messages of ``topic`` without consuming them."""
        out: list[StoredMessage] = []
        for record in self._state.records(topic):
            if len(out) >= limit:
                break
            out.append(
                StoredMessage(
                    topic=record.topic,
                    payload=record.payload,
                    headers=dict(record.headers),
                    key=record.key,
                    position={"stream": record.topic, "seq": str(record.seq)},
                    timestamp_ms=record.timestamp_ms,
                )
            )
        return out

    async def remove(self, topic: str, messages: Sequence[StoredMessage]) -> None:
        """Remove the given messages (by their ``seq`` position) from ``topic``."""
        seqs: set[int] = set()
        for msg in messages:
            try:
                seqs.add(int(msg.position["seq"]))
            except (KeyError, ValueError) as exc:
                raise BrokerError(f"message of {topic!r} has no memory position: {exc}") from exc
        self._state.remove(topic, seqs)

    async def purge(self, topic: str) -> int:
        """Delete every retained message of ``topic``; return how many were removed."""
        return self._state.remove(topic, None)
