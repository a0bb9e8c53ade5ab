"""The harness side on Kafka: fresh input/output topics per contender run (admin-created,
since the local broker does not auto-create), broker append times on the output topic."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
import uuid
from pathlib import Path

import orjson
from aiokafka import AIOKafkaConsumer, AIOKafkaProducer, TopicPartition
from aiokafka.admin import AIOKafkaAdminClient, NewTopic
from aiokafka.errors import KafkaError

from benchmarks.common import kafka_bootstrap
from benchmarks.side import Listener, OutRecord, Side, Topics

REPO = Path(__file__).resolve().parent.parent
# Deleted topics linger in the clients' metadata refreshes: not worth a warning each time.
logging.getLogger("aiokafka").setLevel(logging.ERROR)
logging.getLogger("aiokafka.cluster").setLevel(logging.CRITICAL)


class KafkaSide(Side):
    broker = "kafka"

    def __init__(self, url: str, partitions: int = 4) -> None:
        self.url = url
        self.bootstrap = kafka_bootstrap(url)
        self.partitions = partitions
        self._admin: AIOKafkaAdminClient | None = None
        self._producer: AIOKafkaProducer | None = None
        self._probe: AIOKafkaConsumer | None = None
        self._pending: list[asyncio.Future[object]] = []
        self._listen_tasks: list[asyncio.Task[None]] = []
        self._listen_stop = asyncio.Event()

    async def open(self) -> None:
        self._admin = AIOKafkaAdminClient(bootstrap_servers=self.bootstrap)
        await self._admin.start()
        self._producer = AIOKafkaProducer(
            bootstrap_servers=self.bootstrap, acks="all", linger_ms=0, max_batch_size=256 * 1024
        )
        await self._producer.start()
        self._probe = AIOKafkaConsumer(bootstrap_servers=self.bootstrap, enable_auto_commit=False)
        await self._probe.start()

    async def server_version(self) -> str:
        # The version the local services script pins (deploy/kafka/pom.xml).
        pom = REPO / "deploy" / "kafka" / "pom.xml"
        with contextlib.suppress(OSError):
            text = pom.read_text()
            start = text.find("<kafka.version>")
            if start >= 0:
                end = text.find("</kafka.version>", start)
                return f"Apache Kafka {text[start + 15 : end]} (KRaft, one node)"
        return "Apache Kafka (version unknown)"

    async def close(self) -> None:
        await self.unlisten()
        with contextlib.suppress(KafkaError):
            if self._probe is not None:
                await self._probe.stop()
            if self._producer is not None:
                await self._producer.stop()
            if self._admin is not None:
                await self._admin.close()
        self._admin = self._producer = self._probe = None

    async def create(self, run: str) -> Topics:
        assert self._admin is not None
        topics = Topics(
            topic_in=f"bench.{run}.in", topic_out=f"bench.{run}.out", group=f"bench-{run}"
        )
        response = await self._admin.create_topics(
            [
                NewTopic(topics.topic_in, self.partitions, 1),
                NewTopic(
                    topics.topic_out,
                    self.partitions,
                    1,
                    topic_configs={"message.timestamp.type": "LogAppendTime"},
                ),
            ]
        )
        errors = [e for e in getattr(response, "topic_errors", []) if e[1] != 0]
        if errors:
            raise RuntimeError(f"cannot create topics: {errors}")
        await self._wait_metadata([topics.topic_in, topics.topic_out])
        return topics

    async def _wait_metadata(self, names: list[str]) -> None:
        """Wait until every partition of the new topics has a leader (end offsets answer)."""
        assert self._probe is not None
        deadline = time.monotonic() + 20.0
        while True:
            try:
                await self._probe.end_offsets([tp for n in names for tp in self._partitions_of(n)])
                return
            except KafkaError:
                if time.monotonic() > deadline:
                    raise
            await asyncio.sleep(0.1)

    def _partitions_of(self, topic: str) -> list[TopicPartition]:
        return [TopicPartition(topic, p) for p in range(self.partitions)]

    async def delete(self, topics: Topics) -> None:
        assert self._admin is not None and self._probe is not None
        prefix = topics.topic_in.rsplit(".", 1)[0] + "."
        names = [t for t in await self._probe.topics() if t.startswith(prefix)]
        with contextlib.suppress(KafkaError):
            await self._admin.delete_topics(names)
        # Empty groups expire on their own (offsets.retention); nothing else to clean up.

    async def send(self, topics: Topics, payloads: list[bytes]) -> None:
        assert self._producer is not None
        futures = [await self._producer.send(topics.topic_in, p) for p in payloads]
        await asyncio.wait_for(asyncio.gather(*futures), timeout=60.0)

    async def send_one(self, topics: Topics, payload: bytes) -> None:
        assert self._producer is not None
        self._pending.append(await self._producer.send(topics.topic_in, payload))

    async def flush(self, topics: Topics) -> None:
        pending, self._pending = self._pending, []
        await asyncio.wait_for(asyncio.gather(*pending), timeout=60.0)

    async def _end_total(self, topic: str) -> int:
        assert self._probe is not None
        ends = await self._probe.end_offsets(self._partitions_of(topic))
        return int(sum(ends.values()))

    async def in_count(self, topics: Topics) -> int:
        return await self._end_total(topics.topic_in)

    async def out_count(self, topics: Topics) -> int:
        return await self._end_total(topics.topic_out)

    async def settled(self, topics: Topics) -> bool:
        assert self._admin is not None and self._probe is not None
        parts = self._partitions_of(topics.topic_in)
        ends = await self._probe.end_offsets(parts)
        try:
            committed = await self._admin.list_consumer_group_offsets(topics.group)
        except KafkaError:
            return False
        return all(tp in committed and committed[tp].offset >= ends[tp] for tp in parts)

    async def listen(self, topics: Topics, topic: str, listener: Listener) -> None:
        consumer = AIOKafkaConsumer(
            bootstrap_servers=self.bootstrap,
            enable_auto_commit=False,
            fetch_max_wait_ms=100,
            client_id=f"verifier-{uuid.uuid4().hex[:6]}",
        )
        await consumer.start()
        parts = self._partitions_of(topic)
        consumer.assign(parts)
        await consumer.seek_to_end(*parts)
        for tp in parts:  # resolve the positions now, not at the first fetch
            await consumer.position(tp)
        if not self._listen_tasks:
            self._listen_stop = asyncio.Event()
        stop = self._listen_stop

        async def loop() -> None:
            try:
                while not stop.is_set():
                    batch = await consumer.getmany(timeout_ms=100)
                    for records in batch.values():
                        for rec in records:
                            listener.on_payload(rec.value)
            finally:
                await consumer.stop()

        self._listen_tasks.append(asyncio.create_task(loop()))

    async def unlisten(self) -> None:
        tasks, self._listen_tasks = self._listen_tasks, []
        self._listen_stop.set()
        for task in tasks:
            with contextlib.suppress(asyncio.CancelledError, KafkaError, TimeoutError):
                await asyncio.wait_for(task, timeout=10.0)

    async def read_out(self, topics: Topics, timeout: float) -> list[OutRecord]:
        parts = self._partitions_of(topics.topic_out)
        consumer = AIOKafkaConsumer(bootstrap_servers=self.bootstrap, enable_auto_commit=False)
        await consumer.start()
        out: list[OutRecord] = []
        try:
            consumer.assign(parts)
            await consumer.seek_to_beginning(*parts)
            ends = await consumer.end_offsets(parts)
            deadline = time.monotonic() + timeout
            while time.monotonic() < deadline:
                positions = [await consumer.position(tp) for tp in parts]
                if all(pos >= ends[tp] for pos, tp in zip(positions, parts, strict=True)):
                    break
                batch = await consumer.getmany(timeout_ms=500, max_records=5000)
                for records in batch.values():
                    for rec in records:
                        doc = orjson.loads(rec.value)
                        out.append(
                            OutRecord(int(doc["phase"]), int(doc["seq"]), rec.timestamp * 1_000_000)
                        )
        finally:
            await consumer.stop()
        return out
