"""One JetStream message handed to the runtime, and its acknowledgements."""

from __future__ import annotations

import logging
from collections.abc import Sequence
from typing import TYPE_CHECKING

import nats.errors
from nats.aio.msg import Msg

from agentflow import _native
from agentflow.brokers.base import Delivery
from agentflow.brokers.nats_publish import KEY_HEADER
from agentflow.brokers.nats_suspects import Mark
from agentflow.brokers.nats_wire import AckInfo, ack_info, send_commands

if TYPE_CHECKING:
    from agentflow.brokers.nats import NatsSubscription

__all__ = ["NatsDelivery"]

log = logging.getLogger("agentflow.brokers.nats")


class NatsDelivery(Delivery):
    """One JetStream message handed to a subscriber."""

    __slots__ = (
        "_free",
        "_msg",
        "_num_delivered",
        "_owner",
        "_position",
        "_settled",
        "delivery_count",
        "headers",
        "key",
        "payload",
        "seq",
        "suspect",
        "topic",
    )

    def __init__(
        self,
        msg: Msg,
        owner: NatsSubscription,
        suspect: bool = False,
        free: int = 0,
        info: AckInfo | None = None,
    ) -> None:
        self._msg = msg
        self._owner = owner
        self._settled = False
        # Redelivered after a crash or expiry (not a nak): handed out alone.
        self.suspect = suspect
        stream, num_delivered, seq = info or ack_info(msg)
        self.topic = msg.subject
        self.payload = msg.data
        # nats-py built this dict for this message alone: keep it rather than copy it.
        self.headers = msg.headers or {}
        # NATS has no record key: agentflow carries it in a header.
        self.key = self.headers.get(KEY_HEADER)
        self._num_delivered = num_delivered
        self._free = free
        # Deliveries that were handed back unseen (nats_suspects) are not attempts.
        self.delivery_count = max(num_delivered - free, 1)
        self.seq = seq  # the stream sequence: what a redelivery shares with this delivery
        self._position = {"stream": stream, "seq": str(seq)}

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
        self._owner._settled(self)
        try:
            if kind == "ack":
                await self._msg.ack()
            elif kind == "nak":
                # Recorded first, so whoever gets the redelivery knows it is a plain retry.
                await self._owner._marks.write(
                    self._owner.stream,
                    self._owner.durable,
                    self.seq,
                    Mark(self._num_delivered, self._free, suspect=False),
                )
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

    @classmethod
    async def ack_many(cls, deliveries: Sequence[Delivery]) -> list[Exception | None]:
        """Ack deliveries in one write: an empty message to each one's ack subject.

        What ``Msg.ack`` sends, without its per-message subject validation and write; a
        delivery settled already is skipped, as ``ack`` skips it.
        """
        acks: list[tuple[str, bytes, bytes]] = []
        client = None
        for d in deliveries:
            assert isinstance(d, NatsDelivery)
            msg = d._msg
            if d._settled or msg._ackd or not msg.reply:
                await d.ack()  # nothing to send, or nats-py's own error for a plain message
                continue
            d._settled = True
            d._owner._settled(d)
            msg._ackd = True
            acks.append((msg.reply, b"", b""))  # an empty message to the ack subject
            client = msg._client
        if acks and client is not None:
            try:
                await send_commands(client, [_native.nats_pub_commands(acks, "", 0)], 0, len(acks))
            except nats.errors.Error as exc:
                # As for one ack: the server redelivers after ack_wait (at-least-once).
                log.warning(
                    "NATS ack of %d messages failed (%s); they will be redelivered",
                    len(acks),
                    exc,
                )
        return [None] * len(deliveries)

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
