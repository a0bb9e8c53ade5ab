"""Group-membership plumbing of a Kafka subscription: the rebalance listener and commits."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable, Iterable
from typing import Any

from agentflow.brokers.kafka_attempts import encode
from agentflow.brokers.kafka_delivery import Part

log = logging.getLogger("agentflow.kafka")

__all__ = ["COMMIT_TIMEOUT", "commit_parts", "rebalance_listener"]

COMMIT_TIMEOUT = 10.0

Callback = Callable[[Any], Awaitable[None]]


def rebalance_listener(on_revoked: Callback, on_assigned: Callback) -> Any:
    """An aiokafka ConsumerRebalanceListener calling the given coroutines."""
    from aiokafka.abc import ConsumerRebalanceListener

    class Listener(ConsumerRebalanceListener):  # type: ignore[misc]
        """Forwards rebalance callbacks; takes no lock the poll loop could hold."""

        async def on_partitions_revoked(self, revoked: Any) -> None:
            await on_revoked(revoked)

        async def on_partitions_assigned(self, assigned: Any) -> None:
            await on_assigned(assigned)

    return Listener()


async def commit_parts(
    consumer: Any,
    group: str,
    parts: Iterable[Part],
    *,
    force: bool = False,
    timeout: float = COMMIT_TIMEOUT,
) -> None:
    """Commit each live partition's first unfinished offset with its attempt record.

    Only partitions that changed since their last commit, unless ``force``. A failed commit
    (rebalance, broker down) is logged and left for the next one, which carries the same state.
    """
    from aiokafka.errors import OffsetMetadataTooLargeError

    offsets: dict[Any, tuple[int, str]] = {}
    chosen: list[Part] = []
    for part in parts:
        tracker = part.tracker
        if tracker is None or not part.live or not (part.dirty or force):
            continue
        offset = tracker.commit_offset()
        if offset is None:
            continue
        offsets[part.tp] = (offset, encode(offset, tracker.runs()))
        part.dirty = False
        chosen.append(part)
    if not offsets:
        return
    try:
        try:
            # aiokafka retries a commit for as long as the coordinator is unknown (broker
            # down): bound it (asyncio.timeout: no task per commit, one before each hand-out).
            async with asyncio.timeout(timeout):
                await consumer.commit(offsets)
        except OffsetMetadataTooLargeError:
            log.warning("group %s: the cluster refuses attempt records; committing without", group)
            await consumer.commit({tp: (o, "") for tp, (o, _) in offsets.items()})
    except Exception as exc:
        for part in chosen:
            part.dirty = True
        log.warning("group %s: commit failed (%s); will retry", group, exc)
