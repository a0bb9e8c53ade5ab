"""PubAcks: one future per write, the window freed as answers come, nothing left waiting."""

from __future__ import annotations

import asyncio
import time
from typing import Any

from nats.js.errors import APIError

from agentflow.brokers.base import PublishError
from agentflow.brokers.nats_pubacks import PubAcks, Unanswered


class _Client:
    """What PubAcks needs of a nats-py client: a command queue and its counters."""

    is_closed = False
    is_draining_pubs = False
    _flush_queue = None

    def __init__(self) -> None:
        self.stats = {"out_msgs": 0, "out_bytes": 0}
        self.written: list[bytes] = []

    async def _send_command(self, cmd: bytes, priority: bool = False) -> None:
        self.written.append(cmd)


def _acks(window: int = 10) -> tuple[_Client, PubAcks]:
    nc = _Client()
    acks = PubAcks(nc, window=window, timeout=5.0)  # type: ignore[arg-type]
    acks._prefix = "_INBOX.t"  # what start() subscribes to
    return nc, acks


def _reply(acks: PubAcks, token: int, data: bytes) -> None:
    acks._on_plain_reply(f"_INBOX.t.{token}".encode(), data)


async def test_a_write_has_one_future_resolved_by_its_last_puback() -> None:
    nc, acks = _acks()
    frames: list[tuple[str, bytes, bytes]] = [("a", b"", b"1"), ("b", b"", b"22"), ("c", b"", b"")]
    sent = await acks.send(frames, time.monotonic() + 5)
    assert nc.written == [
        b"PUB a _INBOX.t.0 1\r\n1\r\nPUB b _INBOX.t.1 2\r\n22\r\nPUB c _INBOX.t.2 0\r\n\r\n"
    ]
    assert nc.stats["out_msgs"] == 3 and acks.in_flight == 3
    _reply(acks, 2, b'{"stream":"S","seq":3}')
    _reply(acks, 0, b'{"error":{"code":400,"err_code":10071,"description":"wrong last sequence"}}')
    assert not sent.done.done() and acks.in_flight == 1
    _reply(acks, 1, b'{"stream":"S","seq":2,"duplicate":true}')
    await asyncio.wait_for(sent.done, 1.0)
    first: Any = sent.answers[0]
    assert isinstance(first, APIError) and first.err_code == 10071
    assert isinstance(sent.answers[1], dict) and isinstance(sent.answers[2], dict)
    assert acks.in_flight == 0
    _reply(acks, 1, b"{}")  # a late duplicate answer changes nothing
    _reply(acks, 99, b"{}")  # nor does one for a token never sent
    assert acks.in_flight == 0


async def test_abandoning_a_write_frees_its_slots_and_late_answers_are_dropped() -> None:
    _, acks = _acks(window=2)
    sent = await acks.send([("a", b"", b"1"), ("b", b"", b"2")], time.monotonic() + 5)
    assert await acks.room_for(1, time.monotonic() + 0.05) == 0, "the window is full"
    _reply(acks, 0, b"{}")
    acks.abandon(sent)
    assert acks.in_flight == 0
    _reply(acks, 1, b"{}")
    assert sent.answers[1] is None and not sent.done.done()


async def test_overdue_pubacks_are_answered_unanswered_by_the_sweeper() -> None:
    _, acks = _acks()
    acks.timeout = 0.05
    sweeper = asyncio.create_task(acks._sweep())
    try:
        sent = await acks.send([("a", b"", b"1")], time.monotonic() + 0.05)
        await asyncio.wait_for(sent.done, 2.0)
        assert isinstance(sent.answers[0], Unanswered) and acks.in_flight == 0
    finally:
        sweeper.cancel()


async def test_stop_answers_what_waits_and_wakes_whoever_waits_for_room() -> None:
    _, acks = _acks(window=1)
    sent = await acks.send([("a", b"", b"1")], time.monotonic() + 5)
    waiting = asyncio.create_task(acks.room_for(1, time.monotonic() + 5))
    await asyncio.sleep(0.01)
    assert not waiting.done()
    await acks.stop()
    assert await asyncio.wait_for(waiting, 1.0) == 1
    assert isinstance(sent.answers[0], PublishError) and sent.done.done()
