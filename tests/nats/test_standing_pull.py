"""StandingPull: the pull consumer's inbox read directly, without nats-py's per-call tasks."""

from __future__ import annotations

import asyncio
import time

import nats
import nats.errors
import pytest
from nats.aio.client import Client

from agentflow.brokers.nats_pull import StandingPull

pytestmark = pytest.mark.nats


async def _pull_for(nats_url: str, prefix: str) -> tuple[Client, StandingPull]:
    nc = await nats.connect(nats_url)
    js = nc.jetstream()
    await js.add_stream(name=f"{prefix}_S", subjects=[f"{prefix}.>"])
    psub = await js.pull_subscribe(f"{prefix}.in", durable="standing")
    return nc, StandingPull(nc, psub)


async def test_a_waiting_pull_gets_the_message_without_a_task_per_call(
    nats_url: str, prefix: str
) -> None:
    nc, pull = await _pull_for(nats_url, prefix)
    try:
        idle = len(asyncio.all_tasks())  # this test's and the connection's own
        waiting = asyncio.create_task(pull.pull(10, 5.0))
        await asyncio.sleep(0.2)  # the request is out; the pull waits on the inbox
        assert not waiting.done()
        # nats-py's next_msg would hold two more tasks (its getter and wait_for's).
        assert len(asyncio.all_tasks()) == idle + 1, [t.get_coro() for t in asyncio.all_tasks()]
        await nc.jetstream().publish(f"{prefix}.in", b"one")
        got = await asyncio.wait_for(waiting, 5.0)
        assert [m.data for m in got] == [b"one"]
        assert pull._sub._pending_size == 0, "the inbox's byte count follows what was taken"
    finally:
        await nc.close()


async def test_an_empty_pull_times_out_and_a_closed_connection_is_said(
    nats_url: str, prefix: str
) -> None:
    nc, pull = await _pull_for(nats_url, prefix)
    started = time.monotonic()
    assert await pull.pull(10, 0.3) == []
    assert time.monotonic() - started >= 0.25, "waited for the timeout"
    await nc.close()
    with pytest.raises(nats.errors.ConnectionClosedError):
        await pull.pull(10, 0.3)


async def test_messages_trickling_in_do_not_each_cost_a_pull_request(
    nats_url: str, prefix: str
) -> None:
    nc, pull = await _pull_for(nats_url, prefix)
    js = nc.jetstream()
    requests = 0
    original = pull._request

    async def counting(count: int) -> None:
        nonlocal requests
        requests += 1
        await original(count)

    pull._request = counting  # type: ignore[method-assign]
    try:
        for i in range(20):  # one at a time, as at a low rate: each fetch takes one
            waiting = asyncio.create_task(pull.pull(10, 5.0))
            await asyncio.sleep(0.01)
            await js.publish(f"{prefix}.in", str(i).encode())
            got = await asyncio.wait_for(waiting, 5.0)
            assert [m.data for m in got] == [str(i).encode()]
            await got[0].ack()
        # A request is topped up once half of it is used: 20 messages, 10 at a time.
        assert 2 <= requests <= 5, requests
    finally:
        await nc.close()
