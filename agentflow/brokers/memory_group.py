"""Consumer-group bookkeeping of the embedded broker: queues, leases, key locks, timers.

Everything here is synchronous and runs on the thread of whichever event loop is using the
broker; :mod:`agentflow.brokers.memory` wraps it in the async :class:`Subscription` API.
"""

from __future__ import annotations

import asyncio
import contextlib
import enum
import heapq
import itertools
import threading
import time
from collections import OrderedDict, deque
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from functools import lru_cache

from agentflow.brokers.base import BrokerError

# Groups remember whether a topic matches their pattern; bounded so that a flood of distinct
# topics cannot grow it without limit.
_MATCH_CACHE_MAX = 10_000
# Superseded timers are swept once at least this many (and half the heap) are dead.
_COMPACT_MIN = 1024


@lru_cache(maxsize=4096)
def _compile(pattern: str) -> tuple[tuple[str, ...], bool]:
    """Split a subscribe pattern into tokens; the flag says it ends with ``>``."""
    tokens = tuple(pattern.split("."))
    if not pattern or any(not t for t in tokens):
        raise BrokerError(f"invalid subject pattern {pattern!r}: empty token")
    for i, tok in enumerate(tokens):
        if tok == ">" and i != len(tokens) - 1:
            raise BrokerError(f"invalid subject pattern {pattern!r}: '>' must be the last token")
        if tok not in ("*", ">") and ("*" in tok or ">" in tok):
            raise BrokerError(f"invalid subject pattern {pattern!r}: wildcard inside a token")
    if tokens[-1] == ">":
        return tokens[:-1], True
    return tokens, False


def subject_matches(pattern: str, subject: str) -> bool:
    """Whether ``subject`` matches the NATS-style ``pattern`` (``*`` one token, ``>`` the rest)."""
    head, tail = _compile(pattern)
    parts = subject.split(".")
    if tail:
        # '>' needs at least one token after the fixed prefix.
        if len(parts) <= len(head):
            return False
    elif len(parts) != len(head):
        return False
    return all(p == "*" or p == s for p, s in zip(head, parts, strict=False))


def validate_topic(topic: str) -> None:
    """Raise BrokerError unless ``topic`` is a concrete subject (no wildcards, no empty token)."""
    if not topic or any(not t or t in ("*", ">") for t in topic.split(".")):
        raise BrokerError(f"invalid topic {topic!r}: expected dot-separated tokens, no wildcards")


@dataclass(slots=True, eq=False)
class Record:
    """One message in a topic log."""

    topic: str
    seq: int
    gseq: int  # broker-wide publish order, so DeliverAll across topics keeps publish order
    payload: bytes
    headers: dict[str, str]
    key: str | None
    timestamp_ms: int
    removed: bool = False


class State(enum.Enum):
    """Where an entry currently is inside its group."""

    READY = 1  # in the priority/ready queue (or held behind its key)
    INFLIGHT = 2  # handed to a subscriber, waiting for ack
    DELAYED = 3  # nak'ed with a delay, waiting in the timer heap
    DONE = 4  # acked, termed, exhausted or removed


@dataclass(slots=True, eq=False)
class Entry:
    """The per-group delivery state of one record."""

    record: Record
    state: State = State.READY
    deliveries: int = 0
    token: int = 0  # bumped on every hand-out, so stale timers and deliveries are recognised
    deadline: float = 0.0  # due time of the entry's live timer (ack deadline or nak delay)
    max_deliver: int = 0
    holder: Member | None = None
    timed: bool = False  # whether one of the group's timers is live for this entry


@dataclass(slots=True, eq=False)
class Member:
    """One subscriber of a group; owns the entries it has in flight."""

    ack_wait: float
    max_in_flight: int
    max_deliver: int
    inflight: set[Entry] = field(default_factory=set)
    closed: bool = False

    def capacity(self, wanted: int) -> int:
        """How many more deliveries this member may take now."""
        if self.max_in_flight <= 0:
            return wanted
        return max(0, min(wanted, self.max_in_flight - len(self.inflight)))


