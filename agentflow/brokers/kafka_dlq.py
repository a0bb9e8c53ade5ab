"""Dead-letter browsing for ``agentflow dlq`` on Kafka: list, remove (after replay), purge.

Kafka cannot delete a single record, so the DLQ tool keeps its own consumer group,
``agentflow-dlq-cli``: browsing reads a topic from that group's committed offset, and
"removing" a message means the tool acknowledged it - it commits past it (messages removed
out of order are remembered in the commit metadata, like the attempt record, and skipped).
Purging deletes the records up to the end of each partition (``DeleteRecords``) and commits
the tool's group to the end, so a purge also works where deleting records is not allowed.
"""

from __future__ import annotations

import logging
from collections import defaultdict
from collections.abc import Sequence
from typing import Any

from agentflow.brokers.base import BrokerError, StoredMessage
from agentflow.brokers.kafka_attempts import DONE, Run, decode, encode
from agentflow.brokers.kafka_config import KafkaSettings
from agentflow.brokers.kafka_delivery import decode_headers

log = logging.getLogger("agentflow.kafka")

__all__ = ["DLQ_GROUP", "browse", "purge", "remove"]

DLQ_GROUP = "agentflow-dlq-cli"
_READ_TIMEOUT_MS = 2_000


def _removed(runs: list[Run], offset: int) -> bool:
    return any(r.state == DONE and r.start <= offset <= r.end for r in runs)


async def _partitions(admin: Any, topic: str) -> list[Any]:
    from aiokafka import TopicPartition

    if topic not in set(await admin.list_topics()):
        return []
    described = await admin.describe_topics([topic])
    return sorted(
        TopicPartition(topic, p["partition"])
        for t in described
        if t["topic"] == topic
        for p in t.get("partitions", [])
    )


async def _state(admin: Any, tps: list[Any]) -> dict[Any, tuple[int | None, list[Run]]]:
    """Per partition: the tool's committed offset and the removed-out-of-order runs."""
    committed = await admin.list_consumer_group_offsets(DLQ_GROUP, partitions=tps)
    out: dict[Any, tuple[int | None, list[Run]]] = {}
    for tp in tps:
        meta = committed.get(tp)
        if meta is None or meta.offset < 0:
            out[tp] = (None, [])
        else:
            out[tp] = (meta.offset, decode(meta.metadata, meta.offset))
    return out


def _consumer(settings: KafkaSettings, group: str | None) -> Any:
    from aiokafka import AIOKafkaConsumer

    return AIOKafkaConsumer(
        **settings.client_kwargs(),
        group_id=group,
        enable_auto_commit=False,
        auto_offset_reset="earliest",
    )


async def browse(
    settings: KafkaSettings, admin: Any, topic: str, limit: int
) -> list[StoredMessage]:
    """Up to ``limit`` messages the DLQ tool has not removed, oldest first."""
    tps = await _partitions(admin, topic)
    if not tps or limit <= 0:
        return []
    state = await _state(admin, tps)
    consumer = _consumer(settings, None)
    await consumer.start()
    found: list[StoredMessage] = []
    try:
        consumer.assign(tps)
        starts = await consumer.beginning_offsets(tps)
        ends = await consumer.end_offsets(tps)
        for tp in tps:
            committed, runs = state[tp]
            start = max(committed if committed is not None else 0, starts[tp])
            if start >= ends[tp]:
                continue
            consumer.seek(tp, start)
            taken = 0
            while taken < limit and await consumer.position(tp) < ends[tp]:
                batch = await consumer.getmany(tp, timeout_ms=_READ_TIMEOUT_MS)
                records = batch.get(tp, [])
                if not records:
                    break
                for record in records:
                    if record.offset >= ends[tp] or taken >= limit:
                        break
                    if _removed(runs, record.offset):
                        continue
                    headers = decode_headers(record)
                    key = record.key.decode("utf-8", "replace") if record.key is not None else None
                    found.append(
                        StoredMessage(
                            topic=topic,
                            payload=record.value if record.value is not None else b"",
                            headers=headers,
                            key=key,
                            position={
                                "topic": topic,
                                "partition": str(record.partition),
                                "offset": str(record.offset),
                            },
                            timestamp_ms=record.timestamp,
                        )
                    )
                    taken += 1
    finally:
        await consumer.stop()
    found.sort(
        key=lambda m: (m.timestamp_ms, int(m.position["partition"]), int(m.position["offset"]))
    )
    return found[:limit]


