"""The native PartitionTracker against the Python implementation it replaced (kept here as the
reference), driven by random operation sequences; plus the edges of the native boundary."""

from __future__ import annotations

import bisect
from collections import deque
from collections.abc import Callable
from types import SimpleNamespace
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from agentflow._native import PartitionTracker as NativeTracker
from agentflow.brokers.kafka_attempts import DONE, Run, decode, encode
from agentflow.brokers.kafka_offsets import PartitionTracker


# --- the reference: the Python tracker as it was before it went native --------------------------
class _Slot:
    __slots__ = ("attempts", "done", "offset")

    def __init__(self, offset: int, attempts: int) -> None:
        self.offset = offset
        self.attempts = attempts
        self.done = False


class RefTracker:
    """Offsets handed out from one partition during one assignment, in fetch order."""

    def __init__(self, committed: int | None = None, prior: list[Run] | None = None) -> None:
        self.committed = committed
        self._window: deque[_Slot] = deque()
        self._slots: dict[int, _Slot] = {}
        self._next: int | None = None
        self._prior = list(prior or [])
        self._prior_starts = [r.start for r in self._prior]
        self.has_prior = bool(self._prior_starts)
        self._in_flight = 0

    def prior_state(self, offset: int) -> int:
        """DONE if the attempt record says ``offset`` finished, else its earlier hand-outs."""
        if not self._prior_starts:
            return 0
        i = bisect.bisect_right(self._prior_starts, offset) - 1
        if i >= 0 and self._prior[i].end >= offset:
            return self._prior[i].state
        return 0

    @property
    def next_offset(self) -> int | None:
        """One past the highest tracked offset (None before the first)."""
        return self._next

    @property
    def in_flight(self) -> int:
        """Tracked offsets that are not done."""
        return self._in_flight

    def is_new(self, offset: int) -> bool:
        """True if ``offset`` lies past everything tracked."""
        return self._next is None or offset >= self._next

    def track(self, offset: int, prior: int | None = None) -> int:
        """Start tracking ``offset`` as handed out once more; return its hand-out count."""
        if self._next is not None and offset < self._next:
            raise ValueError(f"offset {offset} is not past {self._next}")
        earlier = self.prior_state(offset) if prior is None else prior
        slot = _Slot(offset, earlier + 1 if earlier > 0 else 1)
        self._window.append(slot)
        self._slots[offset] = slot
        self._next = offset + 1
        self._in_flight += 1
        return slot.attempts

    def skip(self, offset: int) -> None:
        """Track ``offset`` as done without handing it out."""
        self.track(offset)
        self._slots[offset].attempts -= 1
        self.done(offset)

    def handed_out_again(self, offset: int) -> int:
        """Count one more hand-out of a tracked offset; return the new count."""
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
        while window and window[0].done:
            del self._slots[window.popleft().offset]
        return True

    def commit_offset(self) -> int | None:
        """The first not-done offset, else one past the last tracked."""
        if self._window:
            return self._window[0].offset
        return self._next

    def runs(self) -> list[Run]:
        """Tracked slots above the commit point, then untouched prior runs."""
        out: list[Run] = []
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


# --- random operation sequences -----------------------------------------------------------------
Tracker = NativeTracker | RefTracker
Op = tuple[str, int, int]

# A "batch" tracks up to 16 offsets in a row, as one fetch does; "done" and the lookups mostly
# pick an offset in the window, so offsets finish in random order.
OPS = ["batch", "track", "track", "skip", "done", "done", "done", "done", "again", "attempts"]
OPS += ["is_done", "is_new", "prior_state", "track_at"]
ops_strategy = st.lists(
    st.tuples(st.sampled_from(OPS), st.integers(0, 1_000), st.integers(-1, 4)), max_size=80
)
# (gap before the run, its length - 1, its state)
prior_strategy = st.lists(
    st.tuples(st.integers(0, 3), st.integers(0, 4), st.sampled_from([DONE, 1, 2, 3])), max_size=8
)


def outcome(call: Callable[[], Any]) -> tuple[str, Any]:
    """What a call returned, or which error it raised with which arguments."""
    try:
        return ("ok", call())
    except (KeyError, ValueError) as exc:
        return (type(exc).__name__, exc.args)


def observe(t: Tracker) -> tuple[Any, ...]:
    """Everything a caller can read without changing the tracker."""
    return (t.commit_offset(), t.runs(), t.in_flight, t.next_offset, t.has_prior, t.committed)


def apply(t: Tracker, op: Op, offset: int) -> tuple[str, Any]:
    """Run one operation on ``offset``; ``arg`` is the ``prior`` of a track (-1..4)."""
    kind, _, arg = op
    if kind == "track":  # past everything: with no prior, the one looked up, or a given one
        prior = None if arg == 0 else t.prior_state(offset) if arg == 4 else arg
        return outcome(lambda: t.track(offset, prior))
    calls: dict[str, Callable[[], Any]] = {
        "track_at": lambda: t.track(offset),  # anywhere: mostly not past next, a ValueError
        "skip": lambda: t.skip(offset),
        "done": lambda: t.done(offset),
        "again": lambda: t.handed_out_again(offset),
        "attempts": lambda: t.attempts(offset),
        "is_done": lambda: t.is_done(offset),
        "is_new": lambda: t.is_new(offset),
        "prior_state": lambda: t.prior_state(offset),
    }
    return outcome(calls[kind])