class Group:
    """A durable consumer: a (group name, pattern) pair with DeliverAll start.

    Every public method takes ``lock`` (shared by the broker state), so publishers and
    consumers on different threads/event loops see consistent queues.
    """

    def __init__(
        self, name: str, pattern: str, backlog: Iterable[Record], lock: threading.RLock
    ) -> None:
        _compile(pattern)  # reject bad patterns before the group is registered
        self.name = name
        self.pattern = pattern
        self._lock = lock
        self._matches: dict[str, bool] = {}
        self._ready: deque[Entry] = deque(Entry(r) for r in backlog)
        # Redeliveries and entries released by a key lock go before fresh messages.
        self._priority: deque[Entry] = deque()
        self._held: dict[str, deque[Entry]] = {}
        self._locks: dict[str, Entry] = {}
        # (due, tiebreak, token, entry); superseded items stay until popped or compacted.
        self._timers: list[tuple[float, int, int, Entry]] = []
        self._dead = 0  # superseded timers still in the heap
        self._tick = itertools.count()
        self._waiters: set[asyncio.Future[None]] = set()

    # -- matching and intake ---------------------------------------------------------------

    def matches(self, topic: str) -> bool:
        """Whether this group's pattern covers ``topic`` (cached per topic)."""
        hit = self._matches.get(topic)
        if hit is None:
            if len(self._matches) >= _MATCH_CACHE_MAX:
                self._matches.clear()
            hit = self._matches[topic] = subject_matches(self.pattern, topic)
        return hit

    def offer(self, record: Record) -> None:
        """Queue a freshly published record for this group."""
        with self._lock:
            ready = self._ready
            # Retention drops the oldest records; shed them so an idle group stays small.
            while ready and ready[0].record.removed:
                ready.popleft()
            ready.append(Entry(record))
            self._notify()

    # -- handing out -----------------------------------------------------------------------

    def poll(self, member: Member, wanted: int) -> tuple[list[Entry], asyncio.Future[None] | None]:
        """Hand out up to ``wanted`` entries, or register a waiter (atomically) when none."""
        with self._lock:
            entries = self._take(member, wanted)
            if entries or member.closed:
                return entries, None
            # Registered under the lock, so a publish from another thread cannot slip between
            # the empty take and the wait.
            fut: asyncio.Future[None] = asyncio.get_running_loop().create_future()
            self._waiters.add(fut)
            return entries, fut

    def drop_waiter(self, fut: asyncio.Future[None]) -> None:
        """Forget a waiter returned by :meth:`poll`."""
        with self._lock:
            self._waiters.discard(fut)

    def next_due(self) -> float | None:
        """Monotonic time of the earliest pending timer, if any."""
        with self._lock:
            return self._timers[0][0] if self._timers else None

    def _take(self, member: Member, wanted: int) -> list[Entry]:
        now = time.monotonic()
        self._fire_timers(now)
        room = 0 if member.closed else member.capacity(wanted)
        out: list[Entry] = []
        while room > 0:
            entry = self._next_deliverable()
            if entry is None:
                break
            entry.state = State.INFLIGHT
            entry.deliveries += 1
            entry.token += 1
            entry.holder = member
            entry.max_deliver = member.max_deliver
            member.inflight.add(entry)
            if member.ack_wait > 0:
                self._schedule(entry, now + member.ack_wait)
            out.append(entry)
            room -= 1
        return out

    def _next_deliverable(self) -> Entry | None:
        """Pop the next entry that is live and not blocked by its key."""
        for queue in (self._priority, self._ready):
            while queue:
                entry = queue.popleft()
                if entry.state is not State.READY:
                    continue  # acked late while queued
                if entry.record.removed:
                    self._finish(entry)
                    continue
                key = entry.record.key
                if key is not None:
                    owner = self._locks.get(key)
                    if owner is None:
                        self._locks[key] = entry
                    elif owner is not entry:
                        # An earlier message of this key is still unresolved: hold this one.
                        self._held.setdefault(key, deque()).append(entry)
                        continue
                return entry
        return None

    # -- outcomes --------------------------------------------------------------------------

    def ack(self, entry: Entry) -> None:
        """Finish ``entry`` (ack or term); accepted from any delivery of an unfinished entry."""
        with self._lock:
            if entry.state is not State.DONE:
                self._finish(entry)
                self._notify()

    def nak(self, entry: Entry, token: int, delay: float) -> None:
        """Redeliver after ``delay``; ignored unless ``token`` is the current delivery."""
        with self._lock:
            if entry.token == token and entry.state is State.INFLIGHT:
                self._requeue(entry, delay)
                self._notify()

    def extend(self, entry: Entry, token: int) -> None:
        """Push the ack deadline of the current delivery ``token`` out by its ack_wait."""
        with self._lock:
            holder = entry.holder
            if entry.token == token and entry.state is State.INFLIGHT and holder is not None:
                if holder.ack_wait > 0:
                    self._schedule(entry, time.monotonic() + holder.ack_wait)

    def hand_back(self, member: Member) -> None:
        """Return every entry ``member`` holds for immediate redelivery."""
        with self._lock:
            member.closed = True
            for entry in sorted(member.inflight, key=lambda e: e.record.gseq):
                self._requeue(entry, 0.0)
            member.inflight.clear()
            self._notify()

    def _requeue(self, entry: Entry, delay: float) -> None:
        """Put an unacked entry back, or end it once it used up max_deliver."""
        self._release_holder(entry)
        self._kill_timer(entry)
        if 0 < entry.max_deliver <= entry.deliveries:
            self._finish(entry)
            return
        # The entry keeps its key lock while it waits, so later messages of the key stay behind.
        if delay > 0:
            entry.state = State.DELAYED
            self._schedule(entry, time.monotonic() + delay)
        else:
            entry.state = State.READY
            self._priority.append(entry)

    def _finish(self, entry: Entry) -> None:
        """Mark ``entry`` done and pass its key lock to the next held message of the key."""
        self._release_holder(entry)
        self._kill_timer(entry)
        entry.state = State.DONE
        key = entry.record.key
        if key is None or self._locks.get(key) is not entry:
            return
        del self._locks[key]
        held = self._held.get(key)
        while held:
            nxt = held.popleft()
            if nxt.state is State.READY and not nxt.record.removed:
                self._locks[key] = nxt
                self._priority.append(nxt)
                break
        if not held:
            self._held.pop(key, None)

    @staticmethod
    def _release_holder(entry: Entry) -> None:
        if entry.holder is not None:
            entry.holder.inflight.discard(entry)
            entry.holder = None

    # -- timers ----------------------------------------------------------------------------

    def _schedule(self, entry: Entry, due: float) -> None:
        """Make ``due`` the entry's one live timer (ack deadline or end of a nak delay)."""
        self._kill_timer(entry)
        entry.deadline = due
        entry.timed = True
        timers = self._timers
        earlier = not timers or due < timers[0][0]
        heapq.heappush(timers, (due, next(self._tick), entry.token, entry))
        if earlier:
            # Sleeping fetches computed their wake-up from the old earliest timer.
            self._notify()

    def _kill_timer(self, entry: Entry) -> None:
        """Mark the entry's live timer superseded; sweep the heap once mostly dead."""
        if not entry.timed:
            return
        entry.timed = False
        self._dead += 1
        # Amortised O(1): a sweep costs O(n) and happens only after n/2 timers died.
        if self._dead >= _COMPACT_MIN and 2 * self._dead >= len(self._timers):
            self._timers = [t for t in self._timers if self._live(t)]
            heapq.heapify(self._timers)
            self._dead = 0

    @staticmethod
    def _live(item: tuple[float, int, int, Entry]) -> bool:
        due, _, token, entry = item
        return (
            entry.timed
            and entry.token == token
            and entry.deadline == due
            and entry.state in (State.INFLIGHT, State.DELAYED)
        )

    def _fire_timers(self, now: float) -> None:
        """Apply every timer that is due: ack-deadline expiries and nak delays."""
        timers = self._timers
        while timers and timers[0][0] <= now:
            item = heapq.heappop(timers)
            entry = item[3]
            if not self._live(item):
                self._dead = max(0, self._dead - 1)
                continue
            entry.timed = False
            if entry.state is State.DELAYED:
                entry.state = State.READY
                self._priority.append(entry)
            else:
                self._requeue(entry, 0.0)

    # -- waking ----------------------------------------------------------------------------

    def _notify(self) -> None:
        """Wake every waiting fetch so it re-checks the queues."""
        if not self._waiters:
            return  # the common case under load: nobody is waiting
        waiters, self._waiters = self._waiters, set()
        try:
            current: asyncio.AbstractEventLoop | None = asyncio.get_running_loop()
        except RuntimeError:
            current = None
        for fut in waiters:
            if fut.done():
                continue
            loop = fut.get_loop()
            if loop is current:
                fut.set_result(None)
            else:
                # A waiter of another loop (another thread): wake it on its own loop.
                with contextlib.suppress(RuntimeError):  # that loop is closed: nobody waits
                    loop.call_soon_threadsafe(_wake, fut)


def _wake(fut: asyncio.Future[None]) -> None:
    if not fut.done():
        fut.set_result(None)


class DedupWindow:
    """Ids accepted within the last ``window`` seconds, capped at ``max_size`` entries."""

    def __init__(self, window: float, max_size: int, clock: Callable[[], float]) -> None:
        self.window = window
        self.max_size = max_size
        self._clock = clock
        self._seen: OrderedDict[str, float] = OrderedDict()

    def accept(self, dedup_id: str) -> bool:
        """Record ``dedup_id``; False when it was already seen inside the window."""
        now = self._clock()
        seen = self._seen
        # The window is constant, so insertion order is expiry order: trim from the front.
        while seen:
            if next(iter(seen.values())) > now and len(seen) < self.max_size:
                break
            seen.popitem(last=False)
        known = seen.get(dedup_id)
        if known is not None and known > now:
            return False
        seen[dedup_id] = now + self.window
        return True