async def _commit(settings: KafkaSettings, offsets: dict[Any, tuple[int, str]]) -> None:
    consumer = _consumer(settings, DLQ_GROUP)
    await consumer.start()
    try:
        consumer.assign(list(offsets))
        await consumer.commit(offsets)
    finally:
        await consumer.stop()


async def remove(
    settings: KafkaSettings, admin: Any, topic: str, messages: Sequence[StoredMessage]
) -> None:
    """Acknowledge ``messages`` for the DLQ tool: browse no longer returns them."""
    from aiokafka import TopicPartition

    wanted: dict[Any, set[int]] = defaultdict(set)
    for msg in messages:
        try:
            tp = TopicPartition(topic, int(msg.position["partition"]))
            wanted[tp].add(int(msg.position["offset"]))
        except (KeyError, ValueError):
            raise BrokerError(f"message of {topic!r} has no Kafka partition/offset") from None
    if not wanted:
        return
    tps = sorted(wanted)
    state = await _state(admin, tps)
    starts = await _beginnings(settings, tps)
    offsets: dict[Any, tuple[int, str]] = {}
    for tp in tps:
        committed, runs = state[tp]
        base = max(committed if committed is not None else 0, starts[tp])
        done = {o for o in wanted[tp] if o >= base}
        for run in runs:
            if run.state == DONE:
                done.update(range(max(run.start, base), run.end + 1))
        while base in done:  # contiguous from the commit point: move the commit
            done.discard(base)
            base += 1
        offsets[tp] = (base, encode(base, _runs(sorted(done))))
    await _commit(settings, offsets)


def _runs(offsets: list[int]) -> list[Run]:
    runs: list[Run] = []
    for o in offsets:
        if runs and runs[-1].end == o - 1:
            runs[-1] = Run(runs[-1].start, o, DONE)
        else:
            runs.append(Run(o, o, DONE))
    return runs


async def _beginnings(settings: KafkaSettings, tps: list[Any]) -> dict[Any, int]:
    consumer = _consumer(settings, None)
    await consumer.start()
    try:
        starts: dict[Any, int] = await consumer.beginning_offsets(tps)
        return starts
    finally:
        await consumer.stop()


async def purge(settings: KafkaSettings, admin: Any, topic: str) -> int:
    """Delete every message of ``topic``; return how many the DLQ tool still showed."""
    from aiokafka.admin import RecordsToDelete

    tps = await _partitions(admin, topic)
    if not tps:
        return 0
    count = 0
    offsets: dict[Any, tuple[int, str]] = {}
    state = await _state(admin, tps)
    consumer = _consumer(settings, None)
    await consumer.start()
    try:
        starts = await consumer.beginning_offsets(tps)
        ends = await consumer.end_offsets(tps)
    finally:
        await consumer.stop()
    for tp in tps:
        committed, runs = state[tp]
        start = max(committed if committed is not None else 0, starts[tp])
        hidden = sum(
            max(0, min(r.end, ends[tp] - 1) - max(r.start, start) + 1)
            for r in runs
            if r.state == DONE
        )
        count += max(ends[tp] - start - hidden, 0)
        offsets[tp] = (ends[tp], "")
    doomed = {tp: RecordsToDelete(ends[tp]) for tp in tps if ends[tp] > starts[tp]}
    if doomed:
        try:
            await admin.delete_records(doomed)
        except Exception as exc:  # e.g. no DELETE permission: the commit below still hides them
            log.warning(
                "cannot delete records of %s (%s); hiding them from the DLQ tool", topic, exc
            )
    await _commit(settings, offsets)
    return count
