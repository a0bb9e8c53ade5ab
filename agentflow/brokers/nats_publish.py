"""Windowed JetStream publishing: send many messages, then wait for every PubAck.

nats-py's ``publish_async`` leaks its future and window slot when the underlying publish
raises (oversized message, full reconnect buffer), so this module keeps its own reply inbox and
futures: each message is sent with a reply subject, the PubAck resolves its future, and a
message whose PubAck does not come back in time is sent again with the same ``Nats-Msg-Id``
(the stream drops the copy if the first one had landed).

The hot path is per message, so it avoids nats-py's per-header work: the ``NATS/1.0`` header
block is encoded once per message here (keys validated once per distinct key) and written as a
finished ``HPUB`` command (:mod:`agentflow.brokers.nats_wire`). PubAck futures are awaited
directly; one sweeper task per publisher times out the overdue ones, so no timer is created per
message.
"""

from __future__ import annotations

import asyncio
import itertools
import logging
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any, NamedTuple

import nats.errors
import orjson
from nats.aio.client import Client
from nats.aio.msg import Msg
from nats.aio.subscription import Subscription as NatsSub
from nats.js.errors import APIError

from agentflow.brokers.base import BrokerError, OutMessage, PublishError
from agentflow.brokers.nats_streams import StreamMapper, validate_subject
from agentflow.brokers.nats_wire import encode_headers, pub_command, route_plain, send_commands

log = logging.getLogger("agentflow.brokers.nats")

MSG_ID_HEADER = "Nats-Msg-Id"
KEY_HEADER = "af-key"
# One try waits this long for PubAcks before re-sending what is missing.
_TRY_TIMEOUT = 5.0
# The sweeper looks for overdue PubAcks this often (at most).
_SWEEP_INTERVAL = 0.1

_Ack = dict[str, Any]


class _NoStream(Exception):
    """No stream listens on the subject (the server answered 503 no responders)."""


class _Retryable(Exception):
    """JetStream was briefly unavailable (leader election, restart)."""


class _Unanswered(Exception):
    """No PubAck within the try's deadline."""


@dataclass(slots=True)
class _Prepared:
    topic: str
    payload: bytes
    header_block: bytes
    size: int


def wire_headers(message: OutMessage) -> dict[str, str]:
    """The headers sent for ``message``: its own plus ``Nats-Msg-Id`` and ``af-key``."""
    headers = dict(message.headers)
    msg_id = message.dedup_id or message.headers.get("af-id")
    if msg_id:
        headers[MSG_ID_HEADER] = msg_id
    if message.key is not None and KEY_HEADER not in headers:
        headers[KEY_HEADER] = message.key
    return headers


def _message_headers(message: OutMessage) -> Mapping[str, str]:
    """``wire_headers`` without the copy when nothing is added (the common case adds one)."""
    headers = message.headers
    msg_id = message.dedup_id or headers.get("af-id")
    if (msg_id and headers.get(MSG_ID_HEADER) != msg_id) or (
        message.key is not None and KEY_HEADER not in headers
    ):
        return wire_headers(message)
    return headers


class Request(NamedTuple):
    """A JetStream publish sent and waiting for its PubAck."""

    subject: str
    timeout: float
    future: asyncio.Future[_Ack]


