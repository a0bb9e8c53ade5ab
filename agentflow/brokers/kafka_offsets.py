"""Per-partition bookkeeping: which handed-out offsets are done, and what to commit.

Messages of one partition complete out of order (different keys run in parallel), but a
Kafka commit is a single number: everything below it counts as done. So the tracker commits
the lowest offset that is not done yet (or one past the last tracked offset when all are
done) and never moves past an unfinished one. It also keeps how often each offset was
handed out, seeded from the attempt record the previous owner left (see kafka_attempts).
"""

from __future__ import annotations

import bisect
from collections import deque

from agentflow.brokers.kafka_attempts import DONE, Run

__all__ = ["PartitionTracker"]


class _Slot:
    """One tracked offset."""

    __slots__ = ("attempts", "done", "offset")

    def __init__(self, offset: int, attempts: int) -> None:
        self.offset = offset
        self.attempts = attempts
        self.done = False


class PartitionTracker:
    """Offsets handed out from one partition during one assignment, in fetch order."""

    def __init__(self, committed: int | None = None, prior: list[Run] | None = None) -> None:
        # Offset the group had committed when this member got the partition (None: no commit).
        self.committed = committed
        self._window: deque[_Slot] = deque()
        self._slots: dict[int, _Slot] = {}
        self._next: int | None = None
        self._prior = list(prior or [])
        self._prior_starts = [r.start for r in self._prior]
        # Whether the previous owner left a record to look up (rarely: a crash or handover).
        self.has_prior = bool(self._prior_starts)
        self._in_flight = 0

    # -- what the previous owner left --------------------------------------------------------
    def prior_state(self, offset: int) -> int:
        """DONE if the attempt record says ``offset`` finished, else its earlier hand-outs."""
        if not self._prior_starts:  # no record left (the usual case): nothing to look up
            return 0
        i = bisect.bisect_right(self._prior_starts, offset) - 1
        if i >= 0 and self._prior[i].end >= offset:
            return self._prior[i].state
        return 0

    # -- tracking ----------------------------------------------------------------------------
    @property
    def next_offset(self) -> int | None:
        """One past the highest tracked offset (None before the first)."""
        return self._next

    @property
    def in_flight(self) -> int:
        """Tracked offsets that are not done."""
        return self._in_flight

    def is_new(self, offset: int) -> bool:
        """True if ``offset`` lies past everything tracked (records may be refetched)."""
        return self._next is None or offset >= self._next

    def track(self, offset: int, prior: int | None = None) -> int:
        """Start tracking ``offset`` as handed out once more; return its hand-out count.

        ``prior`` is its ``prior_state`` when the caller looked it up already.
        """
        if self._next is not None and offset < self._next:  # is_new, inlined: per message
            raise ValueError(f"offset {offset} is not past {self._next}")
        earlier = self.prior_state(offset) if prior is None else prior
        slot = _Slot(offset, earlier + 1 if earlier > 0 else 1)
        self._window.append(slot)
        self._slots[offset] = slot
        self._next = offset + 1
        self._in_flight += 1
        return slot.attempts

    def skip(self, offset: int) -> None:
        """Track ``offset`` as done without handing it out (filtered or already finished)."""
        self.track(offset)
        self._slots[offset].attempts -= 1
        self.done(offset)

    def handed_out_again(self, offset: int) -> int:
        """Count one more hand-out of a tracked offset (redelivery); return the new count."""
        slot = self._slots[offset]
        slot.attempts += 1
        return slot.attempts

    def attempts(self, offset: int) -> int:
        """How often a tracked offset was handed out."""
        return self._slots[offset].attempts

    def is_done(self, offset: int) -> bool:
        """True if ``offset`` is done (or was committed past)."""
        slot = self._slots.get(offset)
        if slot is None:
            return self._next is not None and offset < self._next
        return slot.done

    def done(self, offset: int) -> bool:
        """Mark ``offset`` done; False if it was not tracked or already done."""
        slot = self._slots.get(offset)
        if slot is None or slot.done:
            return False
        slot.done = True
        self._in_flight -= 1
        window = self._window
        # Done slots at the front are below the commit point now: forget them.
        while window and window[0].done:
            del self._slots[window.popleft().offset]
        return True

    def commit_offset(self) -> int | None:
        """The offset to commit: the first not-done one, else one past the last tracked."""
        if self._window:
            return self._window[0].offset
        return self._next

    def runs(self) -> list[Run]:
        """The attempt record above the commit point: tracked slots, then untouched prior runs."""
        out: list[Run] = []
        # Runs are built from plain numbers and made once each: this walks every slot in
        # flight, before every hand-out.
        start = end = run_state = 0
        for slot in self._window:
            state = DONE if slot.done else slot.attempts
            if state == 0:
                continue
            if state != run_state:
                if run_state:
                    out.append(Run(start, end, run_state))
                start, run_state = slot.offset, state
            end = slot.offset
        if run_state:
            out.append(Run(start, end, run_state))
        if self._next is not None:
            for run in self._prior:
                if run.end < self._next:
                    continue
                start = max(run.start, self._next)
                if out and out[-1].state == run.state and out[-1].end == start - 1:
                    out[-1] = Run(out[-1].start, run.end, run.state)
                else:
                    out.append(Run(start, run.end, run.state))
        else:
            out.extend(self._prior)
        return out
