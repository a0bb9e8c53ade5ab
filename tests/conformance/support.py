"""Helpers shared by the conformance tests (broker-independent)."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

from agentflow import App, Context
from agentflow.brokers import Broker, Delivery, OutMessage, Subscription, from_url
from agentflow.brokers.base import PublishError


async def eventually(
    check: Callable[[], bool], timeout: float = 30.0, what: str = "condition"
) -> None:
    """Wait until ``check()`` holds; fail naming ``what`` after ``timeout`` seconds."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if check():
            return
        await asyncio.sleep(0.02)
    raise AssertionError(f"timed out after {timeout}s waiting for {what}")


@dataclass
class Seen:
    """A message a collector agent received."""

    payload: Any
    headers: dict[str, str]
    key: str | None
    at: float


def collector(app: App, consumes: str, name: str | None = None) -> list[Seen]:
    """Register an agent on ``app`` that records everything arriving on ``consumes``."""
    seen: list[Seen] = []

    async def collect(payload: bytes, ctx: Context) -> None:
        seen.append(Seen(payload, dict(ctx.headers), ctx.key, time.monotonic()))

    app.agent(consumes=consumes, name=name or f"collect-{consumes}", timeout=5.0)(collect)
    return seen


# -- a broker wrapper that records (and can drop) what the runtime does ----------------------
@dataclass
class Recorder:
    """Events observed between the runtime and the real broker, in order."""

    events: list[tuple[str, Any]] = field(default_factory=list)
    drop_acks: int = 0
    # Publishes holding a message this picks are refused (as a broker refuses, e.g., size).
    refuse: Callable[[OutMessage], bool] | None = None
    # Publishes to ``hold_topic`` wait until ``hold`` is set (a slow broker round trip).
    hold: asyncio.Event | None = None
    hold_topic: str | None = None


class RecordingBroker(Broker):
    """Wraps a real broker; records publishes and acks, optionally swallows the first acks."""

    def __init__(self, inner: Broker, recorder: Recorder) -> None:
        self.inner = inner
        self.url = inner.url
        self.rec = recorder

    async def connect(self) -> None:
        await self.inner.connect()

    async def close(self) -> None:
        await self.inner.close()

    async def ensure_topics(self, topics: Sequence[str]) -> None:
        await self.inner.ensure_topics(topics)

    async def publish(self, messages: Sequence[OutMessage]) -> None:
        refuse = self.rec.refuse
        if refuse is not None and any(refuse(m) for m in messages):
            self.rec.events.append(("refused", [(m.topic, m.message_id) for m in messages]))
            raise PublishError(f"refused a publish of {len(messages)} message(s) (test)")
        if self.rec.hold is not None and any(m.topic == self.rec.hold_topic for m in messages):
            await self.rec.hold.wait()
        await self.inner.publish(messages)
        self.rec.events.append(("published", [(m.topic, m.message_id) for m in messages]))

    async def subscribe(
        self, pattern: str, group: str, *, ack_wait: float, max_in_flight: int, max_deliver: int
    ) -> Subscription:
        sub = await self.inner.subscribe(
            pattern,
            group,
            ack_wait=ack_wait,
            max_in_flight=max_in_flight,
            max_deliver=max_deliver,
        )
        return _RecordingSubscription(sub, self.rec)


class _RecordingSubscription(Subscription):
    def __init__(self, inner: Subscription, rec: Recorder) -> None:
        self.inner = inner
        self.rec = rec

    async def fetch(self, max_messages: int, timeout: float) -> list[Delivery]:
        return [
            _RecordingDelivery(d, self.rec) for d in await self.inner.fetch(max_messages, timeout)
        ]

    async def close(self) -> None:
        await self.inner.close()


class _RecordingDelivery(Delivery):
    def __init__(self, inner: Delivery, rec: Recorder) -> None:
        self.inner = inner
        self.rec = rec
        self.topic = inner.topic
        self.payload = inner.payload
        self.headers = inner.headers
        self.key = inner.key
        self.delivery_count = inner.delivery_count

    @property
    def position(self) -> dict[str, str]:
        return self.inner.position

    @property
    def fallback_id(self) -> str:
        return self.inner.fallback_id

    async def ack(self) -> None:
        if self.rec.drop_acks > 0:
            self.rec.drop_acks -= 1
            self.rec.events.append(("ack-dropped", self.headers.get("af-id")))
            return
        await self.inner.ack()
        self.rec.events.append(("acked", self.headers.get("af-id")))

    async def nak(self, delay: float = 0.0) -> None:
        await self.inner.nak(delay)

    async def term(self) -> None:
        await self.inner.term()

    async def in_progress(self) -> None:
        await self.inner.in_progress()


def recording(url: str, recorder: Recorder) -> RecordingBroker:
    """A fresh broker for ``url`` wrapped in a recorder."""
    return RecordingBroker(from_url(url), recorder)
