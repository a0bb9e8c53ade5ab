"""agentflow: one agent, at-least-once (``agentflow``) or with an idempotency key
(``agentflow-idem``), configured as a user would: decorator, pydantic input, model output."""

from __future__ import annotations

import asyncio
import logging
import os
from collections.abc import Callable

import agentflow
from agentflow import App
from benchmarks.common import ChildSpec, Order, Result, handle


async def run(spec: ChildSpec, ready: Callable[[], None], stop: asyncio.Event) -> None:
    if spec.state_dir:
        os.environ["AGENTFLOW_STATE_DIR"] = spec.state_dir  # SQLite store on Kafka
    idem = spec.contender.endswith("-idem")
    logging.getLogger("benchmarks").warning("agentflow imported from %s", agentflow.__file__)
    app = App("bench", broker=spec.url, grace_period=10.0)

    @app.agent(
        consumes=spec.topic_in,
        produces=spec.topic_out,
        name="bench",
        group=spec.group,
        concurrency=spec.concurrency,
        idempotency_key="id" if idem else None,
    )
    async def bench(order: Order) -> Result:
        return handle(order)

    async with app:
        ready()
        await stop.wait()
