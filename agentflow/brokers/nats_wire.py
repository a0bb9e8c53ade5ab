"""The NATS wire format pieces agentflow writes itself, once per message.

nats-py's ``Client.publish`` re-validates the subject and runs a regex, ``strip`` and
``translate`` per header on every call; agentflow publishes a handful of headers per message,
so it encodes the ``NATS/1.0`` block here (keys checked once per distinct key) and queues the
finished ``HPUB`` commands (written by ``_native.nats_pub_commands``) on the connection the way
``Client._send_publish`` does.
"""

from __future__ import annotations

import re
from collections.abc import Mapping

import nats.errors
from nats.aio.client import Client
from nats.aio.msg import Msg

# RFC 7230 token characters, the same rule nats-py applies to header names.
_KEY = re.compile(r"[!#$%&'*+\-.^_`|~0-9A-Za-z]+")
_GOOD_KEYS: set[str] = set()
_MAX_GOOD_KEYS = 4096
_CRLF = b"\r\n"


def encode_headers(headers: Mapping[str, str]) -> bytes:
    """The ``NATS/1.0`` header block for ``headers``; ValueError for an unsendable header."""
    parts = ["NATS/1.0\r\n"]
    for key, value in headers.items():
        if key not in _GOOD_KEYS:
            if not _KEY.fullmatch(key):
                raise ValueError(f"bad header name {key!r}")
            if len(_GOOD_KEYS) < _MAX_GOOD_KEYS:
                _GOOD_KEYS.add(key)
        if "\r" in value or "\n" in value:
            # A CR/LF would corrupt the protocol stream; refuse instead of mangling it.
            raise ValueError(f"header {key!r} has a line break in its value")
        parts.append(f"{key}: {value.strip()}\r\n")
    parts.append("\r\n")
    return "".join(parts).encode()


async def send_commands(
    nc: Client, commands: list[bytes], payload_bytes: int, messages: int | None = None
) -> None:
    """Queue several finished ``PUB``/``HPUB`` commands on ``nc`` as one write.

    ``messages``: how many messages they hold, when a command is several (one per default).
    """
    if nc.is_closed:
        raise nats.errors.ConnectionClosedError
    if nc.is_draining_pubs:
        raise nats.errors.ConnectionDrainingError
    nc.stats["out_msgs"] += len(commands) if messages is None else messages
    nc.stats["out_bytes"] += payload_bytes
    await nc._send_command(commands[0] if len(commands) == 1 else b"".join(commands))
    queue = nc._flush_queue
    if queue is not None and queue.empty():
        await nc._flush_pending()


# (stream, deliveries so far, stream sequence) of a JetStream message.
AckInfo = tuple[str, int, int]


def ack_info(msg: Msg) -> AckInfo:
    """Stream, delivery count and stream sequence, read from the ack subject's tokens.

    ``$JS.ACK.<stream>.<consumer>.<delivered>.<sseq>.<cseq>.<ts>.<pending>`` or the newer
    ``$JS.ACK.<domain>.<account>.<stream>.<consumer>.<delivered>.<sseq>...``; nats-py's
    ``Msg.metadata`` parses the same subject but builds datetimes and objects per message.
    """
    tokens: list[str] = msg.reply.split(".") if msg.reply else []
    try:
        if len(tokens) == 9:
            return tokens[2], int(tokens[4]), int(tokens[5])
        if len(tokens) >= 11:
            return tokens[4], int(tokens[6]), int(tokens[7])
    except ValueError:
        pass
    meta = msg.metadata
    return meta.stream, meta.num_delivered, meta.sequence.stream