class Publisher:
    """Publishes batches through one reply inbox with a bounded window of pending PubAcks."""

    def __init__(self, nc: Client, streams: StreamMapper, *, window: int, timeout: float) -> None:
        self._nc = nc
        self._streams = streams
        self._window = max(window, 1)
        self._in_flight = 0
        self._room: asyncio.Future[None] | None = None
        self._timeout = timeout
        self._prefix = ""
        self._sub: NatsSub | None = None
        # token -> (future, monotonic time after which the PubAck counts as missing)
        self._waiting: dict[str, tuple[asyncio.Future[_Ack], float]] = {}
        self._tokens = itertools.count()
        self._valid_topics: set[str] = set()
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
        for fut, _ in list(self._waiting.values()):
            if not fut.done():
                fut.set_exception(PublishError("NATS connection closed before the PubAck"))
        self._waiting.clear()
        if self._sub is not None:
            route_plain(self._nc, self._sub._id, None)
            try:
                await self._sub.unsubscribe()
            except nats.errors.Error:
                pass
            self._sub = None

    async def _sweep(self) -> None:
        """Fail PubAck futures past their deadline (one timer for all of them)."""
        while True:
            await asyncio.sleep(max(min(_SWEEP_INTERVAL, self._timeout / 10), 0.005))
            if not self._waiting:
                continue
            now = time.monotonic()
            overdue = [t for t, (f, exp) in self._waiting.items() if exp <= now or f.done()]
            for token in overdue:
                fut, _ = self._waiting.pop(token)
                if not fut.done():
                    fut.set_exception(_Unanswered())

    async def _on_reply(self, msg: Msg) -> None:
        """Resolve the future of the message this PubAck (or error) answers."""
        status = msg.headers.get("Status") if msg.headers else None
        self._resolve(msg.subject[len(self._prefix) + 1 :], msg.data, status)

    def _on_plain_reply(self, subject: bytes, data: bytes) -> None:
        """``_on_reply`` for a header-less reply, handed over by the parser (see route_plain)."""
        self._resolve(subject[len(self._prefix) + 1 :].decode(), data, None)

    def _resolve(self, token: str, data: bytes, status: str | None) -> None:
        entry = self._waiting.pop(token, None)
        if entry is None or entry[0].done():
            return
        fut = entry[0]
        if status == "503":
            fut.set_exception(_NoStream())
            return
        try:
            resp = orjson.loads(data)
        except orjson.JSONDecodeError:
            fut.set_exception(PublishError(f"unreadable PubAck {data[:100]!r}"))
            return
        if not isinstance(resp, dict):
            fut.set_exception(PublishError(f"unreadable PubAck {data[:100]!r}"))
            return
        error = resp.get("error")
        if error:
            if error.get("code") == 503:
                fut.set_exception(_Retryable(error.get("description", "unavailable")))
            else:
                fut.set_exception(
                    APIError(
                        code=error.get("code"),
                        err_code=error.get("err_code"),
                        description=error.get("description"),
                    )
                )
            return
        fut.set_result(resp)

    def _prepare(self, message: OutMessage) -> _Prepared:
        """Validate one message and encode its header block once."""
        topic = message.topic
        if topic not in self._valid_topics:
            try:
                validate_subject(topic, wildcards=False)
            except BrokerError as exc:
                raise PublishError(str(exc)) from None
            self._valid_topics.add(topic)
        try:
            block = encode_headers(_message_headers(message))
        except ValueError as exc:
            raise PublishError(
                f"message to {topic!r} has a header that cannot be sent: {exc}"
            ) from None
        size = len(message.payload) + len(block)
        limit = self._nc.max_payload
        if size > limit:
            raise PublishError(
                f"message to {topic!r} is {size} bytes (payload {len(message.payload)}"
                f" + headers), over the NATS server's max_payload of {limit} bytes"
            )
        return _Prepared(topic, message.payload, block, size)

    def _slot_done(self, _fut: asyncio.Future[_Ack]) -> None:
        self._in_flight -= 1
        room = self._room
        if room is not None:
            self._room = None
            if not room.done():
                room.set_result(None)

    async def _wait_room(self, deadline: float) -> bool:
        """Wait for a free window slot until ``deadline``; False when none came."""
        while self._in_flight >= self._window:
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                return False
            if self._room is None:
                self._room = asyncio.get_running_loop().create_future()
            await asyncio.wait((self._room,), timeout=remaining)
        return True

    async def _send_many(
        self, frames: Sequence[tuple[str, bytes, bytes]], expires: float
    ) -> list[asyncio.Future[_Ack]]:
        """Send (subject, header block, payload) messages in one write; a future for each.

        The caller makes room in the window for all of them (see ``_room_for``).
        """
        loop = asyncio.get_running_loop()
        futures: list[asyncio.Future[_Ack]] = []
        commands: list[bytes] = []
        tokens: list[str] = []
        size = 0
        prefix = self._prefix
        for topic, block, payload in frames:
            token = str(next(self._tokens))
            fut: asyncio.Future[_Ack] = loop.create_future()
            self._waiting[token] = (fut, expires)
            tokens.append(token)
            futures.append(fut)
            commands.append(pub_command(topic, f"{prefix}.{token}", block, payload))
            size += len(payload)
        try:
            await send_commands(self._nc, commands, size)
        except BaseException:
            for token in tokens:
                self._waiting.pop(token, None)
            raise
        self._in_flight += len(futures)
        for fut in futures:
            fut.add_done_callback(self._slot_done)
        return futures

    async def _room_for(self, wanted: int, deadline: float) -> int:
        """Wait for room in the window; how many of ``wanted`` messages fit (0: none came)."""
        if not await self._wait_room(deadline):
            return 0
        return min(wanted, self._window - self._in_flight)

    async def send_unconfirmed(self, subject: str, payload: bytes) -> None:
        """Publish one message without a reply subject: no PubAck is sent or awaited."""
        await self.send_unconfirmed_many([(subject, payload)])

    async def send_unconfirmed_many(self, messages: Sequence[tuple[str, bytes]]) -> None:
        """Publish (subject, payload) messages in one write, without reply subjects."""
        if not messages:
            return
        if not self._nc.is_connected:
            raise PublishError(f"cannot publish to {messages[0][0]!r}: NATS is not connected")
        try:
            await send_commands(
                self._nc,
                [pub_command(subject, "", b"", payload) for subject, payload in messages],
                sum(len(payload) for _, payload in messages),
            )
        except nats.errors.Error as exc:
            raise PublishError(f"cannot publish to {messages[0][0]!r}: {exc!r}") from None

    async def send_request(
        self,
        subject: str,
        payload: bytes,
        headers: Mapping[str, str] | None = None,
        timeout: float = _TRY_TIMEOUT,
    ) -> Request:
        """Send one JetStream publish (no stream lookup, no re-send); :meth:`answer` waits
        for its PubAck.

        Several requests sent first and answered after share one round trip. Raises
        :class:`PublishError` when it cannot be sent.
        """
        block = encode_headers(headers) if headers else b""
        (request,) = await self.send_requests([(subject, block, payload)], timeout)
        return request

    async def send_requests(
        self, messages: Sequence[tuple[str, bytes, bytes]], timeout: float = _TRY_TIMEOUT
    ) -> list[Request]:
        """Send (subject, header block, payload) JetStream publishes as few writes as the
        window allows; :meth:`answer` waits for each PubAck (errors as there)."""
        timeout = min(timeout, self._timeout)
        deadline = time.monotonic() + timeout
        requests: list[Request] = []
        while len(requests) < len(messages):
            subject = messages[len(requests)][0]
            fits = await self._room_for(len(messages) - len(requests), deadline)
            if not self._nc.is_connected or fits <= 0:
                raise PublishError(f"cannot publish to {subject!r}: NATS is not connected")
            frames = messages[len(requests) : len(requests) + fits]
            try:
                futures = await self._send_many(frames, deadline)
            except nats.errors.Error as exc:
                raise PublishError(f"cannot publish to {subject!r}: {exc!r}") from None
            requests.extend(
                Request(f[0], timeout, fut) for f, fut in zip(frames, futures, strict=True)
            )
        return requests

    @staticmethod
    async def answer(request: Request) -> _Ack:
        """The PubAck of a request sent with :meth:`send_request`.

        Raises :class:`APIError` when JetStream refuses it (e.g. a wrong expected sequence),
        :class:`PublishError` when it is not answered within the request's timeout.
        """
        try:
            return await request.future
        except _Unanswered:
            raise PublishError(
                f"no PubAck for {request.subject!r} within {request.timeout:g}s"
            ) from None
        except (_NoStream, _Retryable) as exc:
            raise PublishError(
                f"no stream accepts {request.subject!r} right now ({exc!r})"
            ) from None

    async def publish(self, messages: Sequence[OutMessage]) -> None:
        """Publish ``messages``; return once every one has a PubAck (duplicates included)."""
        if not messages:
            return
        items = [self._prepare(m) for m in messages]
        deadline = time.monotonic() + self._timeout
        for topic in dict.fromkeys(i.topic for i in items):
            if self._streams.cached(topic) is None:
                await self._ensure_stream(topic, deadline)
        pending = list(range(len(items)))
        tries = 0
        while pending:
            tries += 1
            pending, unanswered = await self._try(items, pending, deadline)
            if pending:
                if time.monotonic() >= deadline:
                    topics = sorted({items[i].topic for i in pending})
                    raise PublishError(
                        f"no PubAck for {len(pending)} message(s) to {', '.join(topics)} "
                        f"within {self._timeout:g}s"
                    )
                if unanswered:
                    log.warning("re-sending %d message(s) without a PubAck", unanswered)
                await asyncio.sleep(min(0.05 * 2**tries, 1.0))

    async def _ensure_stream(self, topic: str, deadline: float) -> None:
        """Find or create the stream of ``topic``, waiting out a server that is restarting."""
        tries = 0
        while (transient := await self._lookup(topic)) is not None:
            tries += 1
            if time.monotonic() >= deadline:
                raise PublishError(
                    f"cannot publish to {topic!r}: JetStream did not say which stream holds it "
                    f"within {self._timeout:g}s ({transient!r})"
                )
            await asyncio.sleep(min(0.05 * 2**tries, 1.0))

    async def _lookup(self, topic: str) -> Exception | None:
        """Find or create the stream of ``topic`` once; the error if it may pass, else None.

        A definite refusal raises PublishError; a timeout, no responders, a reconnect or a
        JetStream 503 (starting, electing a leader) is returned for the caller to retry.
        """
        try:
            await self._streams.ensure(topic)
        except BrokerError as exc:
            raise PublishError(f"cannot publish to {topic!r}: {exc}") from None
        except APIError as exc:
            if exc.code != 503:
                raise PublishError(f"cannot publish to {topic!r}: {exc}") from None
            return exc
        except nats.errors.Error as exc:
            return exc
        return None

    async def _send_all(
        self, items: list[_Prepared], pending: list[int], deadline: float
    ) -> tuple[list[tuple[int, asyncio.Future[_Ack]]], list[int]]:
        """Send ``pending`` (as far as the connection and window allow), a window's worth
        per write."""
        expires = min(deadline, time.monotonic() + _TRY_TIMEOUT)
        sent: list[tuple[int, asyncio.Future[_Ack]]] = []
        try:
            while len(sent) < len(pending):
                left = pending[len(sent) :]
                # Reconnecting: don't pile messages into the client's reconnect buffer.
                fits = await self._room_for(len(left), deadline)
                if not self._nc.is_connected or fits <= 0:
                    return sent, left
                chunk = left[:fits]
                frames = [(items[i].topic, items[i].header_block, items[i].payload) for i in chunk]
                try:
                    futures = await self._send_many(frames, expires)
                except (
                    nats.errors.OutboundBufferLimitError,
                    nats.errors.ConnectionReconnectingError,
                ):
                    return sent, left
                except nats.errors.Error as exc:
                    raise PublishError(f"cannot publish to {frames[0][0]!r}: {exc!r}") from None
                sent.extend(zip(chunk, futures, strict=True))
        except BaseException:
            for _, fut in sent:
                fut.cancel()
            raise
        return sent, []

    async def _try(
        self, items: list[_Prepared], pending: list[int], deadline: float
    ) -> tuple[list[int], int]:
        """Send ``pending`` once and wait for their PubAcks.

        Returns what must be sent again and how many of those were sent but not answered.
        """
        if self._nc.is_closed:
            raise PublishError("NATS connection is closed")
        sent, unsent = await self._send_all(items, pending, deadline)
        failures: list[tuple[int, BaseException]] = []
        try:
            for i, fut in sent:
                try:
                    await fut
                except Exception as exc:
                    failures.append((i, exc))
        except BaseException:
            for _, fut in sent:
                fut.cancel()
            raise
        if not failures:
            return unsent, 0
        retry: list[int] = []
        unanswered = 0
        error: PublishError | None = None
        for i, failure in failures:
            item = items[i]
            if isinstance(failure, _Unanswered):
                retry.append(i)
                unanswered += 1
            elif isinstance(failure, _NoStream):
                # The stream vanished (deleted by an operator?): find or create it again.
                # Also what a restarting server says before JetStream has loaded its streams.
                self._streams.forget(item.topic)
                try:
                    transient = await self._lookup(item.topic)
                except PublishError as err:
                    error = error or err
                else:
                    if transient is not None:
                        log.warning(
                            "cannot look up the stream of %r yet (%r)", item.topic, transient
                        )
                retry.append(i)
            elif isinstance(failure, _Retryable):
                retry.append(i)
            elif isinstance(failure, APIError):
                error = error or PublishError(
                    f"NATS refused the message to {item.topic!r} ({item.size} bytes): "
                    f"{failure.description} (error {failure.err_code})"
                )
            else:
                error = error or PublishError(f"publish to {item.topic!r} failed: {failure}")
        if error is not None:
            raise error
        return sorted(retry + unsent), unanswered
