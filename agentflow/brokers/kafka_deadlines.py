"""Ack deadlines of a Kafka subscription: Kafka has none, so the subscription keeps its own.

``ack_wait`` is one constant per subscription, so deliveries armed in hand-out order fall due
in that order: a FIFO whose finished head is dropped at once, instead of a heap that would hold
every finished delivery (and its record) for ``ack_wait``. Only a delivery that ``in_progress``
extended past its first deadline moves to a small heap.
"""

from __future__ import annotations

import heapq
import itertools
import time
from collections import deque
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from agentflow.brokers.kafka_delivery import KafkaDelivery

__all__ = ["AckDeadlines"]


def _moot(d: KafkaDelivery) -> bool:
    """Nothing to enforce any more: finished, handed out again, or its partition is leaving."""
    part = d.part
    return d.finished or d.superseded or not part.live or part.revoking


class AckDeadlines:
    """Deliveries armed with ``ack_wait``; reports those that outlived it without news."""

    def __init__(self, ack_wait: float) -> None:
        self.ack_wait = ack_wait
        self._armed: deque[tuple[float, KafkaDelivery]] = deque()
        self._extended: list[tuple[float, int, KafkaDelivery]] = []
        self._seq = itertools.count()

    def arm(self, d: KafkaDelivery, now: float | None = None) -> None:
        """Start ``d``'s deadline now (``now``: a clock reading the caller already took)."""
        if self.ack_wait > 0:
            d.deadline = (time.monotonic() if now is None else now) + self.ack_wait
            self._armed.append((d.deadline, d))

    def expired(self, now: float | None = None) -> list[KafkaDelivery]:
        """Deliveries past their deadline, neither finished nor extended; each reported once."""
        if now is None:
            now = time.monotonic()
        out: list[KafkaDelivery] = []
        armed = self._armed
        while armed:
            due, d = armed[0]
            if _moot(d):
                armed.popleft()
                continue
            if due > now:
                break
            armed.popleft()
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
