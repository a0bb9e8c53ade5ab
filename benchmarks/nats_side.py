"""The harness side on NATS JetStream: one input and one output stream per contender run."""

from __future__ import annotations

import asyncio
import contextlib
import time

import nats
import orjson
from nats.aio.client import Client
from nats.aio.msg import Msg
from nats.aio.subscription import Subscription
from nats.js import JetStreamContext, api
from nats.js.errors import NotFoundError

from benchmarks.side import Listener, OutRecord, Side, Topics

WINDOW = 2000  # un-acknowledged publishes of the harness's producer


class NatsSide(Side):
    broker = "nats"

    def __init__(self, url: str) -> None:
        self.url = url
        self._nc: Client | None = None
        self._js: JetStreamContext | None = None
        self._listen_subs: list[Subscription] = []

    @property
    def js(self) -> JetStreamContext:
        assert self._js is not None, "open() first"
        return self._js

    async def open(self) -> None:
        self._nc = await nats.connect(self.url, connect_timeout=5, pending_size=64 * 1024 * 1024)
        self._js = self._nc.jetstream(timeout=10.0, publish_async_max_pending=WINDOW)

    async def server_version(self) -> str:
        assert self._nc is not None
        return f"nats-server {self._nc.connected_server_version._server_version}"

    async def close(self) -> None:
        await self.unlisten()
        if self._nc is not None:
            await self._nc.drain()
            self._nc = None

    async def create(self, run: str) -> Topics:
        topics = Topics(
            topic_in=f"bench.{run}.in",
            topic_out=f"bench.{run}.out",
            group=f"bench-{run}",
            stream_in=f"BENCH_{run}_IN",
            stream_out=f"BENCH_{run}_OUT",
        )
        for name, subject in (
            (topics.stream_in, topics.topic_in),
            (topics.stream_out, topics.topic_out),
        ):
            await self.js.add_stream(
                api.StreamConfig(
                    name=name,
                    subjects=[subject, f"{subject}.dlq"],
                    storage=api.StorageType.FILE,
                    retention=api.RetentionPolicy.LIMITS,
                    duplicate_window=120.0,
                )
            )
        return topics

    async def delete(self, topics: Topics) -> None:
        for name in (topics.stream_in, topics.stream_out):
            with contextlib.suppress(NotFoundError):
                await self.js.delete_stream(name)

    async def send(self, topics: Topics, payloads: list[bytes]) -> None:
        futures = [await self.js.publish_async(topics.topic_in, p) for p in payloads]
        await asyncio.wait_for(asyncio.gather(*futures), timeout=30.0)

    async def send_one(self, topics: Topics, payload: bytes) -> None:
        # Core publish, no PubAck to process: keeps the harness's CPU out of the way of the
        # contender at high paced rates. The runner checks the stream stored every message.
        assert self._nc is not None
        await self._nc.publish(topics.topic_in, payload)

    async def flush(self, topics: Topics) -> None:
        assert self._nc is not None
        await self._nc.flush(timeout=30)

    async def _count(self, stream: str, subject: str) -> int:
        info = await self.js.stream_info(stream, subjects_filter=subject)
        return int((info.state.subjects or {}).get(subject, 0))

    async def in_count(self, topics: Topics) -> int:
        return await self._count(topics.stream_in, topics.topic_in)

    async def out_count(self, topics: Topics) -> int:
        return await self._count(topics.stream_out, topics.topic_out)

    async def settled(self, topics: Topics) -> bool:
        # The input stream is fresh per run: every consumer on it is the contender's (whatever
        # it named its durable).
        try:
            infos = await self.js.consumers_info(topics.stream_in)
        except NotFoundError:
            return False
        return bool(infos) and all(i.num_ack_pending == 0 and i.num_pending == 0 for i in infos)

    async def listen(self, topics: Topics, topic: str, listener: Listener) -> None:
        assert self._nc is not None

        async def on_msg(msg: Msg) -> None:
            listener.on_payload(msg.data)

        # A core subscription sees each message as the server accepts it: the earliest moment
        # any consumer could. (Duplicates the stream drops still show here: the verifier
        # counts from the stream instead.)
        self._listen_subs.append(await self._nc.subscribe(topic, cb=on_msg))

    async def unlisten(self) -> None:
        subs, self._listen_subs = self._listen_subs, []
        for sub in subs:
            with contextlib.suppress(nats.errors.Error):
                await sub.unsubscribe()

    async def read_out(self, topics: Topics, timeout: float) -> list[OutRecord]:
        expected = await self.out_count(topics)
        psub = await self.js.pull_subscribe(
            topics.topic_out,
            stream=topics.stream_out,
            config=api.ConsumerConfig(
                ack_policy=api.AckPolicy.NONE,
                deliver_policy=api.DeliverPolicy.ALL,
                inactive_threshold=30.0,
            ),
        )
        out: list[OutRecord] = []
        deadline = time.monotonic() + timeout
        try:
            while len(out) < expected and time.monotonic() < deadline:
                try:
                    msgs = await psub.fetch(min(1000, expected - len(out)), timeout=1.0)
                except (nats.errors.TimeoutError, TimeoutError):
                    continue
                for msg in msgs:
                    doc = orjson.loads(msg.data)
                    stamp = msg.metadata.timestamp.timestamp()
                    out.append(OutRecord(int(doc["phase"]), int(doc["seq"]), int(stamp * 1e9)))
        finally:
            with contextlib.suppress(nats.errors.Error):
                await psub.unsubscribe()
        return out
