"""Coalesced publishing of finished handler calls' outputs.

A handler call that finished hands its outputs to the agent's outbox instead of waiting for
the broker itself. The outbox publishes everything queued since its last flush in one
``broker.publish`` call and then settles each input (complete the claim, acknowledge). One
round trip then serves every call that finished meanwhile, and the worker goes on running
handlers while the broker confirms earlier outputs: no input is acknowledged before its
outputs were accepted, but a worker no longer pays a wait per message.

Flushes run one at a time, in queue order, so outputs reach the broker in the order their
handlers finished (one key's messages finish in order, so its outputs stay in order).
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable, Coroutine
from typing import Any, Generic, TypeVar

T = TypeVar("T")

__all__ = ["Outbox"]


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

    def __len__(self) -> int:
        return len(self._queue)

    def put(self, item: T) -> None:
        """Queue a finished call; a flush starts once the current loop step yields."""
        self._queue.append(item)
        if self._task is None:
            self._task = self._spawn(self._run())

    async def _run(self) -> None:
        try:
            while self._queue:
                batch, self._queue = self._queue, []
                await self._flush(batch)
        except asyncio.CancelledError:
            batch, self._queue = self._queue, []
            if batch:
                await asyncio.shield(self._abandon(batch))
            raise
        finally:
            self._task = None
