"""The native NATS frame parser dispatches exactly what nats-py's own parser does."""

from __future__ import annotations

import asyncio
import json
from typing import Any

import pytest
from nats.errors import ProtocolError
from nats.protocol.parser import Parser

from agentflow import _native
from agentflow.brokers.nats_parser import FrameParser, route_plain

_HDR = b"NATS/1.0\r\naf-id: 01J\r\ncontent-type: application/json\r\n\r\n"
_STREAM = b"".join(
    [
        b'INFO {"server_id":"x","max_payload":1048576}\r\n',
        b"MSG orders 1 5\r\nhello\r\n",
        b"HMSG orders 2 $JS.ACK.s.c.1.1.1.0.0 %d %d\r\n%s{}\r\n" % (len(_HDR), len(_HDR) + 2, _HDR),
        b'MSG _INBOX.a.1 3 12\r\n{"seq":1234}\r\n',
        b"PING\r\n",
        b"MSG\tspaced\t4\t_INBOX.b\t0\r\n\r\n",
        b"+OK\r\n",
        b"HMSG status 5 16 16\r\nNATS/1.0 503\r\n\r\n\r\n",
        b"PONG\r\n",
        b"-ERR 'Stale Connection'\r\n",
        # A payload that reads like frames: only the frame lengths tell them apart.
        b"MSG big 6 300\r\n" + b"MSG fake 9 3\r\nabc\r\n".ljust(300, b"x") + b"\r\n",
        b"MSG after 7 2\r\nok\r\n",
    ]
)


class _Recorder:
    """The parts of nats-py's Client a parser calls, recording each call."""

    def __init__(self) -> None:
        self.calls: list[tuple[Any, ...]] = []

    async def _process_msg(
        self, sid: int, subject: bytes, reply: bytes, data: bytes, headers: bytes | None
    ) -> None:
        self.calls.append(("msg", sid, bytes(subject), bytes(reply), data, headers))

    async def _process_ping(self) -> None:
        self.calls.append(("ping",))

    async def _process_pong(self) -> None:
        self.calls.append(("pong",))

    async def _process_info(self, info: dict[str, Any]) -> None:
        self.calls.append(("info", json.dumps(info, sort_keys=True)))

    async def _process_err(self, err: str) -> None:
        self.calls.append(("err", err))


def _feed(parser_type: type[Parser], chunks: list[bytes]) -> list[tuple[Any, ...]]:
    nc = _Recorder()
    parser = parser_type(nc)

    async def run() -> None:
        for chunk in chunks:
            await parser.parse(chunk)

    asyncio.run(run())
    assert not parser.buf, "everything sent was whole: nothing may stay buffered"
    return nc.calls


def test_same_calls_as_nats_py_in_one_read() -> None:
    expected = _feed(Parser, [_STREAM])
    assert [c[0] for c in expected].count("msg") == 7
    assert _feed(FrameParser, [_STREAM]) == expected


@pytest.mark.parametrize("size", [1, 2, 3, 7, 64])
def test_same_calls_as_nats_py_whatever_the_reads(size: int) -> None:
    expected = _feed(Parser, [_STREAM])
    # Every cut position of the stream is some read's end for one of these sizes.
    for offset in range(size):
        chunks = [_STREAM[:offset]] + [
            _STREAM[i : i + size] for i in range(offset, len(_STREAM), size)
        ]
        assert _feed(FrameParser, chunks) == expected, f"reads of {size} from {offset}"


def test_frames_are_cut_natively() -> None:
    buf = bytearray(b"MSG a 1 r 2\r\nhi\r\nHMSG b 2 12 13\r\nNATS/1.0\r\n\r\n!\r\nMSG c 3 5\r\nab")
    frames, used, rest = _native.nats_frames(buf)
    assert frames == [(1, b"a", b"r", b"hi", None), (2, b"b", b"", b"!", b"NATS/1.0\r\n\r\n")]
    assert (used, rest) == (48, 1)  # the third message is still incomplete
    assert _native.nats_frames(bytearray(b"PING\r\n")) == ([], 0, 2)


def test_a_malformed_message_line_is_a_protocol_error() -> None:
    with pytest.raises(ProtocolError) as caught:
        _feed(FrameParser, [b"MSG subject not-a-sid 3\r\nabc\r\n"])
    # nats-py's ProtocolError prints a fixed text; the line is in its arguments.
    assert "malformed NATS message line" in caught.value.args[0]
    assert "not-a-sid" in caught.value.args[0]


def test_a_reset_drops_what_is_left_of_the_read() -> None:
    nc = _Recorder()
    parser = FrameParser(nc)
    original = nc._process_msg

    async def process(*args: Any) -> None:
        await original(*args)
        parser.reset()  # what nats-py does when the connection drops

    nc._process_msg = process  # type: ignore[method-assign,assignment]
    asyncio.run(parser.parse(b"MSG a 1 1\r\nx\r\nMSG b 2 1\r\ny\r\n"))
    assert [c[1] for c in nc.calls] == [1]
    assert not parser.buf


def test_routed_replies_go_straight_to_their_handler() -> None:
    nc = _Recorder()
    nc.stats = {"in_msgs": 0, "in_bytes": 0}  # type: ignore[attr-defined]
    replies: list[tuple[bytes, bytes]] = []
    parser = FrameParser(nc)
    nc._ps = parser  # type: ignore[attr-defined]
    route_plain(nc, 7, lambda subject, data: replies.append((subject, data)))  # type: ignore[arg-type]
    status = b"NATS/1.0 503\r\n\r\n"
    stream = (
        b'MSG _INBOX.p.1 7 10\r\n{"seq":12}\r\n'
        + b"HMSG _INBOX.p.2 7 %d %d\r\n%s\r\n" % (len(status), len(status), status)
        + b"MSG other 8 2\r\nhi\r\n"
    )
    asyncio.run(parser.parse(stream))
    assert replies == [(b"_INBOX.p.1", b'{"seq":12}')]
    assert [c[1:3] for c in nc.calls] == [(7, b"_INBOX.p.2"), (8, b"other")]
    assert nc.stats == {"in_msgs": 1, "in_bytes": 10}  # type: ignore[attr-defined]
    route_plain(nc, 7, None)  # type: ignore[arg-type]  # unrouted: the usual path again
    asyncio.run(parser.parse(b"MSG _INBOX.p.3 7 2\r\n{}\r\n"))
    assert len(replies) == 1 and nc.calls[-1][1:3] == (7, b"_INBOX.p.3")
