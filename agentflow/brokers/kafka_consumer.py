"""A consumer-group subscription on Kafka with per-message ack, nak(delay) and term.

A background poll loop owns the aiokafka consumer: it fetches with ``getmany`` into
per-partition buffers, pauses partitions while ``max_in_flight`` messages are outstanding (or
while the head of a retry tier is not due yet), commits periodically, and keeps polling during
long handlers so the member is never dropped for ``max_poll_interval``. ``fetch`` hands out
buffered records in partition order and first writes the attempt record for them.

Commits: per partition, the lowest offset not done yet (kafka_offsets) with the attempt record
(kafka_attempts) as metadata: periodically, per fetched batch, after a nak or term, when
partitions are revoked (after draining what the runtime holds, up to ``drain_timeout``) and
on close. Records an earlier owner got but never finished run alone, one at a time, so a
crash loop counts against the killer only. Deliveries of revoked partitions are stale: their ack
does nothing and the new owner gets them again.

``ack_wait``: Kafka has no ack deadline, so the subscription keeps one: a delivery neither
finished nor extended (``in_progress``) within ``ack_wait`` is handed out again with
``delivery_count + 1``; a late ack of the old delivery still counts.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections import deque
from collections.abc import Iterable
from typing import TYPE_CHECKING, Any

from agentflow import _native
from agentflow.brokers.base import BrokerError, Delivery, Subscription
from agentflow.brokers.kafka_attempts import DONE, decode
from agentflow.brokers.kafka_config import KafkaSettings
from agentflow.brokers.kafka_deadlines import AckDeadlines
from agentflow.brokers.kafka_delivery import KafkaDelivery, Part, decode_headers
from agentflow.brokers.kafka_group import COMMIT_TIMEOUT, commit_parts, rebalance_listener
from agentflow.brokers.kafka_offsets import PartitionTracker
from agentflow.brokers.kafka_producer import RecentIds
from agentflow.brokers.kafka_retry import (
    ATTEMPT,
    RETRY_GROUP,
    choose_tier,
    format_origin,
    not_before_ms,
    retry_headers,
)
from agentflow.brokers.kafka_topics import retry_topic, split_retry_topic

if TYPE_CHECKING:
    from agentflow.brokers.kafka import KafkaBroker

log = logging.getLogger("agentflow.kafka")

__all__ = ["KafkaSubscription"]

POLL_MS = 200
_ERROR_BACKOFF = 0.5


class KafkaSubscription(Subscription):
    """One consumer-group member reading a topic (or pattern) and its retry tiers."""

    def __init__(
        self,
        broker: KafkaBroker,
        consumer: Any,
        group: str,
        *,
        ack_wait: float,
        max_in_flight: int,
        max_deliver: int,
    ) -> None:
        self.broker = broker
        self.settings: KafkaSettings = broker.settings
        self.consumer = consumer
        self.group = group
        self.ack_wait = ack_wait
        self.max_in_flight = max_in_flight if max_in_flight > 0 else 1_000
        self.max_deliver = max_deliver
        self.parts: dict[Any, Part] = {}
        self.acked_ids = RecentIds(self.settings.dedup_window)
        self._redeliver: deque[KafkaDelivery] = deque()
        self._suspects: set[KafkaDelivery] = set()
        self._deadlines = AckDeadlines(ack_wait)
        self._changed = asyncio.Event()
        self._room = asyncio.Event()
        self._closed = False
        self._rotate = 0
        self._next_commit = time.monotonic() + self.settings.commit_interval
        self._task: asyncio.Task[None] | None = None
        self.wildcard = False

    def listener(self) -> Any:
        """The ConsumerRebalanceListener to subscribe with."""
        return rebalance_listener(self.on_revoked, self.on_assigned)

    def start(self) -> None:
        """Start the background poll loop."""
        self._task = asyncio.create_task(self._poll_loop(), name=f"agentflow-kafka-{self.group}")

    # -- rebalance callbacks -----------------------------------------------------------------
    async def on_assigned(self, assigned: Iterable[Any]) -> None:
        """New partitions: read the attempt record the previous owner committed."""
        fresh = [tp for tp in assigned if tp not in self.parts]
        for tp in fresh:
            self.parts[tp] = Part(tp)
        if not fresh:
            return
        try:
            committed = await self.broker.admin.list_consumer_group_offsets(
                self.group, partitions=fresh
            )
        except Exception as exc:
            log.warning(
                "group %s: cannot read attempt records (%s); counting anew", self.group, exc
            )
            committed = {}
        await self._companions(fresh)
        for tp in fresh:
            meta = committed.get(tp)
            offset = meta.offset if meta is not None and meta.offset >= 0 else None
            prior = decode(meta.metadata, offset) if meta is not None and offset is not None else []
            self.parts[tp].tracker = PartitionTracker(offset, prior)
        self._changed.set()

    async def _companions(self, tps: list[Any]) -> None:
        """A wildcard matched a new topic: create its retry tiers and DLQ, then look again."""
        names = [
            n
            for topic in {tp.topic for tp in tps if split_retry_topic(tp.topic) is None}
            for n in self.broker.companions_of(topic)
        ]
        try:
            await self.broker.ensure_known(names)  # pokes us when it created any
        except Exception as exc:  # the next nak creates the tier it needs anyway
            log.warning("group %s: cannot create companion topics (%s)", self.group, exc)

    def poke(self) -> None:
        """Topics were created: a wildcard subscription re-matches its pattern now."""
        if self.wildcard and not self._closed:
            # aiokafka matches patterns on metadata refreshes only (metadata_max_age_ms).
            self.consumer._client.force_metadata_update()

    async def on_revoked(self, revoked: Iterable[Any]) -> None:
        """Partitions leave: drain what the runtime holds (bounded), commit, go stale."""
        parts = [self.parts[tp] for tp in revoked if tp in self.parts]
        for part in parts:
            part.revoking = True
            part.buffer.clear()
        deadline = time.monotonic() + self.settings.drain_timeout
        while not self._closed and any(p.returned_in_flight() for p in parts):
            left = deadline - time.monotonic()
            if left <= 0:
                held = sum(p.returned_in_flight() for p in parts)
                log.warning(
                    "group %s: %d deliveries still running after %.1fs drain; handing them back",
                    self.group,
                    held,
                    self.settings.drain_timeout,
                )
                break
            # Polling (rare, short) instead of sharing an event that fetch() also waits on.
            await asyncio.sleep(min(left, 0.05))
        await self._commit(parts, force=True)
        for part in parts:
            part.live = False
            self.parts.pop(part.tp, None)

    # -- the poll loop -----------------------------------------------------------------------
    def _outstanding(self) -> int:
        return sum(
            len(p.buffer) + (p.tracker.in_flight if p.tracker is not None else 0)
            for p in self.parts.values()
        )

    def _not_due(self, part: Part, now_ms: int) -> int | None:
        """Epoch ms when the head of a tier partition is due, if it is not due yet."""
        if not part.tier or not part.buffer:
            return None
        head = part.buffer[0]
        due = not_before_ms(decode_headers(head))
        return due if due > now_ms else None

    def _apply_pauses(self, full: bool) -> float:
        """Pause full or not-yet-due partitions, resume the rest; return seconds to next due."""
        now_ms = time.time_ns() // 1_000_000
        wait = POLL_MS / 1000
        want: set[Any] = set()
        for tp, part in self.parts.items():
            due = self._not_due(part, now_ms)
            if due is not None:
                wait = min(wait, (due - now_ms) / 1000)
            if full or part.revoking or due is not None or len(part.buffer) >= self.max_in_flight:
                want.add(tp)
        try:
            assigned = self.consumer.assignment()
            paused = self.consumer.paused()
            to_pause = [tp for tp in want if tp in assigned and tp not in paused]
            to_resume = [tp for tp in paused if tp not in want and tp in assigned]
            if to_pause:
                self.consumer.pause(*to_pause)
            if to_resume:
                self.consumer.resume(*to_resume)
        except Exception as exc:  # assignment changing under us: next round fixes it
            log.debug("pause/resume skipped: %s", exc)
        return max(wait, 0.001)

    async def _poll_loop(self) -> None:
        while not self._closed:
            try:
                if self._outstanding() >= self.max_in_flight:
                    await self._wait_for_room()
                    continue
                wait = self._apply_pauses(full=False)
                room = max(self.max_in_flight - self._outstanding(), 1)
                started = time.monotonic()
                batch = await self.consumer.getmany(
                    timeout_ms=max(int(wait * 1000), 1), max_records=room
                )
                self._buffer(batch)
                if not batch and time.monotonic() - started < wait / 2:
                    # getmany can return at once without suspending (no assignment yet, a
                    # broker gone): sleep, or this loop would starve the event loop.
                    await asyncio.sleep(wait)
                await self._housekeeping()
            except asyncio.CancelledError:
                raise
            except Exception as exc:
                if self._closed:
                    return
                log.warning("group %s: poll failed (%s); retrying", self.group, exc)
                await asyncio.sleep(_ERROR_BACKOFF)

    async def _wait_for_room(self) -> None:
        """Full: wait for an ack; still full after a poll interval, pause and poll anyway."""
        self._room.clear()
        with contextlib.suppress(TimeoutError):
            async with asyncio.timeout(POLL_MS / 1000):
                await self._room.wait()
        if self._outstanding() >= self.max_in_flight:
            # Long handlers: everything paused, but getmany keeps the member in the group
            # (max_poll_interval) while nothing new is fetched.
            self._apply_pauses(full=True)
            self._buffer(await self.consumer.getmany(timeout_ms=1, max_records=1))
        await self._housekeeping()

    def _buffer(self, batch: dict[Any, list[Any]]) -> None:
        for tp, records in batch.items():
            part = self.parts.get(tp)
            if part is not None and part.live and not part.revoking:
                part.buffer.extend(records)
        if batch:
            self._changed.set()

    async def _housekeeping(self) -> None:
        self._expire()
        if time.monotonic() >= self._next_commit:
            self._next_commit = time.monotonic() + self.settings.commit_interval
            await self._commit(list(self.parts.values()))

    def _expire(self) -> None:
        """Hand out again deliveries that outlived ``ack_wait`` without news."""
        for d in self._deadlines.expired():
            self._hand_out_again(d)

    def _hand_out_again(self, d: KafkaDelivery) -> None:
        """``d`` expired: a new delivery of its record, with ``delivery_count + 1``."""
        d.superseded = True
        part = d.part
        assert part.tracker is not None
        count = d.delivery_count + 1
        part.tracker.handed_out_again(d.offset)
        part.dirty = True
        again = KafkaDelivery(self, part, d.record, d.raw_headers, count)
        if d in self._suspects:
            self._suspects.add(again)
        part.current[d.offset] = again
        self._redeliver.append(again)
        self._changed.set()

    # -- handing out -------------------------------------------------------------------------
    async def fetch(self, max_messages: int, timeout: float) -> list[Delivery]:
        """Up to ``max_messages`` deliveries in partition order, waiting up to ``timeout``."""
        deadline = time.monotonic() + timeout
        while not self._closed:
            self._expire()
            out, wait = self._take(max(max_messages, 1))
            if out:
                # The attempt record, written before any handler can start, and crash: of the
                # partitions handed out from, and of every partition acked since its last
                # commit (one request either way). Otherwise a crash in the new batch would
                # charge those finished messages another attempt: an innocent message that
                # finished just before a crash-looping suspect was handed out would be run
                # again and charged on every round, until it was dead-lettered too.
                await self._commit(self.parts.values())
                ready: list[Delivery] = []
                for d in out:
                    part = d.part
                    if part.live and not part.revoking:
                        d.returned = True
                        ready.append(d)
                if ready:
                    return ready
                continue
            left = deadline - time.monotonic()
            if left <= 0:
                return []
            self._changed.clear()
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(min(left, wait)):
                    await self._changed.wait()
        return []

    def _take(self, limit: int) -> tuple[list[KafkaDelivery], float]:
        """Up to ``limit`` deliveries to hand out, armed with one ack deadline; and how long
        to wait before looking again when there are none."""
        now = time.monotonic()
        out, wait = self._pick(limit, now)
        self._deadlines.arm_all(out, now)
        return out, wait

    def _pick(self, limit: int, now: float) -> tuple[list[KafkaDelivery], float]:
        out: list[KafkaDelivery] = []
        while self._redeliver and len(out) < limit:
            d = self._redeliver.popleft()
            if d.finished or d.stale or d.part.revoking or d.part.current.get(d.offset) is not d:
                continue
            if self._over_limit(d):
                continue
            out.append(d)
        now_ms = time.time_ns() // 1_000_000
        wait = POLL_MS / 1000
        self._suspects = {d for d in self._suspects if not d.finished and not d.stale}
        alone = bool(self._suspects)  # a suspect is running: it runs alone
        parts = [p for p in self.parts.values() if p.tracker is not None and not p.revoking]
        busy = sum(p.tracker.in_flight for p in parts if p.tracker is not None)
        if parts:
            self._rotate = (self._rotate + 1) % len(parts)
            parts = parts[self._rotate :] + parts[: self._rotate]
        for part in parts:
            tracker = part.tracker
            assert tracker is not None
            prior, tier = tracker.has_prior, part.tier
            while part.buffer and len(out) < limit:
                state = tracker.prior_state(part.buffer[0].offset) if prior else 0
                if state == DONE:
                    self._admit(part, part.buffer.popleft(), now, state)  # finished: skipped
                    continue
                if alone:
                    break
                due = self._not_due(part, now_ms) if tier else None
                if due is not None:
                    wait = min(wait, (due - now_ms) / 1000)
                    break
                if state == 0:
                    admitted = self._admit(part, part.buffer.popleft(), now, state)
                    if admitted is not None:
                        out.append(admitted)
                        busy += 1
                    continue
                # A record an earlier owner got but never finished may be what killed it. It
                # runs alone in this member, once everything else is done, so the next crash
                # counts against the killer only, not against whatever shared its batch or
                # ran beside it.
                if busy:
                    return out, min(wait, 0.05)
                admitted = self._admit(part, part.buffer.popleft(), now, state)
                if admitted is not None:
                    self._suspects.add(admitted)
                    out.append(admitted)
                    return out, wait
        return out, max(wait, 0.001)

    def _admit(self, part: Part, record: Any, now: float, prior: int) -> KafkaDelivery | None:
        """Track a buffered record (``prior``: its prior_state); a delivery, or None if skipped."""
        tracker = part.tracker
        assert tracker is not None
        offset = record.offset
        if not tracker.is_new(offset):
            return None  # refetched after a pause/seek: already tracked
        headers = _native.kafka_header_dict(record.headers)  # decode_headers, per message
        skip = prior == DONE  # finished before the last owner died
        if part.tier:
            group = headers.get(RETRY_GROUP)
            skip = skip or (group is not None and group != self.group)
        else:
            mid = headers.get("af-id")
            skip = skip or (mid is not None and self.acked_ids.seen(mid, now))
        if skip:
            tracker.skip(offset)
            part.dirty = True
            return None
        base = 1
        if part.tier:
            with contextlib.suppress(ValueError):
                base = max(int(headers.get(ATTEMPT, "1")), 1)
        handed = tracker.track(offset, prior)
        part.dirty = True
        d = KafkaDelivery(self, part, record, headers, base + handed - 1)
        if 0 < self.max_deliver < d.delivery_count and self._over_limit(d):
            return None
        part.current[offset] = d
        return d

    def _over_limit(self, d: KafkaDelivery) -> bool:
        if self.max_deliver <= 0 or d.delivery_count <= self.max_deliver:
            return False
        # Like JetStream's MaxDeliver: the runtime dead-letters well before this point.
        log.warning(
            "group %s: %s delivered %d times (max_deliver=%d); not delivering it again",
            self.group,
            d.fallback_id,
            d.delivery_count - 1,
            self.max_deliver,
        )
        self.finish_many([d], acked=False)
        return True

    # -- outcomes ----------------------------------------------------------------------------
    def finish(self, d: KafkaDelivery, *, acked: bool) -> None:
        """Ack or term: the offset is done (a no-op for stale or finished deliveries)."""
        self.finish_many([d], acked=acked)

    def finish_many(self, deliveries: list[KafkaDelivery], *, acked: bool = True) -> None:
        """``finish`` each delivery, with one clock reading and one wake-up for all."""
        ids: list[str] = []
        freed = False
        for d in deliveries:
            if d.finished or not d.part.live:  # finished, or stale
                continue
            mid = d.headers.get("af-id")
            if acked and mid:
                ids.append(mid)
            d.part.finish(d)  # the caller wakes the poll loop and fetchers
            freed = True
        if ids:
            # A later copy of such an id on the topic (a producer that died before its ack
            # and published again) is then skipped by this group: consumer-side dedup.
            self.acked_ids.add_all(ids)
        if freed:
            self._changed.set()
            self._room.set()

    async def nak(self, d: KafkaDelivery, delay: float) -> None:
        """Copy the record to its retry tier with attempt + 1 and a not-before, then finish."""
        if d.finished or d.stale or d.superseded:
            return
        tier = choose_tier(delay, self.settings.retry_delays)
        target = retry_topic(d.part.base_topic, tier)
        headers = retry_headers(
            d.raw_headers,
            attempt=d.delivery_count + 1,
            delay=delay,
            group=self.group,
            origin=format_origin(*d.origin),
        )
        await self.broker.ensure_known([target])
        try:
            await self.broker.publisher.send_copy(target, d.payload, d.record.key, headers)
        except Exception as exc:
            raise BrokerError(f"cannot write the retry copy to {target!r}: {exc}") from exc
        # Not if an ack came in the meantime, or the partition left: nothing is left to close.
        self.finish_many([d], acked=False)
        await self.settle(d)

    async def settle(self, d: KafkaDelivery) -> None:
        """Commit a nak or term at once: until then a crash would run the message twice.

        Rare (retries and dead letters only), so the extra round trip is not on the hot path;
        a plain ack waits for the next periodic or per-batch commit instead.
        """
        if d.part.live and not d.part.revoking:
            await self._commit([d.part], timeout=5.0)

    # -- commits -----------------------------------------------------------------------------
    async def _commit(
        self, parts: Iterable[Part], *, force: bool = False, timeout: float = COMMIT_TIMEOUT
    ) -> None:
        await commit_parts(self.consumer, self.group, parts, force=force, timeout=timeout)

    async def close(self) -> None:
        """Commit what is done, hand back the rest, leave the group."""
        if self._closed:
            return
        self._closed = True
        self._changed.set()
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await self._task
        try:
            await self._commit(list(self.parts.values()), force=True, timeout=5.0)
        finally:
            for part in self.parts.values():
                part.live = False
            self.parts.clear()
            self.broker.forget(self)
            with contextlib.suppress(Exception):
                await asyncio.wait_for(self.consumer.stop(), 10.0)
