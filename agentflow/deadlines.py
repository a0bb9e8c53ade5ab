"""Handler timeouts of one worker, enforced by one loop timer instead of one per call.

Each runner task of a worker makes one handler call at a time, so it owns one reusable
:class:`Clock`: starting a call writes its deadline there, ending it clears it. One timer per
worker looks at the clocks when the earliest deadline can be due, cancels the runner whose
call outlived it, and is armed again for the next. A call pays two attribute writes, not a
timer, a queue entry or a wrapper coroutine.
"""

from __future__ import annotations

import asyncio
from typing import Any

__all__ = ["Clock", "Deadlines"]


class Clock:
    """The deadline of the handler call one runner task is making (reused call after call)."""

    __slots__ = ("_deadlines", "busy", "deadline", "expired", "task")

    def __init__(self, deadlines: Deadlines, task: asyncio.Task[Any]) -> None:
        self._deadlines = deadlines
        self.task = task
        self.deadline = 0.0
        self.busy = False
        # Set when the timer cancelled the task for this call; cleared once taken back.
        self.expired = False

    def begin(self) -> None:
        """A call starts now: it must end within the worker's timeout."""
        deadlines = self._deadlines
        self.deadline = deadlines.now() + deadlines.timeout
        self.busy = True

    def timed_out(self) -> bool:
        """On a CancelledError: True if it was this call's expiry and nobody else's
        cancellation (the request is taken back either way, when it was ours)."""
        if not self.expired:
            return False
        self.expired = False
        return self.task.uncancel() == 0

    def end(self) -> None:
        """The call ended (in any way)."""
        self.busy = False
        if self.expired:
            # The handler swallowed our cancellation (returned or raised something else):
            # take the request back so later awaits of this task are not hit.
            self.expired = False
            self.task.uncancel()


class Deadlines:
    """The clocks of one worker's runners, and the one timer that enforces them.

    Every call of a worker gets the same timeout, so when no call runs the next deadline is
    at least one timeout away: the timer then fires after a timeout and looks again (an idle
    worker wakes once per timeout). Otherwise it fires at the earliest running deadline.
    """

    def __init__(self, timeout: float, loop: asyncio.AbstractEventLoop) -> None:
        self.timeout = timeout
        self._loop = loop
        self._clocks: set[Clock] = set()
        self._timer: asyncio.TimerHandle | None = None
        # The loop clock (read once per call).
        self.now = loop.time

    def clock(self, task: asyncio.Task[Any]) -> Clock:
        """A clock for a runner task's calls (``release`` it when the runner ends)."""
        clock = Clock(self, task)
        self._clocks.add(clock)
        if self._timer is None:
            self._timer = self._loop.call_at(self.now() + self.timeout, self._fire)
        return clock

    def release(self, clock: Clock) -> None:
        """The runner owning ``clock`` ended."""
        self._clocks.discard(clock)

    def close(self) -> None:
        """Stop the timer (the worker is stopping)."""
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None

    def _fire(self) -> None:
        self._timer = None
        now = self.now()
        # A call starting after now ends no earlier than now + timeout.
        due = now + self.timeout
        for clock in self._clocks:
            if not clock.busy or clock.expired:
                continue
            if clock.deadline <= now:
                clock.expired = True
                clock.task.cancel()
            elif clock.deadline < due:
                due = clock.deadline
        if self._clocks:
            self._timer = self._loop.call_at(due, self._fire)
