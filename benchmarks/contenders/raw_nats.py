"""Hand-tuned nats-py loop: fetch up to 256 (50 ms), ``publish_async`` each result, and ack each
input once its result's PubAck arrived (a separate task acks in order, bounded window)."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Callable

import nats
from nats.aio.msg import Msg
from nats.js import api

from benchmarks.common import ChildSpec, Order, handle

FETCH_BATCH = 256
FETCH_TIMEOUT = 0.05
WINDOW = 4096  # inputs whose result is published but not yet acknowledged
PUBLISH_TIMEOUT = 5.0  # no PubAck by then: nak the input


async def run(spec: ChildSpec, ready: Callable[[], None], stop: asyncio.Event) -> None:
    nc = await nats.connect(spec.url, connect_timeout=5)
    js = nc.jetstream(publish_async_max_pending=WINDOW)
    await js.add_consumer(
        spec.stream_in,
        api.ConsumerConfig(
            durable_name=spec.group,
            filter_subject=spec.topic_in,
            ack_policy=api.AckPolicy.EXPLICIT,
            ack_wait=30.0,
            max_deliver=5,
            max_ack_pending=WINDOW,
        ),
    )
    psub = await js.pull_subscribe_bind(durable=spec.group, stream=spec.stream_in)
    inflight: asyncio.Queue[tuple[Msg, asyncio.Future[api.PubAck]]] = asyncio.Queue(WINDOW)

    async def acker() -> None:
        while True:
            msg, fut = await inflight.get()
            try:
                await asyncio.wait_for(fut, PUBLISH_TIMEOUT)
            except Exception:
                await msg.nak()
            else:
                await msg.ack()
            inflight.task_done()

    ack_task = asyncio.create_task(acker())
    ready()
    while not stop.is_set():
        try:
            msgs = await psub.fetch(FETCH_BATCH, timeout=FETCH_TIMEOUT)
        except (nats.errors.TimeoutError, TimeoutError):
            continue
        for msg in msgs:
            try:
                result = handle(Order.model_validate_json(msg.data))
            except ValueError:
                await msg.term()
                continue
            fut = await js.publish_async(spec.topic_out, result.model_dump_json().encode())
            await inflight.put((msg, fut))
    # Drain: every published result gets its ack (bounded by the publish timeout).
    with contextlib.suppress(TimeoutError):
        await asyncio.wait_for(inflight.join(), timeout=10.0)
    ack_task.cancel()
    with contextlib.suppress(asyncio.CancelledError):
        await ack_task
    await psub.unsubscribe()
    await nc.drain()
