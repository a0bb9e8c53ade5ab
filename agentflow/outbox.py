"""Coalesced publishing of finished handler calls' outputs.

A handler call that finished hands its outputs to the agent's outbox instead of waiting for
the broker itself. The outbox publishes everything queued since its last flush in one
``broker.publish`` call and then settles each input (complete the claim, acknowledge). One
round trip then serves every call that finished meanwhile, and the worker goes on running
handlers while the broker confirms earlier outputs: no input is acknowledged before its
outputs were accepted, but a worker no longer pays a wait per message.

An idempotent agent's worker claims its next group of messages while earlier calls wait
here. On brokers where every publish round costs a request and a commit (Kafka,
``Broker.coalesce_publishes``) a flush waits for that claim round trip (``hold``/``release``),
so the group that follows shares the flush instead of paying its own.

Flushes run one at a time, in queue order, so outputs reach the broker in the order their
handlers finished (one key's messages finish in order, so its outputs stay in order).
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Awaitable, Callable, Coroutine
from typing import Any, Generic, TypeVar

T = TypeVar("T")

__all__ = ["Outbox"]

# The longest a flush waits for held work (seconds); a claim round trip is ~1 ms.
HOLD_LIMIT = 0.05


class Outbox(Generic[T]):
    """A queue of finished calls, flushed by one task while there is something to flush."""

    def __init__(
        self,
        flush: Callable[[list[T]], Awaitable[None]],
        abandon: Callable[[list[T]], Awaitable[None]],
        spawn: Callable[[Coroutine[Any, Any, None]], asyncio.Task[None]],
    ) -> None:
        # flush: publish a batch and settle each item; abandon: give back items never flushed
        # (the flusher was cancelled); spawn: start the flusher task where the owner tracks it.
        self._flush = flush
        self._abandon = abandon
        self._spawn = spawn
        self._queue: list[T] = []
        self._task: asyncio.Task[None] | None = None
        # Set while the owner fetches more work that will finish soon (a claim round trip).
        self._hold: asyncio.Future[None] | None = None

    def __len__(self) -> int:
        return len(self._queue)

    def put(self, item: T) -> None:
        """Queue a finished call; a flush starts once the current loop step yields."""
        self._queue.append(item)
        if self._task is None:
            self._task = self._spawn(self._run())

    def hold(self) -> None:
        """More calls finish soon: the next flush waits for :meth:`release` (once)."""
        if self._hold is None:
            self._hold = asyncio.get_running_loop().create_future()

    def release(self) -> None:
        """End :meth:`hold`."""
        hold, self._hold = self._hold, None
        if hold is not None and not hold.done():
            hold.set_result(None)

    async def _run(self) -> None:
        try:
            while self._queue:
                if self._hold is not None:
                    # Wait for the work in progress, so it shares this flush's round trip;
                    # not for long: a slow store must not delay the calls finished already.
                    with contextlib.suppress(TimeoutError):
                        async with asyncio.timeout(HOLD_LIMIT):
                            await asyncio.shield(self._hold)
                batch, self._queue = self._queue, []
                await self._flush(batch)
        except asyncio.CancelledError:
            batch, self._queue = self._queue, []
            if batch:
                await asyncio.shield(self._abandon(batch))
            raise
        finally:
            self._task = None
