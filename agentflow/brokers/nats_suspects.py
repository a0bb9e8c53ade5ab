"""How each redelivery came about: after a nak, after a hand-back, or after a crash.

JetStream reports only how often a message was delivered. A message whose worker died while
holding it comes back with a higher count, and so does every message that was in flight or
merely buffered beside it; if the same batch travels together through three crashes, innocent
messages reach ``max_attempts`` with the one that kills the worker. So a subscription
(:class:`agentflow.brokers.nats.NatsSubscription`) hands a *suspect* — a message redelivered
without a recorded nak — out alone, holding nothing else, and hands back the rest of its
buffer first. Those hand-backs are deliveries the runtime never saw, so they are not charged:
the delivery count the runtime gets is ``num_delivered - free``.

A suspect handed out is recorded too (and flushed before its handler runs), so a delivery
that left no record was pulled but never seen — it sat in the buffer of a worker that died
while a suspect ran — and is free as well: crash loops cost the killer, not its neighbours.

The record of every settle-by-nak lives in this process and, for the other workers of the
group, in a small KV bucket written without waiting for a PubAck (a lost record only makes a
redelivery look like a crash: slower, never unsafe).
"""

from __future__ import annotations

import logging
from collections import OrderedDict
from dataclasses import dataclass

import nats.errors
import orjson
from nats.aio.client import Client
from nats.js import JetStreamContext, api
from nats.js.errors import APIError, BucketNotFoundError, KeyNotFoundError
from nats.js.kv import KeyValue

log = logging.getLogger("agentflow.brokers.nats")

_LOCAL_MARKS = 50_000
_MARK_TTL = 86_400.0


@dataclass(frozen=True, slots=True)
class Mark:
    """How delivery ``delivered`` of a message ended (nak'ed or handed back, not crashed)."""

    delivered: int  # the server's delivery count when it was settled
    free: int  # deliveries so far that never reached the runtime
    suspect: bool  # whether its next delivery is still a suspect

    def encode(self) -> bytes:
        """Compact JSON for the KV value."""
        return orjson.dumps({"n": self.delivered, "f": self.free, "s": self.suspect})

    @classmethod
    def decode(cls, data: bytes | None) -> Mark | None:
        """Parse a KV value; None when unreadable."""
        try:
            raw = orjson.loads(data or b"")
            return cls(int(raw["n"]), int(raw["f"]), bool(raw["s"]))
        except (orjson.JSONDecodeError, KeyError, TypeError, ValueError):
            return None


class NakMarks:
    """Records how deliveries ended, keyed by ``(stream, consumer, stream sequence)``."""

    def __init__(self, nc: Client, js: JetStreamContext, bucket: str, replicas: int) -> None:
        self._nc = nc
        self._js = js
        self.bucket = bucket
        self._replicas = replicas
        self._kv: KeyValue | None = None
        self._opened = False
        self._local: OrderedDict[str, Mark] = OrderedDict()

    async def open(self) -> None:
        """Bind or create the bucket; without it marks stay local to this process."""
        if self._opened:
            return
        self._opened = True
        try:
            try:
                self._kv = await self._js.key_value(self.bucket)
            except BucketNotFoundError:
                self._kv = await self._js.create_key_value(
                    api.KeyValueConfig(
                        bucket=self.bucket,
                        description="agentflow: how redelivered messages were settled",
                        history=1,
                        ttl=_MARK_TTL,
                        replicas=self._replicas,
                    )
                )
        except (APIError, nats.errors.Error) as exc:
            if isinstance(exc, APIError) and exc.err_code == 10058:  # created concurrently
                self._kv = await self._js.key_value(self.bucket)
                return
            log.warning("KV bucket %s unavailable (%s): marks stay local", self.bucket, exc)

    @staticmethod
    def _key(stream: str, consumer: str, seq: int) -> str:
        return f"{stream}.{consumer}.{seq}"

    async def write(self, stream: str, consumer: str, seq: int, mark: Mark) -> None:
        """Record how a delivery ended (before the nak goes out, so others can see it)."""
        key = self._key(stream, consumer, seq)
        self._local[key] = mark
        self._local.move_to_end(key)
        while len(self._local) > _LOCAL_MARKS:
            self._local.popitem(last=False)
        if self._kv is None:
            return
        try:
            # Plain publish into the bucket's subject: stored without a PubAck round trip.
            await self._nc.publish(f"$KV.{self.bucket}.{key}", mark.encode())
        except nats.errors.Error as exc:
            log.debug("mark for %s not written: %s", key, exc)

    async def read(self, stream: str, consumer: str, seq: int, delivered: int) -> tuple[bool, int]:
        """``(suspect, free)`` of delivery ``delivered``: a suspect unless a mark explains it."""
        key = self._key(stream, consumer, seq)
        mark = self._local.get(key)
        if (mark is None or mark.delivered != delivered - 1) and self._kv is not None:
            try:
                entry = await self._kv.get(key)
                mark = Mark.decode(entry.value) or mark
            except (KeyNotFoundError, APIError, nats.errors.Error):
                pass
        if mark is None:
            # Delivery 1 went out as a fresh message: charged. A later delivery was a suspect,
            # and a suspect leaves a mark when it is handed out, so without one it never
            # reached a runtime (pulled into a worker's buffer that died with it): free.
            return True, max(delivered - 2, 0)
        if mark.delivered == delivered - 1:
            return mark.suspect, mark.free
        # Deliveries after the mark that left none: the first was handed out unmarked when the
        # mark made it a plain retry (charged); every other one was a suspect never handed out.
        unmarked = delivered - 1 - mark.delivered
        return True, mark.free + unmarked - (0 if mark.suspect else 1)
