"""nats-py's protocol parser with its message frames cut natively.

Every agentflow message arrives as two or three NATS messages (the delivery, its output's
PubAck, an idempotency claim's PubAck), and nats-py's parser spends about 3.5 us on each:
two regexes, a dict, two slices of the buffer. ``_native.nats_frames`` cuts every whole
``MSG``/``HMSG`` of a read in one call; each is then handed to ``Client._process_msg`` exactly
as nats-py's parser would, or, for a header-less reply on a subscription routed with
:func:`route_plain` (PubAcks), straight to a plain function. Anything else (``PING``,
``INFO``, ``-ERR``, a frame nats-py was half-way through) is left to nats-py's own parser,
which this class is; a routed reply it parses takes the subscription's usual path.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from nats.aio.client import Client
from nats.errors import ProtocolError
from nats.protocol.parser import AWAITING_CONTROL_LINE, Parser

from agentflow import _native

__all__ = ["FrameParser", "PlainHandler", "route_plain", "use_frame_parser"]

# ``rest`` of nats_frames: another operation follows the frames.
_OTHER = 2
# handler(subject, payload) of a subscription's header-less messages.
PlainHandler = Callable[[bytes, bytes], None]


class FrameParser(Parser):
    """A nats-py ``Parser`` whose ``MSG``/``HMSG`` frames are cut by ``_native.nats_frames``."""

    def __init__(self, nc: Any = None) -> None:  # nats-py's Parser takes its client untyped
        super().__init__(nc)
        # sid -> handler of its header-less messages (kept across reconnects: nats-py
        # re-subscribes under the same sid, and ``reset`` leaves this alone).
        self.routes: dict[int, PlainHandler] = {}

    async def parse(self, data: bytes = b"") -> None:
        """Feed bytes read from the server; dispatch every whole message in order."""
        if self.state != AWAITING_CONTROL_LINE:
            # nats-py's parser stopped inside a frame it had started: it finishes the buffer.
            await super().parse(data)
            return
        buf = self.buf
        buf.extend(data)
        if not buf:
            return
        try:
            frames, used, rest = _native.nats_frames(buf)
        except ValueError as exc:
            raise ProtocolError(f"nats: {exc}") from None
        del buf[:used]
        if frames:
            nc = self.nc
            process = nc._process_msg
            routes = self.routes
            for sid, subject, reply, payload, headers in frames:
                plain = routes.get(sid) if routes and headers is None else None
                if plain is not None:
                    # A routed reply (a PubAck): its handler, without nats-py's coroutine.
                    nc.stats["in_msgs"] += 1
                    nc.stats["in_bytes"] += len(payload)
                    plain(subject, payload)
                    continue
                await process(sid, subject, reply, payload, headers)
                if self.buf is not buf:
                    return  # the connection was reset meanwhile: the rest is stale
        if rest == _OTHER:
            # PING, PONG, INFO, +OK, -ERR (rare): nats-py's parser takes the rest of the buffer.
            await super().parse()


def use_frame_parser(nc: Client) -> None:
    """Give ``nc`` a :class:`FrameParser` (before it connects: the parser holds the buffer)."""
    nc._ps = FrameParser(nc)


def route_plain(nc: Client, sid: int, handler: PlainHandler | None) -> None:
    """Hand header-less messages of subscription ``sid`` to ``handler`` as they are parsed.

    nats-py turns every message into a ``Msg``, queues it on the subscription and runs a
    coroutine callback from the subscription's task: three loop steps and ~5 us per PubAck.
    A routed message skips all that; one with headers (a status such as 503 no responders)
    still takes the subscription's usual path, which stays registered with nats-py (it
    re-subscribes it after a reconnect). ``handler`` None removes the route. Without a
    :class:`FrameParser` on ``nc`` nothing is routed: the usual path serves.
    """
    parser = nc._ps
    if not isinstance(parser, FrameParser):
        return
    if handler is None:
        parser.routes.pop(sid, None)
    else:
        parser.routes[sid] = handler
