"""NATS JetStream backbone: ``NatsBroker(url)`` behind the broker protocol.

- Topics are subjects held by JetStream streams (see :mod:`agentflow.brokers.nats_streams`).
- A group is one durable pull consumer shared by every worker of that group (competing
  consumers); ``fetch`` pulls batches.
- ``publish`` sets ``Nats-Msg-Id`` and waits for every PubAck (see
  :mod:`agentflow.brokers.nats_publish`).
- Acks are fire-and-forget ``+ACK``: the runtime only acks after every output was durably
  accepted, so a lost ack costs a redelivery (handled by dedup/idempotency), never a message,
  and a round trip per message would halve throughput.
"""

from __future__ import annotations

import asyncio
import logging
import random
from collections.abc import Sequence
from typing import Any

import nats.errors
import orjson
from nats.aio.client import Client
from nats.aio.msg import Msg
from nats.js import JetStreamContext, api
from nats.js.errors import APIError, NotFoundError, ServiceUnavailableError

from agentflow.brokers.base import (
    Broker,
    BrokerError,
    Delivery,
    OutMessage,
    StoredMessage,
    Subscription,
)
from agentflow.brokers.nats_config import NatsSettings, parse_nats_url
from agentflow.brokers.nats_publish import KEY_HEADER, Publisher
from agentflow.brokers.nats_streams import StreamMapper, safe_name, validate_subject

__all__ = ["NatsBroker", "NatsDelivery", "NatsSubscription"]

log = logging.getLogger("agentflow.brokers.nats")

_API_TIMEOUT = 10.0


class _TlsOnlyClient(Client):
    """A client that refuses to talk to a server not offering TLS.

    nats-py upgrades to TLS only when the server *requires* it and otherwise carries on in
    plain text (credentials included), even for ``tls://`` URLs.
    """

    async def _process_info(self, info: dict[str, Any], initial_connection: bool = False) -> None:
        if initial_connection:
            if info.get("tls_available") and not info.get("tls_required"):
                info["tls_required"] = True  # the server allows TLS: use it
            if not info.get("tls_required"):
                raise nats.errors.Error("nats: TLS was requested but the server does not offer it")
        await super()._process_info(info, initial_connection)


class NatsDelivery(Delivery):
    """One JetStream message handed to a subscriber."""

    __slots__ = ("_msg", "_owner", "_position", "_settled")

    def __init__(self, msg: Msg, owner: NatsSubscription) -> None:
        self._msg = msg
        self._owner = owner
        self._settled = False
        meta = msg.metadata
        self.topic = msg.subject
        self.payload = msg.data
        self.headers = dict(msg.headers) if msg.headers else {}
        # NATS has no record key: agentflow carries it in a header.
        self.key = self.headers.get(KEY_HEADER)
        self.delivery_count = meta.num_delivered
        self._position = {"stream": meta.stream, "seq": str(meta.sequence.stream)}

    @property
    def position(self) -> dict[str, str]:
        """``{"stream": ..., "seq": ...}`` of the stored message."""
        return dict(self._position)

    @property
    def fallback_id(self) -> str:
        """``<stream>:<seq>``, stable across redeliveries."""
        return f"{self._position['stream']}:{self._position['seq']}"

    async def _settle(self, kind: str, delay: float | None = None) -> None:
        """Send one terminal acknowledgement; later ones are ignored, like the server does."""
        if self._settled:
            return
        self._settled = True
        self._owner._outstanding.discard(self)
        try:
            if kind == "ack":
                await self._msg.ack()
            elif kind == "nak":
                await self._msg.nak(delay=delay if delay and delay > 0 else None)
            else:
                await self._msg.term()
        except nats.errors.MsgAlreadyAckdError:
            pass
        except nats.errors.Error as exc:
            # The connection is gone: the server redelivers after ack_wait, which is the
            # at-least-once fallback anyway.
            log.warning("NATS %s of %s failed (%s); it will be redelivered", kind, self.topic, exc)

    async def ack(self) -> None:
        """Acknowledge (fire-and-forget ``+ACK``)."""
        await self._settle("ack")

    async def nak(self, delay: float = 0.0) -> None:
        """Ask for redelivery after ``delay`` seconds (``-NAK {"delay": ns}``)."""
        await self._settle("nak", delay)

    async def term(self) -> None:
        """Stop redelivering (``+TERM``)."""
        await self._settle("term")

    async def in_progress(self) -> None:
        """Restart the ack_wait timer (``+WPI``)."""
        if self._settled:
            return
        try:
            await self._msg.in_progress()
        except nats.errors.Error as exc:
            log.warning("NATS in-progress of %s failed: %s", self.topic, exc)


