"""Handler timeouts of one worker, enforced by one loop timer instead of one per call."""

from __future__ import annotations

import asyncio
from collections import deque
from typing import Any

__all__ = ["Deadlines"]


class _Running:
    """One handler call under a deadline."""

    __slots__ = ("deadline", "done", "expired", "task")

    def __init__(self, deadline: float, task: asyncio.Task[Any]) -> None:
        self.deadline = deadline
        self.task = task
        self.done = False
        self.expired = False


class Deadlines:
    """Handler timeouts of one worker, enforced by one loop timer instead of one per call.

    Every call of a worker gets the same timeout, so deadlines come in start order: a FIFO
    queue suffices, and one timer armed for the oldest running call. When it fires, expired
    calls are cancelled (and turned into ``TimeoutError`` by :meth:`Processor.process`) and
    the timer is armed for the next one. Finished calls are dropped from the front as they
    finish, and the queue is compacted if a long-running head holds many finished ones back.
    """

    def __init__(self, timeout: float, loop: asyncio.AbstractEventLoop) -> None:
        self.timeout = timeout
        self._loop = loop
        self._calls: deque[_Running] = deque()
        self._live = 0
        self._timer: asyncio.TimerHandle | None = None

    def start(self, task: asyncio.Task[Any]) -> _Running:
        """Start timing a call made by ``task``."""
        call = _Running(self._loop.time() + self.timeout, task)
        self._calls.append(call)
        self._live += 1
        if self._timer is None:
            self._timer = self._loop.call_at(call.deadline, self._fire)
        return call

    def finish(self, call: _Running) -> None:
        """The call ended (in any way)."""
        if call.done:
            return
        call.done = True
        self._live -= 1
        calls = self._calls
        while calls and calls[0].done:
            calls.popleft()
        if len(calls) > 4 * self._live + 64:
            self._calls = deque(c for c in calls if not c.done)

    def close(self) -> None:
        """Stop the timer (the worker is stopping)."""
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None

    def _fire(self) -> None:
        self._timer = None
        now = self._loop.time()
        calls = self._calls
        while calls:
            head = calls[0]
            if head.done:
                calls.popleft()
            elif head.deadline <= now:
                calls.popleft()
                head.expired = True
                head.task.cancel()
            else:
                self._timer = self._loop.call_at(head.deadline, self._fire)
                return
