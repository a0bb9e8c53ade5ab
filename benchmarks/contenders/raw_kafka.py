"""Hand-tuned aiokafka loop: ``getmany`` up to 256, send every result, wait until the broker
accepted them all (acks=all, idempotent producer), then commit the batch's offsets."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Callable

from aiokafka import AIOKafkaConsumer, AIOKafkaProducer, TopicPartition

from benchmarks.common import ChildSpec, Order, handle, kafka_bootstrap

MAX_RECORDS = 256
POLL_MS = 50


async def run(spec: ChildSpec, ready: Callable[[], None], stop: asyncio.Event) -> None:
    bootstrap = kafka_bootstrap(spec.url)
    consumer = AIOKafkaConsumer(
        spec.topic_in,
        bootstrap_servers=bootstrap,
        group_id=spec.group,
        enable_auto_commit=False,
        auto_offset_reset="earliest",
    )
    producer = AIOKafkaProducer(bootstrap_servers=bootstrap, acks="all", enable_idempotence=True)
    await producer.start()
    await consumer.start()
    ready()
    try:
        while not stop.is_set():
            batch = await consumer.getmany(timeout_ms=POLL_MS, max_records=MAX_RECORDS)
            if not batch:
                continue
            sends = []
            offsets: dict[TopicPartition, int] = {}
            for tp, records in batch.items():
                for rec in records:
                    try:
                        result = handle(Order.model_validate_json(rec.value))
                    except ValueError:
                        continue  # not ours to retry: skip it
                    payload = result.model_dump_json().encode()
                    sends.append(await producer.send(spec.topic_out, payload))
                offsets[tp] = records[-1].offset + 1
            await asyncio.gather(*sends)  # every result accepted by the broker ...
            await consumer.commit(offsets)  # ... before its inputs are committed
    finally:
        with contextlib.suppress(Exception):
            await consumer.stop()
        await producer.stop()