class NatsSubscription(Subscription):
    """A durable pull consumer fetched in batches."""

    def __init__(
        self,
        broker: NatsBroker,
        psub: JetStreamContext.PullSubscription,
        stream: str,
        durable: str,
        config: api.ConsumerConfig,
    ) -> None:
        self._broker = broker
        self._psub = psub
        self.stream = stream
        self.durable = durable
        self._config = config
        self._buffer: list[Msg] = []
        self._outstanding: set[NatsDelivery] = set()
        self._closed = False

    async def fetch(self, max_messages: int, timeout: float) -> list[Delivery]:
        """Pull up to ``max_messages``; an empty list when none arrive within ``timeout``."""
        if self._closed or max_messages <= 0:
            return []
        if not self._buffer:
            self._buffer = await self._pull(max_messages, timeout)
        # nats-py may hand back more than asked (messages that arrived after an earlier
        # fetch timed out); keep the surplus for the next call.
        batch, self._buffer = self._buffer[:max_messages], self._buffer[max_messages:]
        out: list[Delivery] = []
        for msg in batch:
            delivery = NatsDelivery(msg, self)
            self._outstanding.add(delivery)
            out.append(delivery)
        return out

    async def _pull(self, max_messages: int, timeout: float) -> list[Msg]:
        """One fetch request; timeouts and transient errors become an empty batch."""
        timeout = max(timeout, 0.01)
        try:
            msgs: list[Msg] = await self._psub.fetch(max_messages, timeout=timeout)
            return msgs
        except (nats.errors.TimeoutError, TimeoutError):
            return []
        except nats.errors.ConnectionClosedError:
            if self._closed:
                return []
            raise BrokerError(f"NATS connection to {self._broker.display_url} is closed") from None
        except APIError as exc:
            # e.g. 409 "Consumer Deleted" after an operator removed it: create it again.
            log.warning(
                "fetch on %s/%s failed: %s; re-creating the consumer",
                self.stream,
                self.durable,
                exc,
            )
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
        """Stop fetching and nak whatever was received but not settled, for prompt redelivery."""
        if self._closed:
            return
        self._closed = True
        for delivery in list(self._outstanding):
            await delivery.nak()
        leftovers = self._buffer
        self._buffer = []
        try:
            await self._psub.unsubscribe()
        except (ValueError, nats.errors.Error):
            pass
        # Messages already pushed to the inbox but never fetched.
        queue = self._psub._sub._pending_queue
        while not queue.empty():
            leftovers.append(queue.get_nowait())
        for msg in leftovers:
            if msg.reply and not (msg.headers and msg.headers.get("Status")):
                try:
                    await msg.nak()
                except nats.errors.Error:
                    pass
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

    def _backoff(self, servers: list[Any], _info: dict[str, Any]) -> tuple[Any, float]:
        """Pick the least-failed server and wait with capped exponential back-off and jitter."""
        server = min(servers, key=lambda s: s.reconnects)
        base = min(self.settings.reconnect_max_wait, 0.1 * 2 ** min(server.reconnects, 16))
        return server, base * random.uniform(0.5, 1.0)

    async def connect(self) -> None:
        """Connect (bounded), check JetStream, then reconnect forever on later losses."""
        if self._nc is not None:
            return
        self._closing = False
        s = self.settings
        quiet = True  # errors of the first connect go into the BrokerError, not the log
        first_errors: list[BaseException] = []

        failed_attempts = 0

        async def on_error(exc: Exception) -> None:
            nonlocal failed_attempts
            if quiet:
                first_errors.append(exc)
                return
            failed_attempts += 1
            # One line per outage, then one every 30 attempts: reconnecting is normal.
            level = logging.WARNING if failed_attempts % 30 == 1 else logging.DEBUG
            log.log(level, "NATS %s: %s", s.display_url, exc or type(exc).__name__)

        async def on_disconnect() -> None:
            if self._closing or quiet:
                return
            log.warning("NATS disconnected from %s; reconnecting", s.display_url)

        async def on_reconnect() -> None:
            nonlocal failed_attempts
            failed_attempts = 0
            log.warning("NATS reconnected to %s", s.display_url)

        nc = _TlsOnlyClient() if s.tls is not None else Client()
        attempts_timeout = s.connect_timeout * 2 * len(s.servers) + 1.0
        try:
            await asyncio.wait_for(
                nc.connect(
                    **s.connect_options(),  # type: ignore[arg-type]
                    connect_timeout=max(1, round(s.connect_timeout)),
                    reconnect_time_wait=0.1,  # type: ignore[arg-type]
                    max_reconnect_attempts=1,
                    error_cb=on_error,
                    disconnected_cb=on_disconnect,
                    reconnected_cb=on_reconnect,
                    reconnect_to_server_handler=self._backoff,
                    pending_size=8 * 1024 * 1024,
                ),
                timeout=attempts_timeout,
            )
        except (OSError, TimeoutError, nats.errors.Error) as exc:
            # The most telling failure: an auth/TLS error beats "no servers".
            seen = [e for e in first_errors if not isinstance(e, nats.errors.NoServersError)]
            reason = seen[-1] if seen else (nc.last_error or exc)
            await _quiet_close(nc)
            raise BrokerError(
                f"cannot connect to NATS at {s.display_url}: {_describe(reason)}"
            ) from None
        # Connected: from now on never give up reconnecting.
        nc.options["max_reconnect_attempts"] = -1
        quiet = False
        js = nc.jetstream(timeout=10.0)
        try:
            await js.account_info()
        except (ServiceUnavailableError, NotFoundError, nats.errors.NoRespondersError):
            await _quiet_close(nc)
            raise BrokerError(
                f"NATS at {s.display_url} has no JetStream (start nats-server with -js)"
            ) from None
        except (APIError, nats.errors.Error) as exc:
            await _quiet_close(nc)
            raise BrokerError(f"JetStream at {s.display_url} is unusable: {exc!r}") from None
        self._nc, self._js = nc, js
        self._streams = StreamMapper(js, s.streams)
        self._publisher = Publisher(
            nc, self._streams, window=s.publish_window, timeout=s.publish_timeout
        )
        await self._publisher.start()

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
                try:
                    await nc.flush(timeout=5)
                except (nats.errors.Error, TimeoutError):
                    pass
            await _quiet_close(nc)

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
            max_deliver=max_deliver if max_deliver > 0 else -1,
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
        sub = NatsSubscription(self, psub, stream, durable, config)
        self._subscriptions.add(sub)
        return sub

    async def _stream_of(self, topic: str) -> str | None:
        """The stream holding ``topic`` (None when no stream covers it)."""
        validate_subject(topic, wildcards=True)
        return await self.streams.find(topic)

    async def browse(self, topic: str, limit: int = 100) -> list[StoredMessage]:
        """Read up to ``limit`` messages of ``topic`` by sequence, without a consumer."""
        stream = await self._stream_of(topic)
        if stream is None:
            return []
        out: list[StoredMessage] = []
        seq = 1
        while len(out) < limit:
            try:
                raw = await self.js.get_msg(stream, seq=seq, subject=topic, next=True)
            except NotFoundError:
                break
            except APIError as exc:
                raise BrokerError(f"cannot read {topic!r} from stream {stream}: {exc}") from None
            headers = dict(raw.headers or {})
            out.append(
                StoredMessage(
                    topic=raw.subject or topic,
                    payload=raw.data or b"",
                    headers=headers,
                    key=headers.get(KEY_HEADER),
                    position={"stream": stream, "seq": str(raw.seq)},
                    timestamp_ms=_epoch_ms(raw),
                )
            )
            seq = (raw.seq or seq) + 1
        return out

    async def remove(self, topic: str, messages: Sequence[StoredMessage]) -> None:
        """Delete the given messages from their stream by sequence."""
        for message in messages:
            stream = message.position.get("stream") or await self._stream_of(topic)
            seq = message.position.get("seq")
            if not stream or not seq:
                raise BrokerError(f"message of {topic!r} has no NATS stream position")
            try:
                await self.js.delete_msg(stream, int(seq))
            except NotFoundError:
                pass  # already gone: removal is idempotent
            except APIError as exc:
                if "not found" in str(exc.description or "").lower():
                    continue  # 10043 "sequence N not found": deleted earlier
                raise BrokerError(f"cannot delete {stream}#{seq}: {exc}") from None

    async def purge(self, topic: str) -> int:
        """Purge the subject ``topic`` from its stream; return the number removed."""
        stream = await self._stream_of(topic)
        if stream is None:
            return 0
        # nats-py's purge_stream returns only a bool; the raw API reply carries the count.
        try:
            msg = await self.nc.request(
                f"$JS.API.STREAM.PURGE.{stream}",
                orjson.dumps({"filter": topic}),
                timeout=_API_TIMEOUT,
            )
        except nats.errors.Error as exc:
            raise BrokerError(f"cannot purge {topic!r} from {stream}: {exc!r}") from None
        resp = orjson.loads(msg.data)
        if "error" in resp:
            raise BrokerError(f"cannot purge {topic!r} from {stream}: {resp['error']}")
        return int(resp.get("purged", 0))


def _epoch_ms(raw: api.RawStreamMsg) -> int:
    """Stored time of a raw stream message in epoch milliseconds (0 when unknown)."""
    stamp = getattr(raw, "time", None)
    if stamp is None:
        return 0
    try:
        return int(stamp.timestamp() * 1000)
    except (AttributeError, ValueError, OSError):
        return 0


def _describe(exc: BaseException) -> str:
    """A one-line reason for a connection failure."""
    if isinstance(exc, nats.errors.NoServersError):
        return "no server answered"
    if isinstance(exc, TimeoutError):
        return "timed out"
    if isinstance(exc, ConnectionRefusedError):
        return "connection refused"
    text = str(exc).strip()
    return text or type(exc).__name__


async def _quiet_close(nc: Client) -> None:
    """Close a client, ignoring errors from a half-open connection."""
    try:
        await nc.close()
    except (nats.errors.Error, OSError, TimeoutError):
        pass
