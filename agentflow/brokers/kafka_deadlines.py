"""Ack deadlines of a Kafka subscription: Kafka has none, so the subscription keeps its own.

``ack_wait`` is one constant per subscription, so deliveries armed in hand-out order fall due
in that order: a FIFO of hand-outs (the deliveries of one fetch share a deadline and an entry),
instead of a heap that would hold every finished delivery (and its record) for ``ack_wait``.
An entry lets go of its deliveries once all of them are finished (``release``), and the
finished entries at the front are dropped; nothing is looked at per message until an entry
falls due. Only a delivery that ``in_progress`` extended past its first deadline moves to a
small heap.
"""

from __future__ import annotations

import heapq
import itertools
import time
from collections import deque
from collections.abc import Sequence
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from agentflow.brokers.kafka_delivery import KafkaDelivery

__all__ = ["AckDeadlines", "Armed", "release"]


def _moot(d: KafkaDelivery) -> bool:
    """Nothing to enforce any more: finished, handed out again, or its partition is leaving."""
    part = d.part
    return d.finished or d.superseded or not part.live or part.revoking


class Armed:
    """Deliveries handed out together: one deadline, and how many are not finished yet."""

    __slots__ = ("deadline", "deliveries", "left")

    def __init__(self, deadline: float, deliveries: Sequence[KafkaDelivery]) -> None:
        self.deadline = deadline
        self.deliveries = deliveries
        self.left = len(deliveries)


def release(d: KafkaDelivery) -> None:
    """``d`` finished: its entry lets go of its deliveries once none is left unfinished."""
    entry = d.armed
    if entry is not None:
        d.armed = None
        entry.left -= 1
        if entry.left <= 0:
            entry.deliveries = ()


class AckDeadlines:
    """Deliveries armed with ``ack_wait``; reports those that outlived it without news."""

    def __init__(self, ack_wait: float) -> None:
        self.ack_wait = ack_wait
        self._armed: deque[Armed] = deque()
        self._extended: list[tuple[float, int, KafkaDelivery]] = []
        self._seq = itertools.count()

    def arm(self, d: KafkaDelivery, now: float | None = None) -> None:
        """Start ``d``'s deadline now (``now``: a clock reading the caller already took)."""
        self.arm_all([d], now)

    def arm_all(self, ds: Sequence[KafkaDelivery], now: float | None = None) -> None:
        """Start the deadline of deliveries handed out together (one entry for all)."""
        if self.ack_wait > 0 and ds:
            deadline = (time.monotonic() if now is None else now) + self.ack_wait
            entry = Armed(deadline, ds)
            for d in ds:
                d.deadline = deadline
                d.armed = entry
            self._armed.append(entry)

    def expired(self, now: float | None = None) -> list[KafkaDelivery]:
        """Deliveries past their deadline, neither finished nor extended; each reported once."""
        if now is None:
            now = time.monotonic()
        out: list[KafkaDelivery] = []
        armed = self._armed
        while armed:
            head = armed[0]
            if head.left > 0 and head.deadline > now:
                break
            armed.popleft()  # all finished, or due: each delivery is looked at once
            for d in head.deliveries:
                if not _moot(d):
                    self._check(d, now, out)
        extended = self._extended
        while extended and extended[0][0] <= now:
            _, _, d = heapq.heappop(extended)
            if not _moot(d):
                self._check(d, now, out)
        return out

    def _check(self, d: KafkaDelivery, now: float, out: list[KafkaDelivery]) -> None:
        if d.deadline > now:  # extended by in_progress: look again at its new deadline
            heapq.heappush(self._extended, (d.deadline, next(self._seq), d))
        else:
            out.append(d)
