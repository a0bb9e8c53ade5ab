"""Handler timeouts of one worker, enforced by one loop timer instead of one per call."""

from __future__ import annotations

import asyncio
from collections import deque
from collections.abc import Callable, Coroutine, Generator
from typing import Any

__all__ = ["Deadlines", "Resumed"]


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
        # The loop clock, as :meth:`start` reads it (read once per call: no wrapper).
        self.now: Callable[[], float] = loop.time

    def start(self, task: asyncio.Task[Any], started: float | None = None) -> _Running:
        """Start timing a call made by ``task`` (that started at loop time ``started``)."""
        begun = self._loop.time() if started is None else started
        call = _Running(begun + self.timeout, task)
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


class Resumed:
    """Awaits the rest of a coroutine whose first step the caller ran itself.

    ``first`` is what that step yielded (the future it waits on). Awaiting this in the same
    task continues the coroutine exactly as ``await coro`` would have: values and exceptions
    the task sends (a cancellation) go to the coroutine, and its result is the result.
    """

    __slots__ = ("coro", "first")

    def __init__(self, coro: Coroutine[Any, Any, Any], first: Any) -> None:
        self.coro = coro
        self.first = first

    def __await__(self) -> Generator[Any, Any, Any]:
        coro, step = self.coro, self.first
        while True:
            try:
                sent = yield step
            except GeneratorExit:
                coro.close()
                raise
            except BaseException as exc:  # thrown in by the task: the coroutine decides
                try:
                    step = coro.throw(exc)
                except StopIteration as stop:
                    return stop.value
                continue
            try:
                step = coro.send(sent)
            except StopIteration as stop:
                return stop.value
