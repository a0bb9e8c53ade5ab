"""FastStream on Kafka, configured for the same at-least-once behaviour.

- ``AckPolicy.NACK_ON_ERROR``: auto-commit off, the offset is committed after the handler (and
  the result's publish) succeeded; on error the offset is not committed (seek back). Its default
  on Kafka, ACK_FIRST, commits before processing.
- With manual commits FastStream runs one consumer per worker (``max_workers``), each handling
  one message at a time, so its concurrency is bounded by the partition count.
- The producer waits for ``acks=all`` with idempotence, like the raw client and agentflow.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable

from faststream import AckPolicy
from faststream.kafka import KafkaBroker

from benchmarks.common import ChildSpec, Order, Result, handle, kafka_bootstrap


async def run(spec: ChildSpec, ready: Callable[[], None], stop: asyncio.Event) -> None:
    broker = KafkaBroker(
        kafka_bootstrap(spec.url), acks="all", enable_idempotence=True, logger=None
    )
    publisher = broker.publisher(spec.topic_out)

    @broker.subscriber(
        spec.topic_in,
        group_id=spec.group,
        auto_offset_reset="earliest",
        ack_policy=AckPolicy.NACK_ON_ERROR,
        max_workers=max(1, min(spec.concurrency, spec.partitions)),
    )
    @publisher
    async def bench(order: Order) -> Result:
        return handle(order)

    async with broker:
        await broker.start()
        ready()
        await stop.wait()