def prior_runs(base: int, spec: list[tuple[int, int, int]]) -> list[Run]:
    """Sorted, non-overlapping runs from ``base`` on (what decode returns)."""
    runs: list[Run] = []
    at = base
    for gap, length, state in spec:
        start = at + gap
        runs.append(Run(start, start + length, state))
        at = start + length + 1
    return runs


@settings(max_examples=400, deadline=None)
@given(
    base=st.sampled_from([0, 7, 2**40]),
    committed=st.booleans(),
    spec=prior_strategy,
    first_gap=st.integers(0, 6),
    ops=ops_strategy,
)
def test_native_tracker_matches_the_python_reference(
    base: int, committed: bool, spec: list[tuple[int, int, int]], first_gap: int, ops: list[Op]
) -> None:
    prior = prior_runs(base, spec)
    ref = RefTracker(base if committed else None, prior)
    native = NativeTracker(base if committed else None, prior)
    assert observe(native) == observe(ref)
    tracked: list[int] = []

    def step(op: Op) -> None:
        kind, pick, _ = op
        nxt = ref.next_offset
        window = [slot.offset for slot in ref._window]
        if kind in ("track", "skip"):  # past next, now and then leaving a gap of 1..3
            gap = 0 if pick % 4 else pick % 3 + 1
            offset = (base + first_gap if nxt is None else nxt) + gap
        elif window and pick % 4:
            offset = window[pick % len(window)]
        else:  # anything tracked, the neighbours (gaps, next, below) and prior run edges
            near = {o + d for o in tracked for d in (-1, 0, 1)} | {base - 1, base}
            near |= {o for r in prior for o in (r.start - 1, r.start, r.end, r.end + 1)}
            candidates = sorted(near)
            offset = candidates[pick % len(candidates)]
        expected = apply(ref, op, offset)
        assert apply(native, op, offset) == expected, (op, offset)
        if expected[0] == "ok" and kind in ("track", "track_at", "skip"):
            tracked.append(offset)
        assert observe(native) == observe(ref), (op, offset)

    for kind, pick, arg in ops:
        if kind == "batch":
            for i in range(pick % 16 + 1):
                step(("track", pick + i, arg))
        else:
            step((kind, pick, arg))
    assert all(type(r) is Run for r in native.runs())
    commit = native.commit_offset()
    if commit is not None:
        assert encode(commit, native.runs()) == encode(commit, ref.runs())


# --- the native boundary ------------------------------------------------------------------------
def test_the_module_exports_the_native_class() -> None:
    assert PartitionTracker is NativeTracker
    t = PartitionTracker()
    assert (t.committed, t.has_prior, t.next_offset, t.in_flight) == (None, False, None, 0)
    assert t.commit_offset() is None and t.runs() == [] and t.is_new(0) and not t.is_done(0)
    t.committed = 5  # a plain attribute, as before
    assert t.committed == 5


def test_errors_match_the_python_ones() -> None:
    t = PartitionTracker()
    t.track(3)
    with pytest.raises(ValueError, match=r"^offset 2 is not past 4$"):
        t.track(2)
    with pytest.raises(ValueError, match=r"^offset 3 is not past 4$"):
        t.skip(3)
    with pytest.raises(KeyError) as err:
        t.attempts(2)
    assert err.value.args == (2,)
    with pytest.raises(KeyError):
        t.handed_out_again(4)
    assert t.done(3)
    with pytest.raises(KeyError):  # done at the front: forgotten
        t.attempts(3)


def test_prior_is_read_by_attribute_from_any_iterable() -> None:
    prior = [
        SimpleNamespace(start=10, end=12, state=2),
        SimpleNamespace(start=13, end=13, state=-1),
    ]
    t = PartitionTracker(10, iter(prior))  # type: ignore[arg-type]
    assert t.has_prior and t.prior_state(11) == 2 and t.prior_state(13) == DONE
    assert t.runs() == [Run(10, 12, 2), Run(13, 13, DONE)]
    with pytest.raises(AttributeError):
        PartitionTracker(0, [SimpleNamespace(start=1, end=2)])  # type: ignore[list-item]


def test_records_beyond_int64_are_garbled() -> None:
    big = 2**63
    assert decode(f"af1 0-{big}:1", 0) == []
    assert decode(f"af1 0:{big}", 0) == []
    assert decode(f"af1 0-{big - 1}:{big - 1}", 0) == [Run(0, big - 1, big - 1)]
    t = PartitionTracker(0, decode(f"af1 0-{big - 2}:{big - 1}", 0))
    assert t.track(0) == big - 1, "the count saturates instead of overflowing"
    with pytest.raises(OverflowError):
        t.track(big)
