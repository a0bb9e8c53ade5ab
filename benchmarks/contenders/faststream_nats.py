"""FastStream on NATS JetStream, configured for the same at-least-once behaviour.

- ``PullSub(batch_size=concurrency)``: FastStream runs every message of a fetched batch
  concurrently, so the batch size is its concurrency.
- ``AckPolicy.NACK_ON_ERROR``: ack after the handler (and the result's publish) succeeded,
  nack on error (its default, REJECT_ON_ERROR, terminates the message instead).
- The publisher goes through JetStream (``stream=``) and waits up to 5 s for the PubAck (its
  default is 0.5 s, short enough to turn a busy moment into redeliveries).
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable

from faststream import AckPolicy
from faststream.nats import ConsumerConfig, JStream, NatsBroker, PullSub

from benchmarks.common import ChildSpec, Order, Result, handle

FETCH_TIMEOUT = 0.05  # same as the raw loop


async def run(spec: ChildSpec, ready: Callable[[], None], stop: asyncio.Event) -> None:
    broker = NatsBroker(spec.url, logger=None)  # no per-message access log, like the others
    stream_in = JStream(spec.stream_in, declare=False)
    stream_out = JStream(spec.stream_out, declare=False)
    publisher = broker.publisher(spec.topic_out, stream=stream_out, timeout=5.0)

    @broker.subscriber(
        spec.topic_in,
        stream=stream_in,
        durable=spec.group,
        config=ConsumerConfig(ack_wait=30.0, max_deliver=5, max_ack_pending=4096),
        pull_sub=PullSub(batch_size=spec.concurrency, timeout=FETCH_TIMEOUT),
        ack_policy=AckPolicy.NACK_ON_ERROR,
    )
    @publisher
    async def bench(order: Order) -> Result:
        return handle(order)

    async with broker:
        await broker.start()
        ready()
        await stop.wait()
