"""Read, delete and purge the messages of one subject without consuming them (``agentflow dlq``).

Reads use the stream's "next message by subject" lookup, so no consumer is created and no
delivery state changes; removal deletes by stream sequence; purge is a subject-filtered
stream purge.
"""

from __future__ import annotations

from collections.abc import Sequence

import nats.errors
import orjson
from nats.aio.client import Client
from nats.js import JetStreamContext, api
from nats.js.errors import APIError, NotFoundError

from agentflow.brokers.base import BrokerError, StoredMessage
from agentflow.brokers.nats_publish import KEY_HEADER

_API_TIMEOUT = 10.0


def _epoch_ms(raw: api.RawStreamMsg) -> int:
    """Stored time of a raw stream message in epoch milliseconds (0 when unknown)."""
    stamp = getattr(raw, "time", None)
    if stamp is None:
        return 0
    try:
        return int(stamp.timestamp() * 1000)
    except (AttributeError, ValueError, OSError):
        return 0


async def browse(js: JetStreamContext, stream: str, topic: str, limit: int) -> list[StoredMessage]:
    """Up to ``limit`` messages of ``topic`` in ``stream``, oldest first."""
    out: list[StoredMessage] = []
    seq = 1
    while len(out) < limit:
        try:
            raw = await js.get_msg(stream, seq=seq, subject=topic, next=True)
        except NotFoundError:
            break
        except APIError as exc:
            raise BrokerError(f"cannot read {topic!r} from stream {stream}: {exc}") from None
        headers = dict(raw.headers or {})
        out.append(
            StoredMessage(
                topic=raw.subject or topic,
                payload=raw.data or b"",
                headers=headers,
                key=headers.get(KEY_HEADER),
                position={"stream": stream, "seq": str(raw.seq)},
                timestamp_ms=_epoch_ms(raw),
            )
        )
        seq = (raw.seq or seq) + 1
    return out


async def remove(
    js: JetStreamContext, topic: str, messages: Sequence[StoredMessage], stream: str | None
) -> None:
    """Delete ``messages`` by their stream position; already deleted ones are skipped."""
    for message in messages:
        name = message.position.get("stream") or stream
        seq = message.position.get("seq")
        if not name or not seq:
            raise BrokerError(f"message of {topic!r} has no NATS stream position")
        try:
            await js.delete_msg(name, int(seq))
        except NotFoundError:
            pass
        except APIError as exc:
            if "not found" in str(exc.description or "").lower():
                continue  # 10043 "sequence N not found": deleted earlier
            raise BrokerError(f"cannot delete {name}#{seq}: {exc}") from None


async def purge(nc: Client, stream: str, topic: str) -> int:
    """Purge ``topic`` from ``stream``; return how many messages went."""
    # nats-py's purge_stream returns only a bool; the raw API reply carries the count.
    try:
        msg = await nc.request(
            f"$JS.API.STREAM.PURGE.{stream}", orjson.dumps({"filter": topic}), timeout=_API_TIMEOUT
        )
    except nats.errors.Error as exc:
        raise BrokerError(f"cannot purge {topic!r} from {stream}: {exc!r}") from None
    resp = orjson.loads(msg.data)
    if "error" in resp:
        raise BrokerError(f"cannot purge {topic!r} from {stream}: {resp['error']}")
    return int(resp.get("purged", 0))
