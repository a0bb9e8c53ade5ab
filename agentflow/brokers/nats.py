"""NATS JetStream backbone: ``NatsBroker(url)`` behind the broker protocol.

- Topics are subjects held by JetStream streams (see :mod:`agentflow.brokers.nats_streams`).
- A group is one durable pull consumer shared by every worker of that group (competing
  consumers); ``fetch`` pulls batches.
- ``publish`` sets ``Nats-Msg-Id`` and waits for every PubAck (see
  :mod:`agentflow.brokers.nats_publish`).
- Acks are fire-and-forget ``+ACK``: the runtime only acks after every output was durably
  accepted, so a lost ack costs a redelivery (handled by dedup/idempotency), never a message,
  and a round trip per message would halve throughput.
- A message redelivered after a crash rather than a nak is a suspect: it is handed out alone
  (see :mod:`agentflow.brokers.nats_suspects`), so a crash loop counts against the killer only.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections import deque
from collections.abc import Sequence

import nats.errors
from nats.aio.client import Client
from nats.aio.msg import Msg
from nats.js import JetStreamContext, api
from nats.js.errors import APIError

from agentflow.brokers import nats_dlq
from agentflow.brokers.base import (
    Broker,
    BrokerError,
    Delivery,
    OutMessage,
    StoredMessage,
    Subscription,
)
from agentflow.brokers.nats_config import NatsSettings, parse_nats_url
from agentflow.brokers.nats_connect import open_connection, quiet_close
from agentflow.brokers.nats_delivery import NatsDelivery
from agentflow.brokers.nats_publish import Publisher
from agentflow.brokers.nats_pull import ConsumerGone, StandingPull
from agentflow.brokers.nats_streams import StreamMapper, safe_name, validate_subject
from agentflow.brokers.nats_suspects import Mark, NakMarks
from agentflow.brokers.nats_wire import AckInfo, ack_info

__all__ = ["NatsBroker", "NatsDelivery", "NatsSubscription"]

log = logging.getLogger("agentflow.brokers.nats")

# Server-side deliveries allowed beyond max_deliver for hand-backs the runtime never saw.
_HANDBACK_SLACK = 10


# A pulled message: (message, suspect?, deliveries that never reached the runtime, ack info).
_Held = tuple[Msg, bool, int, AckInfo]


class NatsSubscription(Subscription):
    """A durable pull consumer fetched in batches; suspects go out alone."""

    def __init__(
        self,
        broker: NatsBroker,
        psub: JetStreamContext.PullSubscription,
        stream: str,
        durable: str,
        config: api.ConsumerConfig,
        marks: NakMarks,
        max_deliver: int,
    ) -> None:
        self._broker = broker
        self._psub = psub
        self.stream = stream
        self.durable = durable
        self._config = config
        self._marks = marks
        self._max_deliver = max_deliver
        self._buffer: deque[_Held] = deque()  # pulled, not handed out yet, in stream order
        # Handed out and not settled, by stream sequence (a redelivery shares its sequence).
        self._outstanding: dict[int, NatsDelivery] = {}
        self._suspect_out = False
        # After a suspect, pull one message at a time until fresh ones come again.
        self._suspect_mode = False
        self._idle = asyncio.Event()
        self._idle.set()
        self._closed = False
        interval = max((config.ack_wait or 30.0) / 3.0, 0.2)
        self._pull_requests = StandingPull(broker.nc, psub)
        self._heartbeat = asyncio.create_task(self._heartbeat_buffer(interval))

    def _settled(self, delivery: NatsDelivery) -> None:
        if self._outstanding.get(delivery.seq) is delivery:
            del self._outstanding[delivery.seq]
        if delivery.suspect:
            self._suspect_out = False
        if not self._outstanding:
            self._idle.set()

    async def _classify(self, msg: Msg) -> _Held | None:
        """Suspect or not, and the free deliveries; None when over ``max_deliver`` (termed)."""
        info = ack_info(msg)
        _, delivered, seq = info
        if delivered <= 1:
            return msg, False, 0, info
        suspect, free = await self._marks.read(self.stream, self.durable, seq, delivered)
        if 0 < self._max_deliver < delivered - free:
            log.warning(
                "%s#%d reached max_deliver=%d; no more deliveries",
                self.stream,
                seq,
                self._max_deliver,
            )
            with contextlib.suppress(nats.errors.Error):
                await msg.term()
            return None
        return msg, suspect, free, info

    async def _hand_back(self, held: _Held) -> None:
        """Nak a message the runtime never saw, so its next delivery is not charged."""
        msg, suspect, free, (_, delivered, seq) = held
        mark = Mark(delivered, free + 1, suspect)
        with contextlib.suppress(nats.errors.Error):
            await self._marks.write(self.stream, self.durable, seq, mark)
            await msg.nak()

    async def _mark_handed_out(self, held: _Held) -> None:
        """Record that a suspect reaches the runtime, so its next delivery knows it was seen."""
        _, _, free, (_, delivered, seq) = held
        await self._marks.write(self.stream, self.durable, seq, Mark(delivered, free, True))
        # The handler may kill the process at once: the record must be out before it runs.
        with contextlib.suppress(nats.errors.Error, TimeoutError):
            await self._broker.nc.flush(timeout=1)

    def _drop_superseded(self, pulled: list[Msg]) -> None:
        """Forget held deliveries the server has since handed out again (they expired)."""
        outstanding = self._outstanding
        for msg in pulled:
            old = outstanding.get(ack_info(msg)[2])
            if old is not None:
                # Its ack would still be accepted, but it must not hold suspects back.
                self._settled(old)

    def _hand_out(self, held: _Held) -> NatsDelivery:
        msg, suspect, free, info = held
        delivery = NatsDelivery(msg, self, suspect, free, info)
        self._outstanding[delivery.seq] = delivery
        self._idle.clear()
        if suspect:
            self._suspect_out = True
        return delivery

    async def fetch(self, max_messages: int, timeout: float) -> list[Delivery]:
        """Pull up to ``max_messages``; an empty list when none arrive within ``timeout``."""
        if self._closed or max_messages <= 0:
            return []
        if not self._suspect_out and not self._buffer:
            # A standing request may deliver more than asked; the buffer keeps the surplus.
            pulled = await self._pull(1 if self._suspect_mode else max_messages, timeout)
            if pulled and self._outstanding:
                self._drop_superseded(pulled)
            for msg in pulled:
                held = await self._classify(msg)
                if held is not None:
                    self._buffer.append(held)
            if pulled:
                self._suspect_mode = any(held[1] for held in self._buffer)
        out: list[Delivery] = []
        while self._buffer and len(out) < max_messages and not self._suspect_out:
            if self._buffer[0][1]:  # a suspect runs alone: nothing else held, nothing in flight
                if out or self._outstanding:
                    break
                suspect = self._buffer.popleft()
                while self._buffer:
                    await self._hand_back(self._buffer.popleft())
                await self._mark_handed_out(suspect)
                out.append(self._hand_out(suspect))
                break
            out.append(self._hand_out(self._buffer.popleft()))
        if not out and (self._suspect_out or self._buffer):
            # Held back behind work in flight: wait until it is done (or the timeout).
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._idle.wait(), max(timeout, 0.01))
        return out

    async def _heartbeat_buffer(self, interval: float) -> None:
        """Keep messages held back in the buffer from timing out on the server."""
        while True:
            await asyncio.sleep(interval)
            # Delivered to the inbox but not fetched yet counts as held too.
            held = [msg for msg, *_ in self._buffer] + self._pull_requests.queued()
            for msg in held:
                with contextlib.suppress(nats.errors.Error):
                    await msg.in_progress()

    async def _pull(self, max_messages: int, timeout: float) -> list[Msg]:
        """Take what the standing request delivered; transient errors become an empty batch."""
        timeout = max(timeout, 0.01)
        try:
            return await self._pull_requests.pull(max_messages, timeout)
        except nats.errors.ConnectionClosedError:
            if self._closed:
                return []
            raise BrokerError(f"NATS connection to {self._broker.display_url} is closed") from None
        except ConsumerGone as exc:
            # e.g. an operator removed the consumer: create it again.
            log.warning("fetch on %s/%s failed: %s; re-creating it", self.stream, self.durable, exc)
            await self._recreate()
            await asyncio.sleep(min(timeout, 1.0))
            return []
        except nats.errors.Error as exc:
            # Reconnecting (outbound buffer full, ...): the caller simply fetches again.
            log.debug("fetch on %s/%s: %r", self.stream, self.durable, exc)
            await asyncio.sleep(min(timeout, 1.0))
            return []

    async def _recreate(self) -> None:
        """Re-add the durable consumer with the original configuration."""
        try:
            await self._broker.js.add_consumer(self.stream, self._config)
        except (APIError, nats.errors.Error) as exc:
            log.warning("cannot re-create consumer %s/%s: %s", self.stream, self.durable, exc)

    async def close(self) -> None:
        """Stop fetching and hand back whatever was received but not settled, at once."""
        if self._closed:
            return
        self._closed = True
        self._heartbeat.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await self._heartbeat
        for delivery in list(self._outstanding.values()):
            await delivery.nak()
        leftovers = list(self._buffer)
        self._buffer.clear()
        with contextlib.suppress(ValueError, nats.errors.Error):
            await self._psub.unsubscribe()
        # Messages already pushed to the inbox but never fetched.
        queue = self._psub._sub._pending_queue
        while not queue.empty():
            msg = queue.get_nowait()
            if msg.reply and not (msg.headers and msg.headers.get("Status")):
                held = await self._classify(msg)
                if held is not None:
                    leftovers.append(held)
        for held in leftovers:
            await self._hand_back(held)
        self._broker._subscriptions.discard(self)


class NatsBroker(Broker):
    """JetStream broker for ``nats://`` and ``tls://`` URLs (see :mod:`.nats_config`)."""

    def __init__(self, url: str) -> None:
        self.url = url
        self.settings: NatsSettings = parse_nats_url(url)
        self._nc: Client | None = None
        self._js: JetStreamContext | None = None
        self._streams: StreamMapper | None = None
        self._publisher: Publisher | None = None
        self._marks: NakMarks | None = None
        self._subscriptions: set[NatsSubscription] = set()
        self._closing = False

    @property
    def display_url(self) -> str:
        """The URL with secrets masked."""
        return self.settings.display_url

    @property
    def connected(self) -> bool:
        """True between a successful ``connect`` and ``close``."""
        return self._nc is not None

    @property
    def nc(self) -> Client:
        """The live NATS connection (for the KV idempotency store and tests)."""
        if self._nc is None:
            raise BrokerError(f"NATS broker {self.display_url} is not connected")
        return self._nc

    @property
    def publisher(self) -> Publisher | None:
        """The windowed JetStream publisher of the live connection (None when closed)."""
        return self._publisher

    @property
    def js(self) -> JetStreamContext:
        """The JetStream context of the live connection."""
        if self._js is None:
            raise BrokerError(f"NATS broker {self.display_url} is not connected")
        return self._js

    @property
    def streams(self) -> StreamMapper:
        """The topic-to-stream mapper."""
        if self._streams is None:
            raise BrokerError(f"NATS broker {self.display_url} is not connected")
        return self._streams

    async def connect(self) -> None:
        """Connect (bounded), check JetStream, then reconnect forever on later losses."""
        if self._nc is not None:
            return
        self._closing = False
        s = self.settings
        nc, js = await open_connection(s, lambda: self._closing)
        self._nc, self._js = nc, js
        self._streams = StreamMapper(js, s.streams)
        self._publisher = Publisher(
            nc, self._streams, window=s.publish_window, timeout=s.publish_timeout
        )
        await self._publisher.start()
        self._marks = NakMarks(nc, js, f"{s.streams.prefix}NAKS", s.streams.replicas)

    async def close(self) -> None:
        """Close subscriptions (handing back unsettled work), flush acks, disconnect."""
        self._closing = True
        for sub in list(self._subscriptions):
            await sub.close()
        if self._publisher is not None:
            await self._publisher.stop()
            self._publisher = None
        nc, self._nc, self._js, self._streams = self._nc, None, None, None
        if nc is not None:
            if nc.is_connected:
                with contextlib.suppress(nats.errors.Error, TimeoutError):
                    await nc.flush(timeout=5)
            await quiet_close(nc)

    async def ensure_topics(self, topics: Sequence[str]) -> None:
        """Create or bind the streams of ``topics`` and their ``.dlq`` subjects."""
        await self.streams.ensure_all(topics)

    async def publish(self, messages: Sequence[OutMessage]) -> None:
        """Publish with ``Nats-Msg-Id`` and return after every PubAck."""
        if self._publisher is None:
            raise BrokerError(f"NATS broker {self.display_url} is not connected")
        await self._publisher.publish(messages)

    def max_ack_pending(self, max_in_flight: int) -> int:
        """Group-wide un-acked limit: room for many workers of ``max_in_flight`` each."""
        if self.settings.max_ack_pending is not None:
            return max(self.settings.max_ack_pending, max_in_flight)
        return max(1000, 16 * max_in_flight)

    async def subscribe(
        self,
        pattern: str,
        group: str,
        *,
        ack_wait: float,
        max_in_flight: int,
        max_deliver: int,
    ) -> Subscription:
        """Bind (creating or updating) the durable pull consumer of ``group`` on ``pattern``."""
        validate_subject(pattern, wildcards=True)
        stream = await self.streams.ensure(pattern)
        # The pattern is part of the name: two deployments that share a group name but
        # consume different subjects must not keep re-filtering one consumer between them.
        durable = safe_name(f"{group}__{pattern}")
        config = api.ConsumerConfig(
            durable_name=durable,
            name=durable,
            description=f"agentflow group {group}",
            filter_subject=pattern,
            deliver_policy=api.DeliverPolicy.ALL,
            ack_policy=api.AckPolicy.EXPLICIT,
            ack_wait=max(ack_wait, 0.001),
            # The cap is enforced on the runtime's count (nats_suspects); the server's, with
            # room for hand-backs, is only a backstop.
            max_deliver=max_deliver + _HANDBACK_SLACK if max_deliver > 0 else -1,
            max_ack_pending=self.max_ack_pending(max_in_flight),
            replay_policy=api.ReplayPolicy.INSTANT,
        )
        try:
            # Same config: no-op; changed ack_wait/filter/limits: the server updates it.
            await self.js.add_consumer(stream, config)
            psub = await self.js.pull_subscribe_bind(durable=durable, stream=stream)
        except APIError as exc:
            raise BrokerError(
                f"cannot create consumer {durable!r} on stream {stream} for {pattern!r}: {exc}"
            ) from None
        assert self._marks is not None
        await self._marks.open()
        sub = NatsSubscription(self, psub, stream, durable, config, self._marks, max_deliver)
        self._subscriptions.add(sub)
        return sub

    async def _stream_of(self, topic: str) -> str | None:
        """The stream holding ``topic`` (None when no stream covers it)."""
        validate_subject(topic, wildcards=True)
        return await self.streams.find(topic)

    async def browse(self, topic: str, limit: int = 100) -> list[StoredMessage]:
        """Read up to ``limit`` messages of ``topic`` by sequence, without a consumer."""
        stream = await self._stream_of(topic)
        return [] if stream is None else await nats_dlq.browse(self.js, stream, topic, limit)

    async def remove(self, topic: str, messages: Sequence[StoredMessage]) -> None:
        """Delete the given messages from their stream by sequence."""
        stream = await self._stream_of(topic)
        await nats_dlq.remove(self.js, topic, messages, stream)

    async def purge(self, topic: str) -> int:
        """Purge the subject ``topic`` from its stream; return the number removed."""
        stream = await self._stream_of(topic)
        return 0 if stream is None else await nats_dlq.purge(self.nc, stream, topic)
