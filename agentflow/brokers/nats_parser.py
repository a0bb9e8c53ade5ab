"""nats-py's protocol parser with its message frames cut natively.

Every agentflow message arrives as two or three NATS messages (the delivery, its output's
PubAck, an idempotency claim's PubAck), and nats-py's parser spends about 3.5 us on each:
two regexes, a dict, two slices of the buffer. ``_native.nats_frames`` cuts every whole
``MSG``/``HMSG`` of a read in one call; each is then handed to ``Client._process_msg`` exactly
as nats-py's parser would, or, for a header-less reply routed with
:func:`~agentflow.brokers.nats_wire.route_plain` (PubAcks), straight to its handler. Anything
else (``PING``, ``INFO``, ``-ERR``, a frame nats-py was half-way through) is left to nats-py's
own parser, which this class is.
"""

from __future__ import annotations

from nats.aio.client import Client
from nats.errors import ProtocolError
from nats.protocol.parser import AWAITING_CONTROL_LINE, Parser

from agentflow import _native
from agentflow.brokers.nats_wire import plain_routes

__all__ = ["FrameParser", "use_frame_parser"]

# ``rest`` of nats_frames: another operation follows the frames.
_OTHER = 2


class FrameParser(Parser):
    """A nats-py ``Parser`` whose ``MSG``/``HMSG`` frames are cut by ``_native.nats_frames``."""

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
            routes = plain_routes(nc)
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
