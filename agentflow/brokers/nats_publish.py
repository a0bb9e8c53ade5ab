"""Windowed JetStream publishing: send many messages, then wait for every PubAck.

nats-py's ``publish_async`` leaks its future and window slot when the underlying publish
raises (oversized message, full reconnect buffer), so this module keeps its own reply inbox and
futures: each message is sent with a reply subject, the PubAck resolves its future, and a
message whose PubAck does not come back in time is sent again with the same ``Nats-Msg-Id``
(the stream drops the copy if the first one had landed).
"""

from __future__ import annotations

import asyncio
import itertools
import logging
import re
import time
from collections.abc import Sequence
from dataclasses import dataclass

import nats.errors
import orjson
from nats.aio.client import Client
from nats.aio.msg import Msg
from nats.aio.subscription import Subscription as NatsSub
from nats.js.errors import APIError

from agentflow.brokers.base import BrokerError, OutMessage, PublishError
from agentflow.brokers.nats_streams import StreamMapper, validate_subject

log = logging.getLogger("agentflow.brokers.nats")

MSG_ID_HEADER = "Nats-Msg-Id"
KEY_HEADER = "af-key"
# One try waits this long for PubAcks before re-sending what is missing.
_TRY_TIMEOUT = 5.0
_HDR_OVERHEAD = len(b"NATS/1.0\r\n\r\n")
_BAD_KEY = re.compile(r"[:\s]")


class _NoStream(Exception):
    """No stream listens on the subject (the server answered 503 no responders)."""


class _Retryable(Exception):
    """JetStream was briefly unavailable (leader election, restart)."""


@dataclass(slots=True)
class _Prepared:
    topic: str
    payload: bytes
    headers: dict[str, str]
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


def wire_size(payload: bytes, headers: dict[str, str]) -> int:
    """Bytes the server counts against ``max_payload``: header block plus payload."""
    hdr = sum(len(k.encode()) + len(v.encode()) + 4 for k, v in headers.items())
    return len(payload) + (hdr + _HDR_OVERHEAD if headers else 0)


