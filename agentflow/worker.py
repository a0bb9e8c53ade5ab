"""One agent's consumer loop: fetch in batches, run in parallel across keys, never reorder one.

Back-pressure: the loop fetches only as many messages as it has free slots (``prefetch``, two
batches), so a slow handler slows the fetch instead of piling deliveries up in memory.
Messages that share a key run one after another; different keys (and keyless messages) run
in parallel, at most ``concurrency`` handlers at a time.

No task per message: runnable deliveries wait in one queue, drained by at most
``concurrency`` runner tasks, started when work arrives and ending when the queue is empty.
A delivery whose key is busy waits in that key's lane and joins the queue when the message
before it finishes. Handler timeouts are enforced by :class:`Deadlines` (one loop timer per
worker, not one per message).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections import deque
from collections.abc import Coroutine
from typing import Any

from agentflow.agent import AgentSpec
from agentflow.brokers.base import Broker, Delivery, Subscription
from agentflow.deadlines import Deadlines
from agentflow.idempotency.base import IdempotencyStore
from agentflow.intake import Decoded, Prepared
from agentflow.pipeline import Processor
from agentflow.stats import AgentStats

log = logging.getLogger("agentflow.worker")

FETCH_TIMEOUT = 0.25


def ack_wait_for(spec: AgentSpec) -> float:
    """Broker ack deadline for an agent: its handler timeout plus room for publishing."""
    return spec.timeout + max(1.0, min(spec.timeout, 5.0))


def max_deliver_for(spec: AgentSpec) -> int:
    """Broker redelivery cap: above max_attempts so the runtime sees and dead-letters the last."""
    if spec.uses_idempotency:
        # Busy claims also nak; the claim's own attempt count is what stops a crash loop.
        return spec.retry.max_attempts * 4 + 10
    return spec.retry.max_attempts + 2


class AgentWorker:
    """Runs one agent against one broker subscription."""

    def __init__(
        self,
        spec: AgentSpec,
        broker: Broker,
        store: IdempotencyStore | None,
        stats: AgentStats,
        group: str,
    ) -> None:
        self.spec = spec
        self.broker = broker
        self.group = group
        self.stats = stats
        self.ack_wait = ack_wait_for(spec)
        # Fetched at most ``batch`` at a time, in a window of two batches: one batch runs while
        # the one before it is still being published and acknowledged (a round trip each).
        self.batch = max(2 * spec.concurrency, 32)
        self.prefetch = 2 * self.batch
        self.processor = Processor(
            spec, broker, store, stats, self.ack_wait, on_settled=self._done_all, spawn=self._spawn
        )
        self._sub: Subscription | None = None
        self._held: set[Delivery] = set()
        # Runnable deliveries (keyless, or first of their key), with their key and envelope.
        self._ready: deque[tuple[Delivery, str | None, Decoded]] = deque()
        # Busy keys -> deliveries of that key waiting for the one running (or queued) now.
        self._lanes: dict[str, deque[tuple[Delivery, Decoded]]] = {}
        # Claimed ahead with their group (idempotent agents): start before anything in _ready.
        self._claimed: deque[tuple[Delivery, str | None, Prepared]] = deque()
        self._claim_ahead = spec.uses_idempotency and store is not None
        self._coalesce = broker.coalesce_publishes
        # Deliveries taken from _ready and not finished yet (being claimed, claimed, running).
        self._taken = 0
        self._tasks: set[asyncio.Task[None]] = set()
        self._deadlines: Deadlines | None = None
        # Runner tasks still looping (counted down as they leave the loop, before they end).
        self._runners = 0
        self._wake_pending = False
        self._room = asyncio.Event()
        self._stopping = False
        self._loops: list[asyncio.Task[None]] = []

    async def start(self) -> None:
        """Subscribe and start fetching."""
        self._deadlines = Deadlines(self.spec.timeout, asyncio.get_running_loop())
        self._sub = await self.broker.subscribe(
            self.spec.consumes,
            self.group,
            ack_wait=self.ack_wait,
            max_in_flight=self.prefetch,
            max_deliver=max_deliver_for(self.spec),
        )
        self._loops = [
            asyncio.create_task(self._fetch_loop(), name=f"agentflow-fetch-{self.spec.name}"),
            asyncio.create_task(self._heartbeat_loop(), name=f"agentflow-hb-{self.spec.name}"),
        ]

    @property
    def in_flight(self) -> int:
        """Deliveries fetched and not yet finished."""
        return len(self._held)

    async def stop(self, grace: float) -> None:
        """Stop fetching, let in-flight work finish within ``grace`` seconds, hand back the rest."""
        self._stopping = True
        self._room.set()
        for task in self._loops:
            task.cancel()
        for task in self._loops:
            with contextlib.suppress(asyncio.CancelledError):
                await task
        # Runners finish their calls; the outbox publishes and settles them (and may start a
        # new flush for calls that finished meanwhile), all within the grace period.
        loop = asyncio.get_running_loop()
        end = loop.time() + grace
        pending: set[asyncio.Task[None]] = set()
        while self._tasks:
            _, pending = await asyncio.wait(set(self._tasks), timeout=max(end - loop.time(), 0))
            if pending:
                break
        if pending:
            for task in pending:
                task.cancel()
            log.warning(
                "agent %s: %d handler(s) still running after the %.1fs grace period; "
                "handing their messages back",
                self.spec.name,
                len(pending),
                grace,
            )
            await asyncio.wait(pending, timeout=5.0)
        # Deliveries that never started stay un-acked: closing the subscription hands them back.
        for d, _, prepared in self._claimed:
            await self.processor.unclaim(prepared)
            self._done(d)
        self._claimed.clear()
        for d, _, _ in self._ready:
            self._done(d)
        for lane in self._lanes.values():
            for d, _ in lane:
                self._done(d)
        self._ready.clear()
        self._lanes.clear()
        if self._deadlines is not None:
            self._deadlines.close()
        if self._sub is not None:
            await self._sub.close()
            self._sub = None

    async def _fetch_loop(self) -> None:
        assert self._sub is not None
        while not self._stopping:
            free = self.prefetch - len(self._held)
            if free <= 0:
                self._room.clear()
                await self._room.wait()
                continue
            try:
                batch = await self._sub.fetch(min(free, self.batch), FETCH_TIMEOUT)
            except asyncio.CancelledError:
                raise
            except Exception as exc:
                # A broker hiccup (reconnecting, rebalancing): back off and keep going.
                log.warning("agent %s: fetch failed (%s); retrying", self.spec.name, exc)
                await asyncio.sleep(0.5)
                continue
            # One native call decodes the whole batch's envelopes.
            envelopes = self.processor.plan.decode_batch([d.headers for d in batch])
            self._held.update(batch)
            self.stats.in_flight = len(self._held)
            for delivery, env in zip(batch, envelopes, strict=True):
                self._dispatch(delivery, env)
            if len(batch) == 1:
                # Trickling in (low rates): let it start before the next fetch's bookkeeping.
                # Batches run in the order they come anyway.
                await asyncio.sleep(0)

    def _dispatch(self, d: Delivery, env: Decoded) -> None:
        """Queue a fetched delivery (counted in ``_held`` already) to run, or behind its key."""
        key = d.key
        if key is None and isinstance(env, tuple):
            key = env[1]  # af-key
        if key is not None:
            lane = self._lanes.get(key)
            if lane is not None:
                lane.append((d, env))  # same key running or queued: wait behind it, in order
                return
            self._lanes[key] = deque()
        self._ready.append((d, key, env))
        if not self._wake_pending:
            self._wake()

    def _wake(self) -> None:
        """Make sure queued work finds a runner: decided once the current step yields."""
        if self._wake_pending:
            return
        if self._runners == 0:
            # Nothing runs: start one runner now, not a loop turn later (at low rates that
            # turn was a good part of a message's time in the worker). More runners are
            # still decided once the current step yields.
            self._add_runners()
            return
        self._wake_pending = True
        asyncio.get_running_loop().call_soon(self._add_runners)

    def _add_runners(self) -> None:
        # Runs between steps: every live runner is waiting inside a handler (or has not
        # started yet), so queued work needs more runners. Grow by doubling, never above
        # `concurrency`: a handler that never waits is served by one runner, without a task
        # per message; handlers that wait ramp up to full concurrency in a few loop turns.
        self._wake_pending = False
        if self._stopping:
            return
        room = self.spec.concurrency - self._runners
        queued = len(self._claimed) + (len(self._ready) if self._can_take() else 0)
        for _ in range(min(queued, room, max(1, self._runners))):
            self._runners += 1
            task = asyncio.create_task(self._runner())
            self._tasks.add(task)
            task.add_done_callback(self._tasks.discard)

    async def _runner(self) -> None:
        """Process queued deliveries one at a time until the queue is empty."""
        task = asyncio.current_task()
        assert task is not None and self._deadlines is not None
        process = self.processor.process
        deadlines = self._deadlines
        clock = deadlines.clock(task)
        ready = self._ready
        claimed = self._claimed
        limit = self.spec.concurrency  # of taken deliveries (as _can_take, inlined: per message)
        try:
            while not self._stopping:
                prepared: Prepared | None = None
                if claimed:
                    d, key, prepared = claimed.popleft()
                    env: Decoded | None = None
                elif not ready or self._taken >= limit:
                    break
                elif self._claim_ahead:
                    await self._claim_group()
                    continue
                else:
                    d, key, env = ready.popleft()
                if (claimed or (ready and self._taken < limit)) and not self._wake_pending:
                    self._wake()  # more waiting: maybe another runner, if this one waits
                settled = True
                try:
                    settled = await process(d, clock, env, prepared)
                except Exception:
                    log.exception("agent %s: unexpected error processing a message", self.spec.name)
                finally:
                    if prepared is not None:
                        self._taken -= 1
                    if settled:
                        self._done(d)  # else the outbox settles it (and calls _done) later
                    # The key's next message may run now: its outputs queue behind these.
                    if key is not None:
                        self._next_of(key)
        finally:
            deadlines.release(clock)
            self._runners -= 1
            if (claimed or (ready and self._can_take())) and not self._stopping:
                self._wake()  # this runner was cancelled mid-queue: let another take over

    def _can_take(self) -> bool:
        """Whether a runner may take from _ready (claim-ahead: while slots are free)."""
        return self._taken < self.spec.concurrency

    async def _claim_group(self) -> None:
        """Take as many ready deliveries as there are free slots and claim them at once.

        Only deliveries that can start now are claimed (at most ``concurrency`` taken at a
        time, as many as would run in parallel anyway), so a crash charges an attempt to no
        more messages than it would have interrupted mid-call.
        """
        ready = self._ready
        n = min(len(ready), self.spec.concurrency - self._taken)
        group = [ready.popleft() for _ in range(n)]
        self._taken += n
        prepared = [self.processor.intake.prepare(d, env) for d, _, env in group]
        # Calls finished before this group wait for its claim in the outbox: one flush.
        outbox = self.processor.outbox
        held = self._coalesce and len(outbox) > 0
        if held:
            outbox.hold()
        try:
            await self.processor.claim_group(prepared)
        finally:
            if held:
                outbox.release()
            # Even when cancelled: the group waits in _claimed, where stop() finds it.
            self._claimed.extend(
                (d, key, p) for (d, key, _), p in zip(group, prepared, strict=True)
            )

    def _spawn(self, coro: Coroutine[Any, Any, None]) -> asyncio.Task[None]:
        """Start a task that ``stop`` waits for (the outbox's flusher)."""
        task = asyncio.create_task(coro)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)
        return task

    def _next_of(self, key: str) -> None:
        """The message of ``key`` finished: queue the next one of that key, if any."""
        lane = self._lanes.get(key)
        if lane:
            d, env = lane.popleft()
            self._ready.append((d, key, env))
        else:
            self._lanes.pop(key, None)

    def _done(self, d: Delivery) -> None:
        self._held.discard(d)
        self.stats.in_flight = len(self._held)
        self._room.set()

    def _done_all(self, ds: list[Delivery]) -> None:
        """``_done`` for each of ``ds`` (settled together by the outbox)."""
        self._held.difference_update(ds)
        self.stats.in_flight = len(self._held)
        self._room.set()

    async def _heartbeat_loop(self) -> None:
        # Queued and running deliveries both age against the ack deadline: extend them all.
        interval = max(self.ack_wait / 3.0, 0.2)
        while True:
            await asyncio.sleep(interval)
            for d in list(self._held):
                try:
                    await d.in_progress()
                except Exception as exc:
                    log.debug("in_progress failed for a delivery of %s: %s", d.topic, exc)
