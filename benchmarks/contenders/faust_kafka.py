"""faust-streaming on Kafka, at-least-once as faust does it.

The agent awaits each result's delivery (``await (await topic.send(...))``) before moving to the
next event; faust acks an event when the agent moves on and commits acked offsets every
``broker_commit_interval``. ``concurrency`` actors share the input stream. No tables, no web
server, no leader topic.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Callable

import faust

from benchmarks.common import ChildSpec, Order, handle, kafka_bootstrap


async def run(spec: ChildSpec, ready: Callable[[], None], stop: asyncio.Event) -> None:
    app = faust.App(
        f"bench-{spec.group}",
        broker=f"kafka://{kafka_bootstrap(spec.url)}",
        store="memory://",
        datadir=spec.state_dir or None,
        web_enabled=False,
        topic_disable_leader=True,
        topic_partitions=spec.partitions,
        consumer_auto_offset_reset="earliest",
        producer_acks=-1,
        loghandlers=[],
    )
    app.conf.broker_commit_interval = 1.0
    topic_in = app.topic(spec.topic_in, value_type=bytes, value_serializer="raw")
    topic_out = app.topic(spec.topic_out, value_type=bytes, value_serializer="raw")

    @app.agent(topic_in, concurrency=spec.concurrency)
    async def bench(stream: faust.StreamT[bytes]) -> None:
        async for value in stream:
            result = handle(Order.model_validate_json(value))
            delivery = await topic_out.send(value=result.model_dump_json().encode())
            await delivery  # accepted by the broker before this event is acked

    logging.getLogger("faust").setLevel(logging.WARNING)
    logging.getLogger("mode").setLevel(logging.WARNING)
    await app.start()
    try:
        ready()
        await stop.wait()
    finally:
        with contextlib.suppress(Exception):
            await asyncio.wait_for(app.stop(), timeout=20.0)
