"""The PubAcks a JetStream publisher waits for: one reply inbox, a window, one sweeper.

Every message is sent with a reply subject ``<inbox>.<token>`` (consecutive integers). The
messages sent in one write form a :class:`Sent` group: each PubAck fills its message's slot
and the group's single future resolves once all are in, so a batch costs one future, not one
per message (nor a callback each). At most ``window`` messages wait at a time; one sweeper
task answers the overdue ones with :class:`Unanswered`, so no timer is made per message.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Sequence
from typing import Any

import nats.errors
import orjson
from nats.aio.client import Client
from nats.aio.msg import Msg
from nats.aio.subscription import Subscription as NatsSub
from nats.js.errors import APIError

from agentflow import _native
from agentflow.brokers.base import PublishError
from agentflow.brokers.nats_parser import route_plain
from agentflow.brokers.nats_wire import send_commands

__all__ = ["Ack", "NoStream", "PubAcks", "Retryable", "Sent", "Unanswered"]

# The sweeper looks for overdue PubAcks this often (at most).
_SWEEP_INTERVAL = 0.1

Ack = dict[str, Any]
# The answer recorded for every stored message (its PubAck's fields are not read).
_STORED: Ack = {}


class NoStream(Exception):
    """No stream listens on the subject (the server answered 503 no responders)."""


class Retryable(Exception):
    """JetStream was briefly unavailable (leader election, restart)."""


class Unanswered(Exception):
    """No PubAck within the try's deadline."""


class Sent:
    """Messages sent in one write: the answer of each (a PubAck or an error) as it comes."""

    __slots__ = ("answers", "done", "first", "left")

    def __init__(self, first: int, n: int, loop: asyncio.AbstractEventLoop) -> None:
        self.first = first  # token of the first message; the others follow it
        self.answers: list[Ack | Exception | None] = [None] * n
        self.left = n
        self.done: asyncio.Future[None] = loop.create_future()

    def answer(self, index: int, answer: Ack | Exception) -> None:
        """Record the answer of message ``index``; the last one resolves ``done``."""
        self.answers[index] = answer
        self.left -= 1
        if self.left == 0 and not self.done.done():
            self.done.set_result(None)


