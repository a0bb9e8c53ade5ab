"""Long-lived pull requests for a JetStream pull consumer.

nats-py's ``fetch(batch, timeout)`` sends a pull request that expires with the call, so an idle
worker polling every 250 ms keeps the server's waiting list full of requests that are about to
expire. nats-server 2.9 mishandles a redelivery that meets only expired requests: it steps the
consumer's stream cursor back instead of requeueing the redelivery, so a message comes back as
a *first* delivery (``num_delivered`` 1). That hides a crash from the suspect logic
(:mod:`agentflow.brokers.nats_suspects`) and sends an already-handled message once more.

So a subscription keeps one request open on the server for what it has room for, with a long
expiry, and renews it before it expires; a fetch only waits on the inbox. The server always has
a live request to deliver to, and an idle consumer sends one request per ~25 s instead of four
per second.
"""

from __future__ import annotations

import asyncio
import logging
import time

import nats.errors
import orjson
from nats.aio.client import Client
from nats.aio.msg import Msg
from nats.js import JetStreamContext

log = logging.getLogger("agentflow.brokers.nats")

# How long the server keeps a pull request, and how early before that a fresh one is sent.
PULL_EXPIRES = 30.0
_RENEW_BEFORE = 5.0

# Status codes the server sends to a pull request's inbox instead of a message.
_HEARTBEAT = "100"
_TIMEOUTS = ("404", "408")  # no messages / request expired
_CONFLICT = "409"  # consumer deleted, leadership change, max waiting exceeded, ...


class ConsumerGone(Exception):
    """The server says the consumer was deleted; it has to be created again."""


class StandingPull:
    """The open pull requests of one subscription and the messages they delivered."""

    def __init__(self, nc: Client, psub: JetStreamContext.PullSubscription) -> None:
        self._nc = nc
        # nats-py keeps the consumer's next-message subject and its inbox on the subscription.
        self._next_subject: str = psub._nms
        self._inbox: str = psub._deliver
        self._sub = psub._sub
        self._open = 0  # messages requested and not delivered yet
        self._until = 0.0  # when the newest request expires (monotonic)
        self._reconnects = -1

    def queued(self) -> list[Msg]:
        """Messages delivered to the inbox and not taken yet (read-only view)."""
        pending = self._sub._pending_queue._queue  # type: ignore[attr-defined]
        return [msg for msg in pending if msg.reply]

    def _live(self) -> int:
        """Messages still owed by requests the server holds (0 once they may be gone)."""
        if (
            time.monotonic() > self._until - _RENEW_BEFORE
            or self._nc.stats["reconnects"] != self._reconnects
        ):
            # Expiring, or lost with the old connection: ask again (a little over-pulling is
            # harmless, the surplus waits in the subscription's buffer).
            self._open = 0
        return self._open

    async def _request(self, count: int) -> None:
        """Send one pull request for ``count`` messages with a long expiry."""
        body = orjson.dumps({"batch": count, "expires": int(PULL_EXPIRES * 1e9)})
        await self._nc.publish(self._next_subject, body, reply=self._inbox)
        self._open += count
        self._until = time.monotonic() + PULL_EXPIRES
        self._reconnects = self._nc.stats["reconnects"]

    def _accept(self, msg: Msg) -> bool:
        """True for a message; False for a status, after acting on it."""
        headers = msg.headers
        # A status has no reply subject; a stored message always has its ack subject.
        status = headers.get("Status") if headers and not msg.reply else None
        if status is None:
            self._open = max(self._open - 1, 0)
            return True
        if status == _HEARTBEAT:
            return False
        if status in _TIMEOUTS:
            self._open = 0  # which request ended is unknown: ask again next time
            return False
        description = (headers or {}).get("Description", "")
        self._open = 0
        if status == _CONFLICT and "deleted" in description.lower():
            raise ConsumerGone(description)
        log.debug("pull request ended: %s %s", status, description)
        return False

    def _take_queued(self) -> list[Msg]:
        """Every message already in the inbox, without waiting."""
        queue = self._sub._pending_queue
        out: list[Msg] = []
        while not queue.empty():
            msg = queue.get_nowait()
            self._sub._pending_size -= len(msg.data)
            if self._accept(msg):
                out.append(msg)
        return out

    async def _next(self, timeout: float) -> Msg | None:
        """The next message of the inbox within ``timeout`` (None when none came).

        nats-py's ``next_msg`` runs two tasks and a ``wait_for`` per call: three or four loop
        turns between a message's arrival and its fetch at low rates. This waits on the
        subscription's queue itself, as ``_take_queued`` reads it.
        """
        if self._nc.is_closed:
            raise nats.errors.ConnectionClosedError
        try:
            async with asyncio.timeout(timeout):
                msg: Msg = await self._sub._pending_queue.get()
        except TimeoutError:
            if self._nc.is_closed:
                raise nats.errors.ConnectionClosedError from None
            return None
        self._sub._pending_size -= len(msg.data)
        return msg

    async def pull(self, want: int, timeout: float) -> list[Msg]:
        """Messages for up to ``want`` free slots; waits up to ``timeout`` for the first."""
        got = self._take_queued()
        missing = want - len(got) - self._live()
        # Top up in sizeable steps (once half of ``want`` is owed by no request), so neither a
        # busy consumer nor one taking messages as they trickle in sends a request per
        # message: at low rates that request was sent between a message's fetch and its
        # handler.
        if missing > 0 and 2 * missing >= want:
            await self._request(missing)
        deadline = time.monotonic() + timeout
        while not got:
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                return []
            msg = await self._next(remaining)
            if msg is None:
                return []
            if self._accept(msg):
                got = [msg, *self._take_queued()]
            elif self._live() < want:
                await self._request(want - self._open)
        return got
