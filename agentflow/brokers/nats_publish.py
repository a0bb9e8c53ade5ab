"""Windowed JetStream publishing: send many messages, then wait for every PubAck.

nats-py's ``publish_async`` leaks its future and window slot when the underlying publish
raises (oversized message, full reconnect buffer), so this module keeps its own reply inbox and
futures: each message is sent with a reply subject, the PubAck resolves its future, and a
message whose PubAck does not come back in time is sent again with the same ``Nats-Msg-Id``
(the stream drops the copy if the first one had landed).

The hot path is per message, so it avoids nats-py's per-header work: the ``NATS/1.0`` header
block is encoded once per message here (keys validated once per distinct key) and written as a
finished ``HPUB`` command (:mod:`agentflow.brokers.nats_wire`). The reply inbox, the window
and the PubAcks awaited are :mod:`agentflow.brokers.nats_pubacks`'s.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import NamedTuple

import nats.errors
from nats.aio.client import Client
from nats.js.errors import APIError

from agentflow import _native
from agentflow.brokers.base import BrokerError, OutMessage, PublishError
from agentflow.brokers.nats_pubacks import (
    NoStream,
    PubAcks,
    Retryable,
    Sent,
    Unanswered,
)
from agentflow.brokers.nats_streams import StreamMapper, validate_subject
from agentflow.brokers.nats_wire import encode_headers, send_commands

log = logging.getLogger("agentflow.brokers.nats")

MSG_ID_HEADER = "Nats-Msg-Id"
KEY_HEADER = "af-key"
# One try waits this long for PubAcks before re-sending what is missing.
_TRY_TIMEOUT = 5.0


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
    """A JetStream publish sent and waiting for its PubAck (message ``slot`` of ``sent``)."""

    subject: str
    timeout: float
    sent: Sent
    slot: int


class Publisher:
    """Publishes batches through one reply inbox with a bounded window of pending PubAcks."""

    def __init__(self, nc: Client, streams: StreamMapper, *, window: int, timeout: float) -> None:
        self._nc = nc
        self._streams = streams
        self._timeout = timeout
        self._acks = PubAcks(nc, window=window, timeout=timeout)
        self._valid_topics: set[str] = set()

    async def start(self) -> None:
        """Subscribe to the reply inbox (nats-py re-subscribes it after a reconnect)."""
        await self._acks.start()

    async def stop(self) -> None:
        """Fail whatever still waits and drop the inbox."""
        await self._acks.stop()

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
            frames = [(subject, b"", payload) for subject, payload in messages]
            await send_commands(
                self._nc,
                [_native.nats_pub_commands(frames, "", 0)],
                sum(len(payload) for _, payload in messages),
                len(frames),
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
        return [
            Request(subject, timeout, sent, i)
            for sent, part in await self.send_writes(messages, timeout)
            for i, (subject, _, _) in enumerate(part)
        ]

    async def send_writes(
        self, messages: Sequence[tuple[str, bytes, bytes]], timeout: float = _TRY_TIMEOUT
    ) -> list[tuple[Sent, Sequence[tuple[str, bytes, bytes]]]]:
        """``send_requests`` without a ``Request`` per message: each write's ``Sent`` and the
        messages it carried, in order (``Sent.answers`` holds their PubAcks as they come)."""
        timeout = min(timeout, self._timeout)
        deadline = time.monotonic() + timeout
        writes: list[tuple[Sent, Sequence[tuple[str, bytes, bytes]]]] = []
        done = 0
        while done < len(messages):
            subject = messages[done][0]
            fits = await self._acks.room_for(len(messages) - done, deadline)
            if not self._nc.is_connected or fits <= 0:
                raise PublishError(f"cannot publish to {subject!r}: NATS is not connected")
            frames = messages[done : done + fits]
            try:
                sent = await self._acks.send(frames, deadline)
            except nats.errors.Error as exc:
                raise PublishError(f"cannot publish to {subject!r}: {exc!r}") from None
            writes.append((sent, frames))
            done += len(frames)
        return writes

    @property
    def request_timeout(self) -> float:
        """How long a request sent with the default timeout waits for its PubAck."""
        return min(_TRY_TIMEOUT, self._timeout)

    @staticmethod
    async def answer(request: Request) -> None:
        """Wait until a request sent with :meth:`send_request` is stored.

        Raises :class:`APIError` when JetStream refuses it (e.g. a wrong expected sequence),
        :class:`PublishError` when it is not answered within the request's timeout.
        """
        sent = request.sent
        if sent.answers[request.slot] is None:
            await sent.done  # shared by the requests of one write (all the caller's)
        answer = sent.answers[request.slot]
        if isinstance(answer, Unanswered):
            raise PublishError(f"no PubAck for {request.subject!r} within {request.timeout:g}s")
        if isinstance(answer, (NoStream, Retryable)):
            raise PublishError(f"no stream accepts {request.subject!r} right now ({answer!r})")
        if isinstance(answer, Exception):
            raise answer

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
    ) -> tuple[list[tuple[list[int], Sent]], list[int]]:
        """Send ``pending`` (as far as the connection and window allow), a window's worth
        per write: the indexes of each write and its answers, and what was not sent."""
        expires = min(deadline, time.monotonic() + _TRY_TIMEOUT)
        writes: list[tuple[list[int], Sent]] = []
        done = 0
        try:
            while done < len(pending):
                left = pending[done:]
                # Reconnecting: don't pile messages into the client's reconnect buffer.
                fits = await self._acks.room_for(len(left), deadline)
                if not self._nc.is_connected or fits <= 0:
                    return writes, left
                chunk = left[:fits]
                frames = [(items[i].topic, items[i].header_block, items[i].payload) for i in chunk]
                try:
                    sent = await self._acks.send(frames, expires)
                except (
                    nats.errors.OutboundBufferLimitError,
                    nats.errors.ConnectionReconnectingError,
                ):
                    return writes, left
                except nats.errors.Error as exc:
                    raise PublishError(f"cannot publish to {frames[0][0]!r}: {exc!r}") from None
                writes.append((chunk, sent))
                done += len(chunk)
        except BaseException:
            for _, sent in writes:
                self._acks.abandon(sent)
            raise
        return writes, []

    async def _try(
        self, items: list[_Prepared], pending: list[int], deadline: float
    ) -> tuple[list[int], int]:
        """Send ``pending`` once and wait for their PubAcks.

        Returns what must be sent again and how many of those were sent but not answered.
        """
        if self._nc.is_closed:
            raise PublishError("NATS connection is closed")
        writes, unsent = await self._send_all(items, pending, deadline)
        try:
            for _, sent in writes:
                await sent.done
        except BaseException:
            for _, sent in writes:
                self._acks.abandon(sent)
            raise
        failures = [
            (i, answer)
            for chunk, sent in writes
            for i, answer in zip(chunk, sent.answers, strict=True)
            if isinstance(answer, Exception)
        ]
        if not failures:
            return unsent, 0
        retry: list[int] = []
        unanswered = 0
        error: PublishError | None = None
        for i, failure in failures:
            item = items[i]
            if isinstance(failure, Unanswered):
                retry.append(i)
                unanswered += 1
            elif isinstance(failure, NoStream):
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
            elif isinstance(failure, Retryable):
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
