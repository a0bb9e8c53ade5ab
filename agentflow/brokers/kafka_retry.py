"""Retry tiers: Kafka has no per-message nak, so a retry is a delayed copy on a tier topic.

``nak(delay)`` writes a copy of the message to ``<topic>.retry.<n>`` and marks the original
done. Tier ``n`` has a nominal delay (``retry_delays``, default 1 s, 10 s, 60 s); a retry
goes to the tier with the smallest nominal delay >= the requested delay (the last tier for
anything longer). A tier partition is consumed in order and paused until its head is due,
so grouping retries by delay keeps a short retry from waiting behind a much longer one.

The copy keeps the original payload, key and headers, and adds:

- ``af-attempt`` - the attempt number of the redelivery (delivery_count + 1),
- ``af-not-before`` - epoch milliseconds before which it must not be handed out,
- ``af-retry-group`` - the consumer group that asked for the retry (tier topics are shared
  by every group consuming the topic; the other groups skip the copy),
- ``af-retry-origin`` - ``<topic>:<partition>:<offset>`` of the original record, so the
  position, the fallback id and the DLQ annotations keep pointing at the original (a copy of
  a copy still points at the first record).

The last three are Kafka plumbing: deliveries do not show them to handlers.
"""

from __future__ import annotations

import bisect
import time
from collections.abc import Sequence

__all__ = [
    "ATTEMPT",
    "INTERNAL_HEADERS",
    "NOT_BEFORE",
    "RETRY_GROUP",
    "RETRY_ORIGIN",
    "choose_tier",
    "format_origin",
    "not_before_ms",
    "parse_origin",
    "retry_headers",
]

ATTEMPT = "af-attempt"
NOT_BEFORE = "af-not-before"
RETRY_GROUP = "af-retry-group"
RETRY_ORIGIN = "af-retry-origin"
INTERNAL_HEADERS = frozenset({NOT_BEFORE, RETRY_GROUP, RETRY_ORIGIN})


def choose_tier(delay: float, delays: Sequence[float]) -> int:
    """The 1-based tier for ``delay`` seconds: smallest nominal delay >= it, else the last."""
    if not delays:
        raise ValueError("no retry tiers configured")
    return min(bisect.bisect_left(list(delays), max(delay, 0.0)), len(delays) - 1) + 1


def format_origin(topic: str, partition: int, offset: int) -> str:
    """The ``af-retry-origin`` value of a record."""
    return f"{topic}:{partition}:{offset}"


def parse_origin(value: str | None) -> tuple[str, int, int] | None:
    """``(topic, partition, offset)`` from an ``af-retry-origin`` value; None if absent/garbled."""
    if not value:
        return None
    topic, _, rest = value.rpartition(":")
    topic, _, partition = topic.rpartition(":")
    try:
        return (topic, int(partition), int(rest)) if topic else None
    except ValueError:
        return None


def not_before_ms(headers: dict[str, str]) -> int:
    """The ``af-not-before`` of a copy (0 = due now, also when absent or garbled)."""
    try:
        return max(int(headers.get(NOT_BEFORE, "0")), 0)
    except ValueError:
        return 0


def retry_headers(
    headers: dict[str, str],
    *,
    attempt: int,
    delay: float,
    group: str,
    origin: str,
    now_ms: int | None = None,
) -> dict[str, str]:
    """The headers of a retry copy: the original ones plus the retry annotations."""
    now = time.time_ns() // 1_000_000 if now_ms is None else now_ms
    out = dict(headers)
    out[ATTEMPT] = str(attempt)
    out[NOT_BEFORE] = str(now + max(int(delay * 1000), 0))
    out[RETRY_GROUP] = group
    out[RETRY_ORIGIN] = origin
    return out