class Publisher:
    """Publishes batches through one reply inbox with a bounded window of pending PubAcks."""

    def __init__(self, nc: Client, streams: StreamMapper, *, window: int, timeout: float) -> None:
        self._nc = nc
        self._streams = streams
        self._window = asyncio.Semaphore(window)
        self._timeout = timeout
        self._prefix = ""
        self._sub: NatsSub | None = None
        self._futures: dict[str, asyncio.Future[None]] = {}
        self._tokens = itertools.count()
        self._valid_topics: set[str] = set()

    async def start(self) -> None:
        """Subscribe to the reply inbox (nats-py re-subscribes it after a reconnect)."""
        self._prefix = self._nc.new_inbox()
        self._sub = await self._nc.subscribe(f"{self._prefix}.*", cb=self._on_reply)

    async def stop(self) -> None:
        """Fail whatever still waits and drop the inbox."""
        for fut in list(self._futures.values()):
            if not fut.done():
                fut.set_exception(PublishError("NATS connection closed before the PubAck"))
        self._futures.clear()
        if self._sub is not None:
            try:
                await self._sub.unsubscribe()
            except nats.errors.Error:
                pass
            self._sub = None

    async def _on_reply(self, msg: Msg) -> None:
        """Resolve the future of the message this PubAck (or error) answers."""
        fut = self._futures.pop(msg.subject.rsplit(".", 1)[-1], None)
        if fut is None or fut.done():
            return
        if msg.headers and msg.headers.get("Status") == "503":
            fut.set_exception(_NoStream())
            return
        try:
            resp = orjson.loads(msg.data)
        except orjson.JSONDecodeError:
            fut.set_exception(PublishError(f"unreadable PubAck {msg.data[:100]!r}"))
            return
        error = resp.get("error") if isinstance(resp, dict) else None
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
        fut.set_result(None)

    def _prepare(self, message: OutMessage) -> _Prepared:
        """Validate one message and compute its wire headers and size."""
        topic = message.topic
        if topic not in self._valid_topics:
            try:
                validate_subject(topic, wildcards=False)
            except BrokerError as exc:
                raise PublishError(str(exc)) from None
            self._valid_topics.add(topic)
        headers = wire_headers(message)
        for key, value in headers.items():
            # A CR/LF would corrupt the protocol stream; refuse instead of mangling it.
            if _BAD_KEY.search(key) or not key or "\r" in value or "\n" in value:
                raise PublishError(
                    f"message to {topic!r} has a header that cannot be sent: {key!r}"
                )
        size = wire_size(message.payload, headers)
        limit = self._nc.max_payload
        if size > limit:
            raise PublishError(
                f"message to {topic!r} is {size} bytes (payload {len(message.payload)}"
                f" + headers), over the NATS server's max_payload of {limit} bytes"
            )
        return _Prepared(topic, message.payload, headers, size)

    async def _send(self, item: _Prepared) -> asyncio.Future[None]:
        """Send one message with a reply subject; the returned future resolves on its PubAck."""
        token = str(next(self._tokens))
        fut: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self._futures[token] = fut
        try:
            await self._nc.publish(
                item.topic, item.payload, reply=f"{self._prefix}.{token}", headers=item.headers
            )
        except BaseException:
            self._futures.pop(token, None)
            raise
        fut.add_done_callback(lambda _f: self._futures.pop(token, None))
        return fut

    async def publish(self, messages: Sequence[OutMessage]) -> None:
        """Publish ``messages``; return once every one has a PubAck (duplicates included)."""
        if not messages:
            return
        items = [self._prepare(m) for m in messages]
        for topic in dict.fromkeys(i.topic for i in items):
            try:
                await self._streams.ensure(topic)
            except BrokerError as exc:
                raise PublishError(f"cannot publish to {topic!r}: {exc}") from None
        deadline = time.monotonic() + self._timeout
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

    async def _try(
        self, items: list[_Prepared], pending: list[int], deadline: float
    ) -> tuple[list[int], int]:
        """Send ``pending`` once and wait for their PubAcks.

        Returns what must be sent again and how many of those were sent but not answered.
        """
        if self._nc.is_closed:
            raise PublishError("NATS connection is closed")
        futures: dict[int, asyncio.Future[None]] = {}
        unsent: list[int] = []
        for pos, i in enumerate(pending):
            if not self._nc.is_connected:
                # Reconnecting: don't pile messages into the client's reconnect buffer.
                unsent = pending[pos:]
                break
            if self._window.locked():
                remaining = deadline - time.monotonic()
                try:
                    await asyncio.wait_for(self._window.acquire(), timeout=max(remaining, 0.001))
                except TimeoutError:
                    unsent = pending[pos:]
                    break
            else:
                # Free slot: take it without yielding, so consecutive publishes coalesce into
                # one socket write instead of waking the client's flusher per message.
                await self._window.acquire()
            try:
                fut = await self._send(items[i])
            except (nats.errors.OutboundBufferLimitError, nats.errors.ConnectionReconnectingError):
                self._window.release()
                unsent = pending[pos:]
                break
            except nats.errors.BadHeaderError as exc:
                self._window.release()
                raise PublishError(f"message to {items[i].topic!r}: bad header {exc}") from None
            except nats.errors.Error as exc:
                self._window.release()
                raise PublishError(f"cannot publish to {items[i].topic!r}: {exc!r}") from None
            fut.add_done_callback(lambda _f: self._window.release())
            futures[i] = fut
        if futures:
            wait = min(deadline - time.monotonic(), _TRY_TIMEOUT)
            await asyncio.wait(futures.values(), timeout=max(wait, 0.001))
        retry: list[int] = []
        unanswered = 0
        error: PublishError | None = None
        for i, fut in futures.items():
            if not fut.done():
                fut.cancel()
                retry.append(i)
                unanswered += 1
                continue
            failure = fut.exception()
            if failure is None:
                continue
            item = items[i]
            if isinstance(failure, _NoStream):
                # The stream vanished (deleted by an operator?): find or create it again.
                self._streams.forget(item.topic)
                try:
                    await self._streams.ensure(item.topic)
                except BrokerError as err:
                    error = error or PublishError(f"cannot publish to {item.topic!r}: {err}")
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