class PubAcks:
    """The reply inbox of one connection and the PubAcks awaited on it."""

    def __init__(self, nc: Client, *, window: int, timeout: float) -> None:
        self._nc = nc
        self.window = max(window, 1)
        self.timeout = timeout
        self.in_flight = 0
        self._room: asyncio.Future[None] | None = None
        self._prefix = ""
        self._sub: NatsSub | None = None
        # token -> (its group, its index there, monotonic time after which it is overdue)
        self._waiting: dict[int, tuple[Sent, int, float]] = {}
        self._next_token = 0
        self._sweeper: asyncio.Task[None] | None = None

    async def start(self) -> None:
        """Subscribe to the reply inbox (nats-py re-subscribes it after a reconnect)."""
        self._prefix = self._nc.new_inbox()
        self._sub = await self._nc.subscribe(f"{self._prefix}.*", cb=self._on_reply)
        # PubAcks come without headers: resolved straight from the parser (errors with a
        # status header still arrive through _on_reply).
        route_plain(self._nc, self._sub._id, self._on_plain_reply)
        self._sweeper = asyncio.create_task(self._sweep())

    async def stop(self) -> None:
        """Fail whatever still waits and drop the inbox."""
        if self._sweeper is not None:
            self._sweeper.cancel()
            self._sweeper = None
        closed = PublishError("NATS connection closed before the PubAck")
        for sent, index, _ in list(self._waiting.values()):
            sent.answer(index, closed)
        self._waiting.clear()
        self._free(self.in_flight)  # and wake whoever waits for room
        if self._sub is not None:
            route_plain(self._nc, self._sub._id, None)
            try:
                await self._sub.unsubscribe()
            except nats.errors.Error:
                pass
            self._sub = None

    async def send(self, frames: Sequence[tuple[str, bytes, bytes]], expires: float) -> Sent:
        """Send (subject, header block, payload) messages in one write, each awaiting its
        PubAck until ``expires`` (monotonic). The caller made room for them (``room_for``)."""
        n = len(frames)
        first = self._next_token
        self._next_token += n
        sent = Sent(first, n, asyncio.get_running_loop())
        data = _native.nats_pub_commands(list(frames), self._prefix, first)
        waiting = self._waiting
        for index in range(n):
            waiting[first + index] = (sent, index, expires)
        try:
            await send_commands(self._nc, [data], sum(len(f[2]) for f in frames), n)
        except BaseException:
            for token in range(first, first + n):
                waiting.pop(token, None)
            raise
        self.in_flight += n
        return sent

    def abandon(self, sent: Sent) -> None:
        """Stop waiting for the PubAcks ``sent`` still lacks (its caller gave up on it)."""
        for token in range(sent.first, sent.first + len(sent.answers)):
            if self._waiting.pop(token, None) is not None:
                self._free(1)

    async def room_for(self, wanted: int, deadline: float) -> int:
        """Wait for room in the window; how many of ``wanted`` messages fit (0: none came)."""
        while self.in_flight >= self.window:
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                return 0
            if self._room is None:
                self._room = asyncio.get_running_loop().create_future()
            await asyncio.wait((self._room,), timeout=remaining)
        return min(wanted, self.window - self.in_flight)

    def _free(self, n: int) -> None:
        self.in_flight -= n
        room = self._room
        if room is not None:
            self._room = None
            if not room.done():
                room.set_result(None)

    async def _sweep(self) -> None:
        """Answer overdue PubAcks with Unanswered (one timer for all of them)."""
        while True:
            await asyncio.sleep(max(min(_SWEEP_INTERVAL, self.timeout / 10), 0.005))
            if not self._waiting:
                continue
            now = time.monotonic()
            overdue = [t for t, (_, _, expires) in self._waiting.items() if expires <= now]
            for token in overdue:
                sent, index, _ = self._waiting.pop(token)
                sent.answer(index, Unanswered())
                self._free(1)

    async def _on_reply(self, msg: Msg) -> None:
        """Record the PubAck (or error) of the message this reply answers."""
        status = msg.headers.get("Status") if msg.headers else None
        self._resolve(msg.subject[len(self._prefix) + 1 :].encode(), msg.data, status)

    def _on_plain_reply(self, subject: bytes, data: bytes) -> None:
        """``_on_reply`` for a header-less reply, handed over by the parser (see route_plain)."""
        self._resolve(subject[len(self._prefix) + 1 :], data, None)

    def _resolve(self, token: bytes, data: bytes, status: str | None) -> None:
        """Record a reply's answer. Runs for every PubAck: the window is freed inline."""
        try:
            entry = self._waiting.pop(int(token), None)
        except ValueError:
            return  # not a token of ours
        if entry is None:
            return  # answered late (swept) or abandoned
        sent, index, _ = entry
        self.in_flight -= 1
        if self._room is not None:
            self._free(0)
        if status is None and data[:1] == b"{" and b'"error"' not in data:
            # Stored (the usual case): nobody reads a PubAck's fields, so it is not decoded.
            sent.answer(index, _STORED)
        else:
            sent.answer(index, _answer(data, status))


def _answer(data: bytes, status: str | None) -> Ack | Exception:
    """A reply as the PubAck it is, or the error it says."""
    if status == "503":
        return NoStream()
    try:
        resp = orjson.loads(data)
    except orjson.JSONDecodeError:
        resp = None
    if not isinstance(resp, dict):
        return PublishError(f"unreadable PubAck {data[:100]!r}")
    error = resp.get("error")
    if not error:
        return resp
    if error.get("code") == 503:
        return Retryable(error.get("description", "unavailable"))
    return APIError(
        code=error.get("code"),
        err_code=error.get("err_code"),
        description=error.get("description"),
    )
